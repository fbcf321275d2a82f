# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Meta Variance Transfer (MVT-style): augmenting a class with variations borrowed from others
#
# *Seong-Jin Park, Seungju Han, Ji-Won Baek, Insoo Kim, Juhwan Song, Haebeom Lee, Jae-Joon Han,
# Sung Ju Hwang. Meta Variance Transfer: Learning to Augment from the Others. ICML 2020.*
#
# **Read this first.** No official code and no full text of this paper are public. What we could
# verify is the abstract and the abstract of a related patent. Everything in this notebook beyond
# those two abstracts is **our reconstruction**, so we call it **"MVT-style"** throughout and
# quote no numbers from the paper.
#
# **Learning goals.** After this notebook you can
# 1. explain why a one-shot class region is too small, and how deviations of *other* classes
#    (donors) can be re-applied to it as **virtual samples in feature space**;
# 2. write the three transfer variants (naive, gated, statistics matching) and the two losses;
# 3. prove the central caveat — zero-mean virtual samples do not move a mean prototype — and say
#    where a gain must come from instead (training on virtual pseudo-queries, or a head that uses spread);
# 4. show why our reconstructed L_V trains the gate to close, and use an objective that cannot close it;
# 5. read a paired, multi-seed comparison and a regime map honestly, including a null result.
#
# **Prerequisites.** Notebook 00 (ProtoNet, episodes); a Gaussian's covariance and the Mahalanobis distance.
#
# **Time.** Reading ≈ 40 min. Compute: ≈ 2 min on one CPU core (one live training of ProtoNet and
# of MVT-style at a small budget; the multi-seed numbers and the regime map are precomputed by our own
# script; `TUTOR_FULL=1` trains longer).

# %%
import inspect
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import tutor
from tutor import checks, widgets
from tutor.data import load_glyphs
from tutor.experiments import load_results, mvt_world
from tutor.experiments import mvt as mvt_exp
from tutor.experiments.regime import summarise_regime
from tutor.meta import ProtoNet, prototype_logits
from tutor.papers.mvt import (
    MVT,
    ToyConfig,
    WorldConfig,
    augmented_prototype_logits,
    donor_deviations,
    gate,
    gated_transfer,
    mahalanobis_logits,
    prototype_logits_means,
    query_matching_loss,
    shared_nuisance,
    stats_transfer,
    toy_accuracies,
    train_world_transfer,
    transfer_init,
    transferred_covariance,
    virtual_logit_terms,
    virtual_loss,
    virtual_loss_at_gate,
    virtual_samples,
    world_accuracy,
    world_basis,
    world_episodes,
    world_transfer,
)
from tutor.train import compare, load_checkpoint, mean_ci
from tutor.viz import regime_plot

FULL = os.environ.get("TUTOR_FULL", "0") == "1"
tutor.configure_threads()
tutor.runtime.return_freed_memory()      # freed large tensors go back to the OS: the kernel stays small
tutor.seed_everything(0)
D = torch.float64
ROOT = Path(tutor.__file__).resolve().parents[1]

# %% [markdown]
# ## 1. The idea
#
# With one shot per class, a learner never sees how a class looks under the nuisances its test
# queries will show (rotation, shear, stroke width, pose, lighting). Its estimate of the class
# region in feature space is a point. But many nuisances are **shared across classes**: a letter
# rotates the same way whatever letter it is. MVT meta-learns a module that takes how a sample of
# some *other* class (a **donor**) deviates from its own class centre, and re-applies that deviation
# to the target class. The results are **virtual samples**; during episodic meta-training they act
# as proxies for the differently-varied queries that will later arrive for the target class.
#
# ### What is verified, and what is ours
# * **Verified (abstract):** the model is meta-trained to move factors of variation from one class
#   to another; the moved variations give virtual feature-space samples that enlarge the target
#   class's region *at training time*; they play the role of future queries that vary the same way;
#   experiments on few-shot benchmarks and face recognition; the base model improves.
# * **Verified (patent abstract):** a generator computes an extra feature for a target class from
#   the mean and variation vectors of the donor class's and the target class's training features;
#   the target's class vector is trained on real and generated features together.
# * **Ours:** the exact form of the transfer network (gate or statistics matching), the losses, the
#   prototype options P/Q, ProtoNet as the base, the covariance-aware heads, every experiment here.
#
# ## 2. The equations next to the code (`tutor/papers/mvt.py`)
#
# Encoder f_θ, h = f_θ(x). Target class c: K support embeddings with mean μ_c. Donor class d
# (a **base** class, disjoint from the targets — also at meta-test: novel classes never supply
# variation), M_d samples with mean μ_d and std σ_d.
#
# $$v_{d,j} = h_{d,j} - \mu_d, \qquad z_{d,j} = v_{d,j} \oslash \sigma_d \qquad\text{(donor deviations)}$$
#
# Three nested transfer variants T_φ, and the virtual samples:
#
# $$\text{(a) naive: } \tilde v = v, \qquad \text{(b) gated: } \tilde v = \mathrm{sigmoid}(\mathrm{MLP}_\varphi[\mu_c; v]) \odot v, \qquad \text{(c) statistics: } \tilde v = \mathrm{softplus}(\mathrm{MLP}_\varphi[\mu_c; \sigma_d]) \odot z$$
# $$\hat h_{c,m} = \mu_c + \tilde v_{c,m}$$
#
# The gate in (b) is *meant* to learn which coordinates of a donor deviation are nuisance (pass) and
# which carry the donor's identity (block). On glyphs, trained with our reconstructed losses, it learned
# neither: the seed-0 gate we kept closed and blocks everything (§8b works out why; in the regime-map
# world it barely moved from its start, see "What failed").

# %%
print(inspect.getsource(donor_deviations))
print(inspect.getsource(gated_transfer))
print(inspect.getsource(stats_transfer))

# %% [markdown]
# **Losses** (ProtoNet base, δ(a, b) = ‖a − b‖²). Option Q (our default) keeps the prototypes at
# p_c = μ_c and uses the virtual samples only as pseudo-queries in L_V; option P averages them in:
# p_c = (K μ_c + Σ_m ĥ_{c,m}) / (K + M).
#
# $$L_Q = -\frac1{|Q|}\sum_{(x,y)\in Q}\log\operatorname{softmax}_c\bigl(-\delta(f_\theta(x), p_c)\bigr)_y, \qquad
#   L_V = -\frac1{NM}\sum_{c,m}\log\operatorname{softmax}_{c'}\bigl(-\delta(\hat h_{c,m}, \mu_{c'})\bigr)_c$$
# $$L = L_Q + \lambda_V L_V, \qquad \theta,\varphi \text{ trained jointly through the episode.}$$
#
# L_V is meant to keep a virtual sample inside its own class, so that the module does not transfer
# the donor's identity; and since ĥ depends on θ through μ_c and v, L_V also trains the embedding on
# virtual pseudo-queries. It has a flaw (§8b): transferring *nothing* scores best on average, so it
# rewards closing the gate. `MVT.task_loss` calls the core's `prototype_logits` (no copied ProtoNet):

# %%
print(inspect.getsource(virtual_loss))
print(inspect.getsource(MVT.task_loss))

# %% [markdown]
# ## 3. The caveat: zero-mean virtual samples do not move a mean prototype
#
# Under option P the prototype is p_c = (K μ_c + Σ_m (μ_c + ṽ_m)) / (K + M) = μ_c + (Σ_m ṽ_m)/(K + M).
# Donor deviations have zero mean per donor, so if the M virtual samples use all of a donor's
# deviations, **p_c = μ_c exactly**; with randomly drawn deviations it equals μ_c plus sampling noise.
# A Euclidean nearest-prototype classifier therefore cannot gain from test-time augmentation. Below:
# the identity, checked exactly in float64 with the core's `prototype_logits`.

# %%
g = torch.Generator().manual_seed(0)
h_donor = torch.randn(1, 8, 4, generator=g, dtype=D) * 3 + 2      # one donor, 8 samples, d = 4
v, _, _ = donor_deviations(h_donor)                               # (1, 8, 4), zero mean
support = torch.randn(3, 4, generator=g, dtype=D)                 # 3 classes, 1 shot each
query = torch.randn(10, 4, generator=g, dtype=D)
y_s = torch.arange(3)
virt = virtual_samples(support, v.expand(3, 8, 4))                # every class gets all 8 deviations
plain = augmented_prototype_logits(support, y_s, query, 3, virt[:, :0])     # M = 0: ProtoNet
augmented = augmented_prototype_logits(support, y_s, query, 3, virt)
print("max |logit change| from augmenting with a full zero-mean set:", (augmented - plain).abs().max().item())
assert torch.allclose(augmented, plain, atol=1e-10)

# %% [markdown]
# ## 4. The 2-D shared-covariance toy
#
# Five target classes with means ~ N(0, 2.5² I); **all classes share one covariance** (axis stds
# 3.0 and 0.4, rotated by 0.6 rad); one shot each; 50 queries per class; 10 donor classes × 20
# samples; 20 virtual samples per target from naive transfer. Four classifiers on the **same seeded
# episodes**: the Euclidean prototype; the prototype averaged with the virtual samples (option P);
# a shared-covariance (Mahalanobis) classifier whose covariance is estimated **from the transferred
# deviations** only; and the oracle with the true covariance.

# %%
TOY_EPISODES = 2000 if FULL else 1000
toy = toy_accuracies(ToyConfig(), episodes=TOY_EPISODES, seed=0)
names = {"euclidean": "Euclidean prototype", "augmented": "prototype + virtual samples (P)",
         "mahalanobis": "Mahalanobis from transferred variation", "oracle": "oracle covariance"}
for k, label in names.items():
    m, ci = mean_ci(toy[k])
    print(f"{label:40s} {100 * m:5.1f} ± {100 * ci:.1f}%")
gap_m, gap_ci = mean_ci(toy["mahalanobis"] - toy["euclidean"])
aug_m, aug_ci = mean_ci(toy["augmented"] - toy["euclidean"])
orc_m, orc_ci = mean_ci(toy["oracle"] - toy["mahalanobis"])
print(f"paired: Mahalanobis - Euclidean {100 * gap_m:+.1f} ± {100 * gap_ci:.1f}; augmented - Euclidean "
      f"{100 * aug_m:+.1f} ± {100 * aug_ci:.1f}; oracle - Mahalanobis {100 * orc_m:+.1f} ± {100 * orc_ci:.1f} points")

# %% [markdown]
# The ordering is the mechanism: transferred variation estimates the *shape* of the class region
# (oracle ≈ Mahalanobis-from-transfer ≫ Euclidean), while averaging the virtual samples into the
# prototype does not help (it only adds noise to the mean). These asserts check the ordering on the
# numbers just computed, with their paired intervals.

# %%
assert gap_m - gap_ci > 0.10                       # transferred spread helps, by a wide margin
assert abs(100 * gap_m - 23) < 2                   # "by about 23 points" (summary)
assert aug_m + aug_ci < 0.01                       # averaging into the mean prototype does not help
assert abs(orc_m) < 0.005                          # within half a point of the oracle (it is ahead by ~0.1)
no_transfer = toy_accuracies(ToyConfig(), episodes=200, seed=0, transfer="none")
assert torch.equal(no_transfer["mahalanobis"], no_transfer["euclidean"])   # no transfer: nothing to use

# %% [markdown]
# **When the premise fails.** If every class has its *own* random covariance, a donor's deviations
# describe the wrong shape. Then the gain disappears: Mahalanobis-from-transfer scores about as well as
# Euclidean (slightly below it, the paired difference below), while the oracle (which knows each
# class's own covariance) still beats Euclidean:

# %%
own = toy_accuracies(ToyConfig(per_class_cov=True), episodes=TOY_EPISODES, seed=0)
for k in ("euclidean", "mahalanobis", "oracle"):
    m, ci = mean_ci(own[k])
    print(f"per-class covariances: {names[k]:40s} {100 * m:5.1f} ± {100 * ci:.1f}%")
own_gap = mean_ci(own["mahalanobis"] - own["euclidean"])
print(f"Mahalanobis - Euclidean {100 * own_gap[0]:+.1f} ± {100 * own_gap[1]:.1f} points")
assert own_gap[0] + own_gap[1] < 0.005             # the gain is gone: at most +0.5 points, against ~23 above
own_orc = mean_ci(own["oracle"] - own["euclidean"])
assert own_orc[0] - own_orc[1] > 0                 # the oracle still beats Euclidean


# %% [markdown]
# ## 5. Widget, panel A: the 2-D variance-transfer playground
#
# Left: one donor class, its mean and its deviation arrows. Right: the same arrows **re-rooted at a
# target's support point** give the virtual samples (hollow markers); the coloured regions are the
# decisions of the chosen classifier (Euclidean, or Mahalanobis from the transferred variation when
# "covariance-aware" is on); crosses mark option-P prototypes (they barely move). The title reports
# the episode's accuracy for every classifier, and their means over 200 episodes of the same setting.

# %%
def draw_playground(angle=0.6, anisotropy=7.5, donors=10, shots=1, virtual=20, transfer="naive",
                    covariance_aware=True, per_class_cov=False, seed=0):
    cfg = ToyConfig(shots=shots, donors=donors, virtual=virtual, stds=(3.0, 3.0 / anisotropy), angle=angle,
                    per_class_cov=per_class_cov)
    many = toy_accuracies(cfg, episodes=200, seed=seed, transfer=transfer)
    r = toy_accuracies(cfg, episodes=1, seed=seed, transfer=transfer,
                       data={k: t[:1] for k, t in many["data"].items()})
    data, mu, virt, cov = r["data"], r["mu"][0], r["virtual"][0], r["cov"][0]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.8))
    dpts = data["donor"][0, 0]
    dmu = dpts.mean(0)
    ax0.scatter(dpts[:, 0], dpts[:, 1], s=18, c="grey", label="donor samples")
    ax0.scatter(*dmu, marker="*", s=200, c="k", label="donor mean")
    for p in dpts[:8]:
        ax0.annotate("", p.tolist(), dmu.tolist(), arrowprops={"arrowstyle": "->", "color": "tab:purple"})
    ax0.set_title("donor class: deviations v = h - mu_d")
    ax0.axis("equal")
    ax0.legend(fontsize=8, loc="upper left")
    prec = torch.linalg.inv(cov) if covariance_aware else torch.eye(2, dtype=D)
    pts = torch.cat([data["query"][0].flatten(0, 1), mu])
    lo, hi = pts.min(0).values - 1, pts.max(0).values + 1
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], 100, dtype=D), torch.linspace(lo[1], hi[1], 100, dtype=D),
                            indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    diff = grid[:, None] - mu[None]
    labels = torch.einsum("gni,ij,gnj->gn", diff, prec, diff).argmin(1).view(gx.shape)
    cmap = plt.get_cmap("tab10")
    ax1.imshow(labels.numpy(), origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap=cmap, vmin=-0.5, vmax=9.5,
               alpha=0.2, aspect="auto", interpolation="nearest")
    colours = np.array([cmap(c) for c in range(cfg.ways)])
    q = data["query"][0]
    ax1.scatter(q[..., 0].flatten(), q[..., 1].flatten(), s=6, c=colours.repeat(q.shape[1], 0), alpha=0.5)
    sp = data["support"][0]
    ax1.scatter(sp[..., 0].flatten(), sp[..., 1].flatten(), s=70, c=colours.repeat(sp.shape[1], 0), edgecolor="k",
                zorder=3)
    if virtual:
        ax1.scatter(virt[..., 0].flatten(), virt[..., 1].flatten(), s=25, facecolors="none",
                    edgecolors=colours.repeat(virtual, 0))
    pa = r["prototype_augmented"][0]
    ax1.scatter(pa[:, 0], pa[:, 1], marker="x", s=80, color="k", zorder=4)
    if virtual:
        for m in range(min(virtual, 8)):
            ax1.annotate("", virt[0, m].tolist(), mu[0].tolist(),
                         arrowprops={"arrowstyle": "->", "color": "tab:purple", "lw": 0.8})
    ax1.set_xlim(lo[0], hi[0])
    ax1.set_ylim(lo[1], hi[1])
    acc = {k: (100 * r[k][0].item(), 100 * many[k].mean().item()) for k in names}
    ax1.set_title(("Mahalanobis from transfer" if covariance_aware else "Euclidean") + " decisions\n"
                  + " | ".join(f"{k[:5]} {a:.0f}% ({b:.0f}%)" for k, (a, b) in acc.items()), fontsize=9)
    fig.suptitle("episode accuracy (mean over 200 episodes)", fontsize=9)
    fig.tight_layout()
    return fig


widgets.interactive(draw_playground, angle=widgets.slider(0.6, 0.0, 3.1), anisotropy=widgets.slider(7.5, 1.0, 15.0),
                    donors=widgets.slider(10, 1, 20), shots=widgets.slider(1, 1, 5), virtual=widgets.slider(20, 0, 50),
                    transfer=widgets.dropdown("naive", ["none", "naive", "stats", "noise"]),
                    covariance_aware=widgets.toggle(True), per_class_cov=widgets.toggle(False),
                    seed=widgets.slider(0, 0, 20))

# %% [markdown]
# Things to try: **anisotropy 1** (round classes: no shape to transfer, Mahalanobis and the oracle tie
# with Euclidean);
# **transfer "noise"** (isotropic deviations of the right size but the wrong shape: Mahalanobis
# falls back to Euclidean); **transfer "stats"** (each axis divided by the donor's std and multiplied by
# the mean donor std: a per-axis rescaling, which keeps the correlation, so with a shared covariance it
# scores like naive; checked below, with the first two); **per-class covariance** on (the premise fails);
# **shots 5** (does the gap shrink? Exercise 3).

# %%
stats_toy = toy_accuracies(ToyConfig(), episodes=TOY_EPISODES, seed=0, transfer="stats")
st_m, st_ci = mean_ci(stats_toy["mahalanobis"] - stats_toy["euclidean"])
st_vs = mean_ci(stats_toy["mahalanobis"] - toy["mahalanobis"])
print(f"stats: Mahalanobis - Euclidean {100 * st_m:+.1f} ± {100 * st_ci:.1f} (naive {100 * gap_m:+.1f} ± "
      f"{100 * gap_ci:.1f}); stats - naive {100 * st_vs[0]:+.2f} ± {100 * st_vs[1]:.2f} points")
assert abs(st_vs[0]) < 0.01                        # stats keeps the rotation: it scores like naive
noise_toy = toy_accuracies(ToyConfig(), episodes=TOY_EPISODES, seed=0, transfer="noise")
round_toy = toy_accuracies(ToyConfig(stds=(3.0, 3.0)), episodes=TOY_EPISODES, seed=0)
nz, rd = (mean_ci(t["mahalanobis"] - t["euclidean"]) for t in (noise_toy, round_toy))
print(f"Mahalanobis - Euclidean: noise transfer {100 * nz[0]:+.2f} ± {100 * nz[1]:.2f}; anisotropy 1 "
      f"{100 * rd[0]:+.2f} ± {100 * rd[1]:.2f} points")
assert abs(nz[0]) < 0.005 and abs(rd[0]) < 0.005   # noise: falls back to Euclidean; round classes: ties
assert abs((round_toy["oracle"] - round_toy["euclidean"]).mean().item()) < 0.001   # ... and so does the oracle

# %% [markdown]
# ## 6. Glyphs with a shared nuisance
#
# The image experiment uses the glyph bank (letters of five scripts rendered from matplotlib's fonts,
# our Omniglot stand-in). Classes are split into **base** (meta-training, and the donor pool at
# every stage), validation and **novel** test classes. Every image gets a nuisance drawn from the
# same distribution for every class — rotation up to ±20°, scale, shear, shift, stroke dilation,
# pixel noise — in the spirit of MVT's premise that nuisances are shared across classes. They are not
# *additive* in pixel space (a rotation moves each glyph's pixels differently), so whether they become
# shared deviation directions in feature space is an open question; the regime map shows why that
# matters. Below, one class without and with the nuisance.

# %%
bank = load_glyphs()
bank.images = (bank.images * 255).round().to(torch.uint8)   # one copy, kept as bytes (8 MB, not 32 MB)


def pixels(x):
    """uint8 glyphs -> float in [0, 1], per batch (the same values as the float bank)."""
    return x.float() / 255.0


split = bank.split((0.6, 0.2, 0.2), seed=0)
print({k: len(v) for k, v in split.items()}, "classes (base / validation / novel)")
row = pixels(bank.images[split["test"][3], :10])
warped = shared_nuisance(row, torch.Generator().manual_seed(1), 1.0)
fig, axes = plt.subplots(2, 10, figsize=(10, 2.3))
for i in range(10):
    axes[0, i].imshow(row[i, 0], cmap="gray_r")
    axes[1, i].imshow(warped[i, 0], cmap="gray_r")
for a in axes.flat:
    a.axis("off")
axes[0, 0].set_title("no nuisance", fontsize=8, loc="left")
axes[1, 0].set_title("shared nuisance (strength 1)", fontsize=8, loc="left")
plt.show()

# %% [markdown]
# ## 7. A live run: ProtoNet vs MVT-style gated transfer
#
# 5-way 1-shot on novel classes; 4 donor classes × 5 images per episode, always base classes;
# M = 5 virtual samples per target, λ_V = 0.5, option Q. Both learners use the same Conv4 embedding
# (32 channels), the same episodes and the learning rate that our driver chose for each on
# validation classes (read from the shipped results). This live run is short (300 training episodes
# each by default) and scored on 100 fixed test episodes: it shows the pipeline, not the verdict —
# §8 has the multi-seed numbers.

# %%
saved = load_results("mvt.json")     # checks the SHA-256 in data/results/SHA256SUMS
print("shipped results written by:", saved["command"], "on", saved["date"], "with torch", saved["torch"])
LIVE_STEPS = 300 if FULL else 150
setup = mvt_exp.make_setup(1.0, val_episodes=1, test_episodes=300 if FULL else 100, bank=bank)
live = {}
for method in ("protonet", "gated"):
    learner, meta, hist = mvt_exp.train_method(method, setup, LIVE_STEPS, saved["tuning"]["chosen"][method], seed=0)
    live[method] = (learner, meta, hist)

# %% tags=["NBVAL_IGNORE_OUTPUT"]
live_scores = {m: mvt_exp.score_heads(*live[m][:2], setup.test_episodes, ("prototype", "augmented", "mahalanobis"))
               for m in live}
for m, heads in live_scores.items():
    for head, r in heads.items():
        print(f"{m:9s} {head:12s} {r}")
print("gated - protonet (prototype head):", compare(live_scores["protonet"]["prototype"],
                                                    live_scores["gated"]["prototype"]))
fig, ax = plt.subplots(figsize=(6, 3))
for m, (_, _, hist) in live.items():
    k = 10
    ax.plot(np.convolve(hist.loss, np.ones(k) / k, "valid"), label=m)
ax.set_xlabel("outer step")
ax.set_ylabel("training loss (L_Q, + λ_V L_V for MVT)")
ax.legend()
plt.show()

# %% [markdown]
# Mechanism checks on the live models: both learned (training loss fell), and the MVT-style model
# with plain prototypes is scored by exactly the core's ProtoNet rule.

# %%
for m, (_, _, hist) in live.items():
    assert np.mean(hist.loss[-20:]) < np.mean(hist.loss[:20]), m
ep0 = setup.test_episodes[0]
gl, gm = live["gated"][:2]
proto_view = ProtoNet(gl.model)
assert torch.equal(gl.test_logits(gm, ep0, "prototype"), proto_view.logits(gm, ep0))

# %% [markdown]
# ## 8. The multi-seed comparison (precomputed by our driver)
#
# `python -m tutor.experiments.mvt --seeds 0 1 2` trains every method from scratch per seed
# (600 episodes, meta-batch 2), choosing each method's Adam learning rate from the same grid on
# validation classes (seed 0), and scores on the same 300 fixed novel-class test episodes:
# ProtoNet; MVT-style gated transfer (option Q, and `gated_p`: option P during training, so the
# transfer module also gets gradients through L_Q); **`gate_zero`**, the control with the gate fixed
# at 0 (ProtoNet plus the separation term that L_V becomes when nothing is transferred, §8b);
# **`query_matching`**, our objective whose gate cannot close (§8b); the feature-noise control (same
# losses, isotropic noise of matched norm instead of transferred deviations) and naive transfer; for
# ProtoNet and the gated models also the option-P head at test and the Mahalanobis head from
# transferred variation. Sanity check: ProtoNet and the gated model retrained with the nuisance
# switched off. `gate_zero` and `query_matching` were added in a second run that reused the other
# methods' scores from the first (same seeds, settings and episode seeds; the file records this).
# The module's code changed between the two runs (`tutor/papers/mvt.py`, including how donors are
# drawn from the random generator), so arms from different runs were trained by different code, and we
# have not checked that the fixed test episodes are bit-identical: a run effect is confounded with
# every comparison across the two groups (`gate_zero`, `query_matching` vs the others).
# **An asymmetry we keep:** the transfer arms embed 4 × 5 donor images per episode that ProtoNet
# never sees in that episode (they are base-class images, which ProtoNet's own training episodes
# also draw from). We ran no ProtoNet arm that may use them, so a transfer arm's gain over ProtoNet
# could come from those extra images rather than from transfer. We recompute everything from the per-episode
# scores stored in the file.

# %%
print("learning rates chosen on validation classes:", saved["tuning"]["chosen"],
      "| on the grid's edge:", saved["tuning"]["on_edge"])
summary = {}
for setting, by_seed in saved["scores"].items():
    seeds = sorted(by_seed)
    for name in by_seed[seeds[0]]:
        per_seed = [float(np.mean(by_seed[s][name])) for s in seeds]
        diffs = [float(np.mean(np.array(by_seed[s][name]) - np.array(by_seed[s]["protonet/prototype"]))) for s in seeds]
        summary[setting, name] = (per_seed, mean_ci(per_seed), diffs, mean_ci(diffs) if name != "protonet/prototype" else None)
        d = summary[setting, name][3]
        print(f"{setting:12s} {name:22s} seeds {' '.join(f'{100 * a:.1f}' for a in per_seed)} | mean "
              f"{100 * summary[setting, name][1][0]:.1f} ± {100 * summary[setting, name][1][1]:.1f}"
              + ("" if d is None else f" | vs ProtoNet {' '.join(f'{100 * x:+.1f}' for x in diffs)} -> "
                 f"{100 * d[0]:+.2f} ± {100 * d[1]:.2f}"))
for (setting, name), row in summary.items():       # the file's own summary agrees with the recomputation
    stored = saved["summary"][setting][name]
    assert np.allclose(stored["per_seed"], row[0]) and np.allclose(stored["diff_per_seed"], row[2], atol=1e-9)

# %%
fig, ax = plt.subplots(figsize=(9, 3.4))
rows = [k for k in summary if k[0] == "nuisance"] + [k for k in summary if k[0] == "no_nuisance"]
ax.bar(range(len(rows)), [100 * summary[k][1][0] for k in rows], yerr=[100 * summary[k][1][1] for k in rows],
       color=["tab:blue" if k[0] == "nuisance" else "tab:grey" for k in rows], capsize=3)
ax.set_xticks(range(len(rows)), [f"{n}\n({'no nuis.' if s == 'no_nuisance' else 'nuis.'})" for s, n in rows],
              fontsize=7, rotation=30)
ax.set_ylabel("novel 5-way 1-shot accuracy (%)")
ax.set_title("3 seeds, Student-t 95% CI over seeds")
lo = min(100 * summary[k][1][0] for k in rows)
ax.set_ylim(lo - 10, 100)
plt.show()

# %% [markdown]
# The sentences below are checked against these numbers by the `assert` cell that follows them.
#
# **A small gain over ProtoNet showed.** With the shared nuisance on, MVT-style gated transfer
# scored 75.1% against ProtoNet's 73.3% (means over 3 seeds). Paired on the same 300 test episodes,
# the gain per seed was +1.4, +1.6 and +2.3 points: **+1.8 ± 1.2 points** (Student-t 95% over seeds),
# small but of the same sign in every seed.
#
# **The control with the gate fixed at 0 cannot separate them; the gate says it is not transfer.**
# `gate_zero` (ProtoNet plus the separation term, nothing transferred) scored +1.5 ± 7.7 points over
# ProtoNet (−2.1, +3.0, +3.5 per seed), and gated − gate_zero was +0.3 ± 6.8 (+3.4, −1.5, −1.2): with
# 3 seeds the gated arm is not distinguishable from the control that transfers nothing — which, with
# intervals this wide, does not show that they are equal either. What says the gated gain is **not
# attributable to transfer** is the gate itself: the seed-0 gated model (the one we kept, §8b) is
# closed (openness ≈ 10⁻⁵), so its virtual samples sit on the prototypes. The other scored `gated` and
# `gated_p` models were not kept. The driver's `--add-openness` retrained them (same seed, learning
# rate and steps), but the retrained models do **not** reproduce the stored test scores: single
# episodes differ by up to 28 points, and even the seed-0 retrain differs from the kept model, so the
# code path changed between the runs (we have not traced where). Their openness describes models
# trained by the same recipe, not the scored ones: `gated` 1.7·10⁻⁴, 0.057 and 8.5·10⁻⁵ (seeds 0–2:
# nearly closed, seed 1 less so), `gated_p` 0.25, 0.11 and 0.26 (consistent with option P's gradient
# through L_Q keeping its gate partly open; measured on siblings only). The scored gated models'
# test-time heads score like plain prototypes (option P and Mahalanobis within 0.3 points of plain in
# every seed, for `gated` and `gated_p` alike) — what a closed gate gives, but the `gated_p` siblings
# are partly open and their scored counterparts score the same way, so this sign does not tell an open
# gate from a closed one and does not measure the scored models' gates. The feature-noise control (+3.1 ± 5.0; +2.0, +1.8,
# +5.4) and naive transfer (+2.5 ± 7.3; −0.9, +4.3, +4.2) are larger on average than the gated arm
# but, with 3 seeds, not distinguishable from it. Option P in training (`gated_p`) gave +2.0 ± 4.3 (+0.0, +3.0, +3.0): not distinguishable from zero nor from option Q. We
# have not measured *when* during training the gated model's gain arose.
#
# **With the gate open, transfer still shows no gain on glyphs.** Query matching keeps its gate open
# (openness 1.0 in every seed: it saturates at naive transfer; on the seed-0 model the 1-shot query
# deviations are wider than the donor deviations in total, ratio printed in §8b, and a gate capped
# at 1 cannot widen them further; we did not check each coordinate). It scored +2.1 ± 4.7 points over ProtoNet (+1.3, +0.8, +4.3): not
# distinguishable from zero, from `gate_zero` (+0.6 ± 7.0) or from the gated arm (+0.4 ± 3.6). Using
# its open-gate transferred deviations at test made things *worse*: its Mahalanobis head scored
# −2.7 ± 2.0 points below its own plain prototypes (−3.1, −1.8, −3.2), and option P at test
# −0.3 ± 0.4. As pre-registered in the driver, we see no clear glyph gain from transfer at this
# budget. The nuisances (rotation, shear, dilation) are not additive in pixel space; the regime map
# below shows transfer paying off when one additive nuisance is shared by all classes and not when
# each class has its own, but every setting there is additive, so it does not test non-additive
# nuisances. Whether the learned glyph embedding has shared nuisance directions we have not tested.
#
# **Three pairs whose intervals exclude 0.** Of the 21 pairwise comparisons between the seven glyph
# arms (plain prototypes, seed-level Student-t), three exclude 0: the gated arm over ProtoNet (the
# +1.8 ± 1.2 above, the comparison this notebook set out to make); naive transfer (the gate fixed at 1)
# over `gate_zero` (the gate fixed at 0) in every seed, +1.0 ± 0.8 (+1.2, +1.2, +0.7); and the
# feature-noise control over query matching in every seed, +1.0 ± 0.5 (+0.7, +1.0, +1.1). Neither
# naive transfer nor noise is distinguishable from ProtoNet. With 21 comparisons at 95% each, about
# one such interval is expected by chance alone, so we read none of the three as strong evidence, and
# the last two (not planned) as evidence neither for nor against transfer, without more seeds — both
# also compare an arm of the first run with one of the second, so a run effect (different code, see
# above) is confounded with them.
#
# **The caveat, on images.** Augmenting ProtoNet's prototypes at test time with naive virtual samples
# changed accuracy by −0.2 ± 0.4 points (§3). A Mahalanobis head whose covariance comes from raw
# donor deviations *hurt* ProtoNet (−2.6 ± 0.7): unlike in the 2-D toy, donor deviations in this
# learned 32-d embedding are not a good covariance for novel classes (we have not tested why).
#
# **Sanity check.** Without the nuisance the gated − ProtoNet difference was +0.6 ± 1.4 points, not
# distinguishable from zero; but 3 seeds cannot separate +0.6 from +1.8, and a closed gate cannot act
# on the premise anyway, so this check says nothing about transfer.

# %%
def diff_ci(setting, name):
    return summary[setting, name][3]


def paired_over_seeds(setting, a, b):
    """Seed-level CI of (b - a): per seed, the mean over the same episodes."""
    return mean_ci([x - y for x, y in zip(summary[setting, b][2], summary[setting, a][2])])


def seed_diffs(setting, a, b):
    return np.array(summary[setting, b][0]) - np.array(summary[setting, a][0])


gated_d, noise_d, naive_d = (diff_ci("nuisance", f"{m}/prototype") for m in ("gated", "noise", "naive"))
assert [round(100 * summary["nuisance", f"{m}/prototype"][1][0], 1) for m in ("gated", "protonet")] == [75.1, 73.3]
assert gated_d[0] - gated_d[1] > 0                                         # "a small gain showed"
assert (np.array(summary["nuisance", "gated/prototype"][2]) > 0).all()     # "same sign in every seed"
gz_d, qm_d = diff_ci("nuisance", "gate_zero/prototype"), diff_ci("nuisance", "query_matching/prototype")
assert abs(gz_d[0]) < gz_d[1]                                              # gate_zero: not distinguishable from 0
m, ci = paired_over_seeds("nuisance", "gate_zero/prototype", "gated/prototype")
assert abs(m) < ci                                                         # gated vs gate_zero: indistinguishable
for arm in ("gated", "gated_p"):                                           # heads score like plain prototypes
    for head in ("augmented", "mahalanobis"):
        assert np.abs(seed_diffs("nuisance", f"{arm}/prototype", f"{arm}/{head}")).max() < 0.003
assert noise_d[0] > gated_d[0] and naive_d[0] > gated_d[0]                 # "larger on average"
for other in ("noise", "naive"):                                           # "not distinguishable"
    m, ci = paired_over_seeds("nuisance", "gated/prototype", f"{other}/prototype")
    assert abs(m) < ci, other
gp_d = diff_ci("nuisance", "gated_p/prototype")
assert abs(gp_d[0]) < gp_d[1]                                              # option P: not distinguishable from 0
m, ci = paired_over_seeds("nuisance", "gated/prototype", "gated_p/prototype")
assert abs(m) < ci                                                         # ... nor from option Q
assert min(saved["openness"]["query_matching"].values()) > 0.99            # query matching: gate open
assert abs(qm_d[0]) < qm_d[1]                                              # its gain: not distinguishable from 0
for other in ("gate_zero", "gated"):
    m, ci = paired_over_seeds("nuisance", f"{other}/prototype", "query_matching/prototype")
    assert abs(m) < ci, other                                              # ... nor from gate_zero or gated
m, ci = mean_ci(seed_diffs("nuisance", "query_matching/prototype", "query_matching/mahalanobis"))
assert m + ci < 0 and (seed_diffs("nuisance", "query_matching/prototype", "query_matching/mahalanobis") < 0).all()
m, ci = mean_ci(seed_diffs("nuisance", "query_matching/prototype", "query_matching/augmented"))
assert abs(m) < ci                                                         # option P at test: -0.3 +- 0.4
aug_d, maha_d = diff_ci("nuisance", "protonet/augmented"), diff_ci("nuisance", "protonet/mahalanobis")
assert abs(aug_d[0]) < aug_d[1] and maha_d[0] + maha_d[1] < 0              # caveat; raw-donor covariance hurts
off_d = diff_ci("no_nuisance", "gated/prototype")
assert abs(off_d[0]) < off_d[1]                                            # sanity check: not distinguishable
m, ci = mean_ci([x - y for x, y in zip(summary["nuisance", "gated/prototype"][2],
                                       summary["no_nuisance", "gated/prototype"][2])])
assert abs(m) < ci                                                         # +0.6 vs +1.8: not separable
rep_gap = saved["openness_reproduced"]                                     # retrained, not the scored models
assert all(0.19 < x < 0.29 for m in ("gated", "gated_p") for x in rep_gap[m].values())   # "up to 28 points"
g_o, gp_o = ([saved["openness"][m][s] for s in "012"] for m in ("gated", "gated_p"))
assert max(g_o[0], g_o[2]) < 2e-4 and 0.05 < g_o[1] < 0.06                  # gated: 1.7e-4, 0.057, 8.5e-5
assert all(0.1 < x < 0.27 for x in gp_o) and min(gp_o) > max(g_o)            # gated_p: 0.25, 0.11, 0.26
ARMS = ("protonet", "gated", "gated_p", "noise", "naive", "gate_zero", "query_matching")
apart = {}
for i, a in enumerate(ARMS):                                               # all 21 pairs of glyph arms
    for b in ARMS[i + 1:]:
        m, ci = mean_ci(seed_diffs("nuisance", f"{a}/prototype", f"{b}/prototype"))
        if abs(m) > ci:
            apart[a, b] = (m, ci)
print("pairs whose seed-level interval excludes 0:", {k: f"{100 * m:+.2f} ± {100 * ci:.2f}" for k, (m, ci) in apart.items()})
assert set(apart) == {("protonet", "gated"), ("naive", "gate_zero"), ("noise", "query_matching")}
assert abs(noise_d[0]) < noise_d[1] and abs(naive_d[0]) < naive_d[1]       # neither is apart from ProtoNet
m, ci = apart["naive", "gate_zero"]
assert m < 0 and abs(100 * m + 1.0) < 0.05 and (seed_diffs("nuisance", "gate_zero/prototype", "naive/prototype") > 0).all()
m, ci = apart["noise", "query_matching"]
assert m < 0 and abs(100 * m + 1.0) < 0.06 and (seed_diffs("nuisance", "query_matching/prototype", "noise/prototype") > 0).all()

# %% [markdown]
# ## 8b. Why the gate closes: a lesson about augmentation objectives
#
# Write the transferred deviation as u = g ⊙ v and Δ = μ_c − μ_c′. The pseudo-query logit of the
# virtual sample μ_c + u for class c′ is
#
# $$-\lVert \Delta + u\rVert^2 = -\lVert\Delta\rVert^2 - 2\,\Delta\cdot u - \lVert u\rVert^2 .$$
#
# The last term, −‖u‖², is **the same for every class c′**, so it cancels in the softmax. What L_V
# sees of u is a log-sum-exp of functions *linear* in u, hence convex in u. By Jensen's inequality,
# passing a zero-mean deviation that the gate cannot aim away from the other classes raises the
# *expected* L_V: on average, the best gate is g = 0. (A single deviation can lower L_V; only the
# average over deviations is lowest at 0.) The gate sees μ_c and v but not the other classes' means,
# and under option Q no other loss reaches it. `virtual_logit_terms` splits the logit into the three
# terms; below, on the shipped gated model (seed 0) and 20 novel-class test episodes: the
# cancellation, L_V with the gate *held* at fixed values, and how open the trained gates are
# (**openness** = mean ‖ṽ‖ / mean ‖v‖: 0 = closed, 1 = naive transfer).

# %%
CKPT = ROOT / "data" / "checkpoints" / "mvt_glyphs.pt"
ckpt_meta, ckpt_info = load_checkpoint(CKPT)
print("checkpoint:", ckpt_info["command"], ckpt_info["date"], "| lr", ckpt_info["lr"], "| models", list(ckpt_meta))
nets = {m: mvt_exp.make_learner(m, hidden=ckpt_info["hidden"]) for m in ("gated", "query_matching")}
probe = mvt_exp.make_setup(1.0, 1, 20, bank=bank).test_episodes
GATES = [0.0, 0.25, 0.5, 0.75, 1.0]
lv_at = {g: [] for g in GATES}
cancel_gap = 0.0
with torch.no_grad():
    gnet, gmeta = nets["gated"], ckpt_meta["gated"]
    for ep in probe:
        hs_, _ = gnet._embed(gmeta, ep)
        mu_ = prototype_logits_means(hs_, ep.support_y, 5).double()
        v_ = gnet._picked(gmeta, ep, mu_.float(), 20)[0].double()
        for g_ in GATES:
            lv_at[g_].append(virtual_loss_at_gate(mu_, v_, g_).item())
        sep, lin, norm = virtual_logit_terms(mu_, v_)
        cancel_gap = max(cancel_gap, (torch.log_softmax(sep + lin + norm, -1)
                                      - torch.log_softmax(sep + lin, -1)).abs().max().item())
lv_mean = [float(np.mean(lv_at[g_])) for g_ in GATES]
print("max |change of log-softmax| when -||u||^2 is dropped:", f"{cancel_gap:.1e}")
print("L_V with the gate held at", GATES, "->", [f"{x:.3f}" for x in lv_mean])
openness = {m: nets[m].openness(ckpt_meta[m], probe) for m in nets}
with torch.no_grad():                       # query-matching model: spread of query vs donor deviations
    qnet, qmeta = nets["query_matching"], ckpt_meta["query_matching"]
    q_sq, d_sq = [], []
    for ep in probe:
        hs_, hq_ = qnet._embed(qmeta, ep)
        mu_ = prototype_logits_means(hs_, ep.support_y, 5)
        q_sq.append((hq_ - mu_[ep.query_y]).pow(2).sum(-1).mean().item())
        d_sq.append(qnet._donors(qmeta, ep)[0].pow(2).sum(-1).mean().item())
spread_ratio = float(np.mean(q_sq) / np.mean(d_sq))
print(f"query-matching model: mean ||h_q - mu_y||^2 / mean ||v||^2 = {spread_ratio:.2f}")
print("openness of the shipped seed-0 models:", {m: f"{o:.1e}" for m, o in openness.items()})
print("openness per seed, from the driver (20 test episodes each; gated and gated_p: retrained siblings, "
      "not the scored models):", {m: [f"{x:.1e}" for x in v.values()] for m, v in saved["openness"].items()})
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(GATES, lv_mean, "o-")
ax.set_xlabel("gate g held fixed (virtual sample = μ_c + g·v)")
ax.set_ylabel("L_V, mean over 20 episodes")
ax.set_title("L_V is lowest with the gate closed", fontsize=9)
plt.show()

# %%
assert cancel_gap < 1e-12                                   # -||u||^2 cancels in the softmax
assert all(a <= b for a, b in zip(lv_mean, lv_mean[1:]))    # L_V rises as the gate opens
assert openness["gated"] < 1e-3                             # the trained L_V gate is closed
assert openness["query_matching"] > 0.5                     # the query-matching gate is open
assert spread_ratio > 1                                     # query deviations are wider than donor deviations

# %% [markdown]
# **An objective that cannot close the gate** (ours, `transfer="query_matching"`). Keep what L_V is
# good for: it still trains the *embedding* on the virtual pseudo-queries, but its gradient into the
# gate is stopped. Train the gate with a loss faithful to "virtual samples simulate upcoming queries":
# the real queries' deviations r = h_q − μ_{y_q} should be likely under a zero-mean Gaussian whose
# per-coordinate variance is that of the transferred deviations,
#
# $$L_M = \tfrac12\,\mathrm{mean}_q \sum_j \Bigl(\frac{r_{q,j}^2}{\mathrm{var}_j} + \log \mathrm{var}_j\Bigr), \qquad
#   \mathrm{var}_j = \mathrm{mean}_{c,m}\, \tilde v_{c,m,j}^2 + \epsilon .$$
#
# For fixed r it is minimised at var_j = mean r_j², and it grows without bound as the transferred
# variance goes to zero: a closed gate is now the *worst* answer. The features enter L_M detached, so
# it trains only the gate (the tests check both gradient stops and the closed forms).

# %%
print(inspect.getsource(query_matching_loss))
_r = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=D)
_v = torch.randn(30, 3, generator=torch.Generator().manual_seed(1), dtype=D)
qm_curve = [query_matching_loss(c * _v, _r, eps=0.0).item() for c in (2.0, 1.0, 0.1, 1e-3)]
print("L_M with the transferred deviations scaled by 2, 1, 0.1, 0.001:", [f"{x:.3g}" for x in qm_curve])
assert qm_curve[1] < qm_curve[2] < qm_curve[3] and qm_curve[3] > 1e5    # closing the gate is punished

# %% [markdown]
# ## Regime map
#
# MVT's premise is that nuisance variation is **shared across classes** and that a 1-shot class cannot
# estimate it alone. On glyphs we cannot check that premise directly, so we build a feature space where
# it is exactly true (`WorldConfig`): h = μ_c + L n + σ ε in d = 32, with **one** rank-3 loading matrix
# L shared by all classes (factor std = the *nuisance strength*), σ = 1, class means ~ N(0, 0.9² I);
# 5-way, 15 queries per class, 10 donor classes × 20 samples per episode (fresh classes, never the
# targets), 20 transferred deviations per target. The features are fixed; what is meta-learned is the
# gate, on fresh training episodes of the same world, with query matching (`query_matching`) or with
# L_V (`gated`). The head that uses the transferred variation is the shared Mahalanobis head, whose
# covariance is the transferred deviations' (shrunk towards a multiple of I). Controls: raw donor
# deviations (`naive`), **rotated** donor deviations (same spectrum, wrong directions), isotropic
# **noise** of matched norm, and with ≥ 2 shots the support's own pooled spread (`support`, no donors).
# Every arm's shrinkage is chosen from the same grid on validation episodes (shrinkage 1 is Euclidean,
# so every arm may fall back to ProtoNet); learned arms also choose the learning rate from one grid.
# 5 seeds (a seed fixes L and the episodes), 500 paired test episodes each, Student-t over seeds.
# `gate_zero` is no arm here: with fixed features a closed gate gives a zero covariance and the head is
# ProtoNet exactly. Falsification settings where transfer must **not** win: each class its own L,
# nuisance strength 0, more shots. The predictions were written in the driver's docstring before the run:

# %%
print(mvt_world.__doc__[mvt_world.__doc__.index("PRE-REGISTERED"):])
W = saved["world"]
maps = saved["regime"]
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
for ax, m, op in zip(axes, maps, (2.5, 2.5, 1)):
    regime_plot(m, operating_point=op, ax=ax)
    ax.set_title(m["factor"], fontsize=9)
fig.tight_layout()
plt.show()
points = {name: {p.value: p for p in summarise_regime(m)} for name, m in zip(("shared", "per_class", "shots"), maps)}
settings = W["settings"]


def arm_gain(setting, arm, base="protonet"):
    """Paired gain (points) of ``arm`` over ``base`` per seed in a world setting, with its Student-t CI."""
    ps = settings[setting]["per_seed"]
    diffs = [a - b for a, b in zip(ps[arm], ps[base])]
    return diffs, mean_ci(diffs)


for name in settings:
    ps = settings[name]["per_seed"]
    print(f"{name:32s}", " ".join(f"{a} {np.mean(v):.1f}" for a, v in ps.items()))

# %% [markdown]
# **One live point.** Seed 0 of the operating point (one L shared, strength 2.5, 1 shot), rebuilt from
# the driver's seeds: the same validation and test episodes, ProtoNet, naive transfer, and the gate
# trained by query matching at the chosen learning rate (100 steps, ≈ 2 s). It must reproduce the
# shipped seed-0 numbers. Two measurements for the reading below: L_V on these episodes with the gate
# fully open, and the head's accuracy when the transferred deviations are scaled down 100-fold.

# %%
OP = "shared/nuisance=2.5/shots=1"
op_cfg = WorldConfig(nuisance=2.5)
op_basis = world_basis(op_cfg, 0)
_gen = torch.Generator().manual_seed(1_000)
_ = world_episodes(op_cfg, W["config"]["val_episodes"], op_basis, _gen)        # validation episodes first
op_test = world_episodes(op_cfg, W["config"]["test_episodes"], op_basis, _gen)
chosen0 = settings[OP]["chosen"]["0"]
live_phi, _ = train_world_transfer(op_cfg, op_basis, "query_matching", W["config"]["steps"],
                                   chosen0["query_matching"]["lr"], seed=0)
live_pt = {"protonet": world_accuracy(op_test, None)}
for arm, phi in (("naive", None), ("query_matching", live_phi)):
    vt, _ = world_transfer(op_test, "learned" if phi is not None else arm, 20, torch.Generator().manual_seed(10_000),
                           phi)
    live_pt[arm] = world_accuracy(op_test, vt, chosen0[arm]["shrinkage"])
vt_naive, v_naive = world_transfer(op_test, "naive", 20, torch.Generator().manual_seed(10_000))
shrunk = world_accuracy(op_test, 0.01 * vt_naive, chosen0["naive"]["shrinkage"])
mu_op = op_test["support"].mean(2)
lv_open = float(np.mean([virtual_loss(virtual_samples(mu_op[e], v_naive[e].view(5, 20, -1)), mu_op[e]).item()
                         for e in range(100)]))
for arm, acc in live_pt.items():
    print(f"live {arm:15s} {100 * acc.mean().item():.2f}%   shipped seed 0: {settings[OP]['per_seed'][arm][0]:.2f}%")
print(f"naive transfer with deviations scaled by 0.01: {100 * shrunk.mean().item():.2f}% "
      f"(unscaled {100 * live_pt['naive'].mean().item():.2f}%); L_V with the gate open: {lv_open:.1e}")
for arm, acc in live_pt.items():
    assert abs(100 * acc.mean().item() - settings[OP]["per_seed"][arm][0]) < 0.05, arm

# %% [markdown]
# **Reading the map.** *One L shared by all classes:* the gain of query matching over ProtoNet is 0 at
# strength 0 (every arm's tuning chose shrinkage 1, i.e. ProtoNet, in every seed), +0.2 ± 0.2 at 1,
# **+15.4 ± 0.2 at 2.5** and +33.1 ± 0.6 at 4 points: it grows with the nuisance, as predicted
# (prediction 1 held). Rotated donor deviations and isotropic noise gained nothing at any strength
# (validation chose shrinkage 1, i.e. ProtoNet, for `rotated` in every seed and setting, and for
# `noise` in all but one: seed 1 at strength 4 chose 0.7 and lost 0.2 points there, −0.04 ± 0.12 over
# seeds), so the gain comes from the shared *directions*, not from spread (prediction 2 held). *Each class its own L:* the gain is exactly 0 at
# every strength and seed, because validation chose shrinkage 1 for every arm; forced to use the
# transferred covariance (naive transfer, shrinkage 0.4) the validation accuracy at strength 2.5 would
# have dropped by about 2 points in every seed (prediction 3 held). *Shots:* +15.4 → +12.1 → +6.6
# points at 1, 2 and 5 shots: the gain shrinks but stays positive; at 5 shots the support's own pooled
# spread gains +4.9 ± 0.3, and transfer beats it by +1.6 ± 0.1 — within the ±2 points we
# pre-registered, but ahead in every seed with an interval excluding 0. Prediction 4 held by its
# ±2-point margin; its reading that transfer is no longer needed at 5 shots did not hold.
#
# **What failed.** Prediction 5 (the L_V-trained gate closes and gains nothing here) did not hold at
# the learning rate validation chose: in this world the L_V gate stayed near where it started (its last layer starts at zero, so every gate
# starts at 0.5; after training, openness 0.48–0.50 at strengths 2.5 and 4, 0.47–0.50 over all
# settings) and gained +15.2 ± 0.2 at strength 2.5. Query matching beat it by at most +0.15 points
# anywhere: by +0.14 ± 0.05 at strength 2.5, +0.15 ± 0.08 at 4, +0.09 ± 0.08 at 2 shots and
# +0.07 ± 0.02 at 5 shots (ahead in every seed there, intervals excluding 0), by nothing measurable
# elsewhere. We have not tested why the collapse has little grip here. What we measured: L_V with the
# gate fully open is small (printed in the live cell; below its glyph value at gate 1 in §8b); the
# shared Mahalanobis head ignores a uniform scale of the deviations (scaled by 0.01: the same accuracy
# within 0.2 points), so a gate that shrinks every coordinate alike costs nothing; and where the
# learning rate mattered for the L_V gate, validation preferred one of the two smallest rates
# (10⁻⁴ or 3·10⁻⁴), and larger steps cost up to 24 points (strength 4: 80.3% at 10⁻⁴, 56.0% at
# 3·10⁻²), i.e. the least L_V training scored best. At the chosen rates the `gated` arm is thus close
# to naive transfer with a barely trained gate (gated − naive −0.02 ± 0.05 at strength 2.5); whether
# harder L_V training closes the gate in this world we have not tested, and we have not trained the
# L_V gate longer. Query matching was within 0.15 points of naive transfer everywhere (ahead by +0.04
# to +0.15 points in the four shared settings with strength 2.5 or more, intervals excluding 0): in
# this world, meta-learning the gate added almost nothing over raw donor deviations (its openness
# 0.66–1.00). **Learning-rate grid:** 10⁻⁴ … 3·10⁻² (six rates, the same for both learned arms; a tie
# on validation goes to the rate nearest the grid's middle). Query matching's choice is inside the
# grid in every setting; the L_V gate's validation accuracy did not depend on the rate at all in seven
# of the ten settings, and its choice sits on the lower edge in one (strength 4, 10⁻⁴), where
# smaller steps kept scoring better.

# %%
P = points
_ARMS_W = ("naive", "rotated", "noise", "query_matching", "gated")
assert P["shared"][0.0].mean == 0 and not P["shared"][0.0].excludes_zero            # no nuisance: no gain


def shrinkages(setting, arm):
    return [c[arm]["shrinkage"] for c in settings[setting]["chosen"].values()]


assert all(x == 1.0 for a in _ARMS_W for x in shrinkages("shared/nuisance=0.0/shots=1", a))   # all chose ProtoNet
for name in settings:
    assert all(x == 1.0 for x in shrinkages(name, "rotated")), name
    noise_sh = {(name, s): c["noise"]["shrinkage"] for s, c in settings[name]["chosen"].items()}
    assert all(x == 1.0 for k, x in noise_sh.items() if k != ("shared/nuisance=4.0/shots=1", "1")), name
assert settings["shared/nuisance=4.0/shots=1"]["chosen"]["1"]["noise"]["shrinkage"] == 0.7
d, (m, ci) = arm_gain("shared/nuisance=4.0/shots=1", "noise")
assert abs(m + 0.04) < 0.01 and abs(d[1] + 0.22) < 0.01                            # lost 0.2 points in seed 1
assert P["shared"][1.0].excludes_zero and P["shared"][1.0].mean < 1
assert P["shared"][2.5].low > 8 and abs(P["shared"][2.5].mean - 15.4) < 0.05       # prediction 1
assert abs(P["shared"][2.5].mean - P["shared"][2.5].low - 0.2) < 0.05             # +15.4 +- 0.2
assert abs(P["shared"][4.0].mean - 33.1) < 0.05 and P["shared"][4.0].mean > P["shared"][2.5].mean
means = [P["shared"][v].mean for v in (0.0, 1.0, 2.5, 4.0)]
assert means == sorted(means)                                                     # grows with the strength
for name in settings:                                                             # prediction 2
    for ctrl in ("rotated", "noise"):
        d, (m, ci) = arm_gain(name, ctrl)
        assert m - ci <= 0 <= m + ci or m + ci < 0, (name, ctrl)
for v, p in P["per_class"].items():                                               # prediction 3
    assert all(x == 0 for x in p.diffs), v
    assert all(x == 1.0 for a in _ARMS_W for x in shrinkages(f"per_class/nuisance={v}/shots=1", a))  # every arm
forced = [val["naive"]["None/0.4"] - val["naive"]["None/1.0"]
          for val in settings["per_class/nuisance=2.5/shots=1"]["validation"].values()]
assert all(-0.03 < f < -0.01 for f in forced)                                     # "about 2 points" worse
shots = [P["shots"][k].mean for k in (1, 2, 5)]
assert shots == sorted(shots, reverse=True) and P["shots"][5].low > 0              # prediction 4, first half
assert all(abs(a - b) < 0.05 for a, b in zip(shots, (15.4, 12.1, 6.6)))            # +15.4 -> +12.1 -> +6.6
sup_d, (m, ci) = arm_gain("shared/nuisance=2.5/shots=5", "query_matching", "support")
assert abs(m) < 2 and all(x > 0 for x in sup_d) and abs(m - 1.6) < 0.05            # within +-2, ahead every seed
assert m - ci > 0                                                                  # ... interval excluding 0
assert abs(arm_gain("shared/nuisance=2.5/shots=5", "support")[1][0] - 4.9) < 0.05  # support's own spread
g_open = [o for st in ("shared/nuisance=2.5/shots=1", "shared/nuisance=4.0/shots=1")
          for o in settings[st]["openness"]["gated"].values()]
assert 0.48 <= min(g_open) and max(g_open) <= 0.5001                               # prediction 5 failed
g_all = [o for r in settings.values() for o in r["openness"]["gated"].values()]
assert 0.47 <= min(g_all) and max(g_all) <= 0.5001                                 # 0.47-0.50 over all settings
_phi0 = transfer_init(8, 4, 0, D)                                                  # the gate's start: exactly 0.5
assert torch.equal(gate(_phi0, torch.ones(3, 8, dtype=D), torch.ones(3, 8, dtype=D)), torch.full((3, 8), 0.5, dtype=D))
qm_all = [o for r in settings.values() for o in r["openness"]["query_matching"].values()]
assert 0.65 <= min(qm_all) and max(qm_all) <= 1.0                                  # query matching: 0.66-1.00
d, (m, ci) = arm_gain("shared/nuisance=2.5/shots=1", "gated")
assert abs(m - 15.2) < 0.05 and m - ci > 8
FOUR = ("shared/nuisance=2.5/shots=1", "shared/nuisance=4.0/shots=1", "shared/nuisance=2.5/shots=2",
        "shared/nuisance=2.5/shots=5")
for name, want in zip(FOUR, (0.14, 0.15, 0.09, 0.07)):                              # qm over the L_V gate
    d, (m, ci) = arm_gain(name, "query_matching", "gated")
    assert abs(m - want) < 0.01 and m - ci > 0 and all(x > 0 for x in d), name      # ahead in every seed
for name in settings:
    d, (m, ci) = arm_gain(name, "query_matching", "gated")
    assert abs(m) < 0.16, name                                                     # at most +0.15 anywhere
    if name not in FOUR:
        assert abs(m) < 0.01 and m - ci <= 0, name                                 # nothing measurable elsewhere
assert lv_open < lv_mean[-1]                                                      # smaller than on glyphs
val4 = settings["shared/nuisance=4.0/shots=1"]["validation"]["0"]["gated"]
best4 = {lr: max(a for k, a in val4.items() if k.split("/")[0] == str(lr)) for lr in W["config"]["lr_grid"]}
assert abs(100 * best4[1e-4] - 80.3) < 0.05 and abs(100 * best4[3e-2] - 56.0) < 0.05
_b4 = [best4[lr] for lr in sorted(best4)]
assert all(x > y for x, y in zip(_b4, _b4[1:]))                                   # smaller steps kept scoring better
for name in settings:                                                             # L_V gate: smallest steps win
    if not settings[name]["lr_flat"]["gated"]:
        assert settings[name]["chosen"]["0"]["gated"]["lr"] <= 3e-4, name
_, g_vs_naive = arm_gain("shared/nuisance=2.5/shots=1", "gated", "naive")
assert abs(g_vs_naive[0]) < g_vs_naive[1] and abs(g_vs_naive[0] + 0.02) < 0.01   # gated ~ naive: -0.02 points
assert abs(shrunk.mean().item() - live_pt["naive"].mean().item()) < 0.002          # head ignores the scale
for name in settings:                                                             # query matching ~ naive
    d, (m, ci) = arm_gain(name, "query_matching", "naive")
    assert abs(m) < 0.15, name                                                     # within 0.15 points everywhere
    if name in FOUR:
        assert m - ci > 0 and 0.03 < m < 0.15, name                                # ... a small edge, excluding 0
assert W["config"]["lr_grid"] == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
assert not any(r["lr_on_edge"]["query_matching"] for r in settings.values())      # inside the grid everywhere
assert sum(r["lr_flat"]["gated"] for r in settings.values()) == 7 and len(settings) == 10
assert [n for n, r in settings.items() if r["lr_on_edge"]["gated"]] == ["shared/nuisance=4.0/shots=1"]
assert settings["shared/nuisance=4.0/shots=1"]["chosen"]["0"]["gated"]["lr"] == 1e-4

# %% [markdown]
# ## 9. Widget, panel B: transferred variations on glyphs
#
# Seed-0 models of our driver (shipped as a small checkpoint; see `data/README.md`). Pick a model,
# a novel target class and a base donor class: the donor's samples, the target's single shot, and for
# four virtual features the **nearest real images** in a bank of encoded novel-class images (a way to
# *see* a virtual sample without a decoder). Right: a PCA of the episode's embeddings (support,
# queries, virtual samples) with the transfer on or off. With the **query-matching** model (open
# gate) the virtual samples spread around the target's shot; with the **L_V-trained gated** model
# (closed gate, the lesson of §8b) they sit on it, and "transfer on/off" changes nothing. Batch norm
# uses batch statistics, so the retrieval bank is encoded in shuffled batches of episode size.

# %%
PANEL_MODELS = {"query matching (open gate)": "query_matching", "gated, trained by L_V (closed gate)": "gated"}
novel, base = split["test"], split["train"]
retrieval_x = shared_nuisance(pixels(bank.images[novel].flatten(0, 1)), torch.Generator().manual_seed(5), 1.0)
perm = torch.randperm(len(retrieval_x), generator=torch.Generator().manual_seed(6))
retrieval_h = {}
with torch.no_grad():
    for m in PANEL_MODELS.values():
        retrieval_h[m] = torch.empty(len(retrieval_x), nets[m].dim)
        for i in range(0, len(perm), 100):
            idx = perm[i:i + 100]
            retrieval_h[m][idx] = nets[m].model.embed(ckpt_meta[m]["net"], retrieval_x[idx])
TARGETS = {f"{bank.chars[c]} ({bank.scripts[c].title()})": c for c in novel[:8]}
DONORS = {f"{bank.chars[c]} ({bank.scripts[c].title()})": c for c in base[:8]}


FIRST_TARGET, FIRST_DONOR = next(iter(TARGETS)), next(iter(DONORS))


def draw_glyph_transfer(model="query matching (open gate)", target=FIRST_TARGET, donor=FIRST_DONOR, transfer_on=True,
                        strength=1.0, seed=0):
    name = PANEL_MODELS[model]
    panel_net, panel_meta = nets[name], ckpt_meta[name]
    g = torch.Generator().manual_seed(seed)
    t, d = TARGETS[target], DONORS[donor]
    others = [c for c in novel if c != t][:4]
    classes = [t] + others
    idx = torch.randperm(bank.num_instances, generator=g)
    sx = shared_nuisance(pixels(bank.images[classes, idx[0]]), g, strength)                  # (5, 1, 28, 28): one shot each
    qx = shared_nuisance(pixels(bank.images[classes][:, idx[1:9]].flatten(0, 1)), g, strength)
    dx = shared_nuisance(pixels(bank.images[d, idx[:8]]), g, strength)                       # (8, 1, 28, 28)
    with torch.no_grad():
        emb = panel_net.model.embed(panel_meta["net"], torch.cat([sx, qx]))
        hs, hq = emb[:5], emb[5:]
        hd = panel_net.model.embed(panel_meta["net"], dx)[None]                       # (1, 8, d)
        v, _, _ = donor_deviations(hd)
        mu = prototype_logits_means(hs, torch.arange(5), 5)
        v_t = gated_transfer(panel_meta["transfer"], mu[:1, None].expand(1, 8, -1), v) if transfer_on else 0 * v
        virt = virtual_samples(mu[:1], v_t)[0]                                         # (8, d)
    dist = torch.cdist(virt[:4], retrieval_h[name])
    nearest = [[retrieval_x[k, 0] for k in dist[r].argsort()[:8].tolist()] for r in range(4)]
    tiles = [list(dx[:, 0]), [sx[0, 0]]] + nearest
    canvas = np.ones((6 * 30, 8 * 30))
    for i, row in enumerate(tiles):                                                    # one image: fast redraws
        for j, img in enumerate(row):
            canvas[i * 30 + 1:i * 30 + 29, j * 30 + 1:j * 30 + 29] = 1 - img.numpy()
    fig, (ax_img, ax) = plt.subplots(1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [1, 1.1]})
    ax_img.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax_img.set_yticks([15 + 30 * i for i in range(6)],
                      ["donor samples", "target shot"] + [f"nearest real\nto virtual {r + 1}" for r in range(4)],
                      fontsize=8)
    ax_img.set_xticks([])
    pts = torch.cat([hs, hq, virt])
    centred = pts - pts.mean(0)
    _, _, vt = torch.linalg.svd(centred, full_matrices=False)
    p2 = (centred @ vt[:2].T).numpy()
    cmap = plt.get_cmap("tab10")
    qy = torch.arange(5).repeat_interleave(8).numpy()
    ax.scatter(p2[5:45, 0], p2[5:45, 1], c=[cmap(i) for i in qy], s=12, alpha=0.6, label="queries")
    ax.scatter(p2[:5, 0], p2[:5, 1], c=[cmap(i) for i in range(5)], s=120, edgecolor="k", label="support (prototypes)")
    ax.scatter(p2[45:, 0], p2[45:, 1], facecolors="none", edgecolors=cmap(0), s=60, label="virtual (target)")
    qy_t = torch.from_numpy(qy)
    acc_proto = (prototype_logits(hs, torch.arange(5), hq, 5).argmax(1) == qy_t).float().mean().item()
    acc_maha = (mahalanobis_logits(hq, mu, transferred_covariance(v_t, 0.5)).argmax(1) == qy_t).float().mean().item()
    spread = (v_t.norm(dim=-1).mean() / v.norm(dim=-1).mean()).item()
    ax.set_title(f"{model}: PCA of the episode, transfer {'on' if transfer_on else 'off'} (|v~|/|v| = {spread:.1e})"
                 f"\nquery accuracy: prototype "
                 f"{100 * acc_proto:.0f}%, Mahalanobis from the 8 transferred deviations {100 * acc_maha:.0f}%", fontsize=9)
    ax.legend(fontsize=7)
    return fig


widgets.interactive(draw_glyph_transfer, model=widgets.dropdown("query matching (open gate)", list(PANEL_MODELS)),
                    target=widgets.dropdown(FIRST_TARGET, list(TARGETS)),
                    donor=widgets.dropdown(FIRST_DONOR, list(DONORS)), transfer_on=widgets.toggle(True),
                    strength=widgets.slider(1.0, 0.0, 1.5), seed=widgets.slider(0, 0, 20))

# %% [markdown]
# ## 10. The face-recognition variant (described, not implemented)
#
# The patent describes the second use: a face-recognition classifier with one **class vector** w_c
# per identity (CosFace/ArcFace-style margins). Identities with few images get virtual features
# ĥ = μ_c + T_φ(v) whose deviations come from well-represented identities, and w_c is trained on
# the real and the virtual features together. Such a classifier *can* use spread: a class vector
# trained on a cloud of features is shaped by the whole cloud, not only its mean, which a mean
# prototype cannot be (§3); we have not tested whether it helps here. A natural baseline is FTL
# (Yin et al. 2019), which transfers a shared Gaussian variance prior from regular to
# under-represented subjects. We do not implement it: it needs a face data set we cannot ship.
#
# ## 11. Exercises
#
# ### Exercise 1 — the gated transfer
# Write `my_gated_transfer(phi, mu_c, v)`: the gate is a sigmoid of a one-hidden-layer MLP on the
# concatenation [μ_c; v] (weights `phi["w1"]`, `phi["b1"]`, ReLU, then `phi["w2"]`, `phi["b2"]`),
# and the result is the gate times v. Shapes: `mu_c, v (..., d)`.

# %% tags=["exercise"]
def my_gated_transfer(phi, mu_c, v):
    # YOUR CODE HERE
    raise NotImplementedError


# %% tags=["solution"]
def my_gated_transfer(phi, mu_c, v):
    hidden = torch.relu(torch.cat([mu_c, v], -1) @ phi["w1"].T + phi["b1"])
    return torch.sigmoid(hidden @ phi["w2"].T + phi["b2"]) * v


# %% tags=["check"]
_g = torch.Generator().manual_seed(0)
_phi = transfer_init(6, 10, _g, D)
_phi["w2"] = torch.randn(6, 10, generator=_g, dtype=D)          # a non-trivial gate (not the 0.5 start)
_cases = [(_phi, torch.randn(4, 6, generator=_g, dtype=D), torch.randn(4, 6, generator=_g, dtype=D)),
          (_phi, torch.randn(2, 3, 6, generator=_g, dtype=D), torch.randn(2, 3, 6, generator=_g, dtype=D))]
result_1 = checks.check_function(my_gated_transfer, gated_transfer, _cases,
                                 hint="gate = sigmoid(relu([mu_c; v] W1^T + b1) W2^T + b2); return gate * v.")

# %% tags=["solution"]
assert result_1

# %% [markdown]
# ### Exercise 2 — where does the option-P prototype go?
# A 1-shot class has support embedding μ = (2, −1). You add M = 4 virtual samples built from one
# donor's four deviations (−1, 0), (1, 0), (0, 3), (0, −3). Compute the option-P prototype
# (K μ + Σ_m ĥ_m) / (K + M) as a tensor `answer_2` of shape (2,).

# %% tags=["exercise"]
answer_2 = ...  # torch.tensor([?, ?])

# %% tags=["solution"]
_mu = torch.tensor([2.0, -1.0], dtype=D)
_dev = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, -3.0]], dtype=D)
answer_2 = (1 * _mu + (_mu + _dev).sum(0)) / (1 + 4)

# %% tags=["check"]
result_2 = checks.check_value(answer_2, torch.tensor([2.0, -1.0], dtype=D), name="answer_2",
                              hint="The deviations sum to zero, so the virtual samples average to mu itself.")

# %% tags=["solution"]
assert result_2

# %% [markdown]
# ### Exercise 3 — does spread help even when the mean stays put?
# In the toy, set `answer_3` to the accuracy gain (in points, paired mean) of the Mahalanobis head
# from transferred variation over the Euclidean prototype with **5 shots** instead of 1, on 500
# episodes, seed 0 (use `toy_accuracies(ToyConfig(shots=5), 500, 0)`). Is it larger or smaller than
# with 1 shot, and why?

# %% tags=["exercise"]
answer_3 = ...

# %% tags=["solution"]
_r5 = toy_accuracies(ToyConfig(shots=5), 500, 0)
answer_3 = 100 * (_r5["mahalanobis"] - _r5["euclidean"]).mean().item()
print(f"5 shots: {answer_3:+.1f} points (1 shot: {100 * gap_m:+.1f}); the mean is better estimated with 5 shots, "
      "but the covariance still matters: the Euclidean rule ignores the shape at any K.")

# %% tags=["check"]
_ref = toy_accuracies(ToyConfig(shots=5), 500, 0)
result_3 = checks.check_value(answer_3, 100 * (_ref["mahalanobis"] - _ref["euclidean"]).mean().item(), atol=1e-6,
                              name="answer_3", hint="Paired mean of mahalanobis - euclidean, times 100.")

# %% tags=["solution"]
assert result_3

# %% [markdown]
# ## Summary
# * MVT-style variance transfer takes deviations of base-class (donor) samples from their class
#   mean and re-applies them, gated or re-scaled, to a few-shot target class as virtual feature-space
#   samples; donors are base classes at meta-training and at meta-test.
# * The caveat: zero-mean virtual samples do not move a mean prototype (exactly, for a full set of
#   deviations), so a gain must come from training the embedding on virtual pseudo-queries or from a
#   head that uses spread.
# * In the 2-D toy with a shared covariance, the Mahalanobis head with a covariance estimated only
#   from transferred deviations came within 0.2 points of the oracle and beat the Euclidean prototype by
#   ≈ 23 points;
#   without shared covariance the gain disappeared.
# * Our reconstructed L_V pushes the gate towards closing: the −‖u‖² term cancels in the softmax, what
#   is left is convex in u, and zero-mean deviations raise its expected value. On glyphs the seed-0
#   gated model (the one we kept) passed ≈ 10⁻⁵ of each deviation (retrained siblings of the other
#   scored models: `gated` ≤ 0.06, `gated_p` 0.11–0.26); in the regime-map world, 100 small steps
#   moved the gate only from 0.5 to 0.47–0.50. A loss that asks transferred deviations to *explain
#   the real queries' deviations* (query matching, Gaussian likelihood) cannot close the gate: its gate
#   stayed open.
# * On glyphs (3 seeds, 300 paired test episodes) the gated learner beat ProtoNet by +1.8 ± 1.2
#   points, but it is not distinguishable from the control with the gate fixed at 0, from feature
#   noise or from naive transfer; the open-gate query-matching learner (+2.1 ± 4.7) is not
#   distinguishable from zero either, and its transferred covariance at test hurt (−2.7 ± 2.0 against
#   its own plain prototypes). No glyph gain over ProtoNet is attributable to transfer at this scale
#   (naive transfer did beat `gate_zero` in every seed, +1.0 ± 0.8, but as one of 21 pairwise comparisons).
# * In a feature space where one low-rank nuisance is shared by all classes, transfer with a
#   Mahalanobis head wins big
#   (+15 points at strength 2.5, +33 at 4), and the controls (rotated deviations, noise) gain nothing;
#   raw donor deviations (naive) gain almost as much as the meta-learned gate (which is ahead by at most
#   0.15 points), both with the shared Mahalanobis head. With
#   per-class nuisance or no nuisance the gain is zero (validation falls back to ProtoNet), and with
#   more shots it shrinks: in this world the shared premise is what transfer needs (see the regime map).
# * Not done here: the pre-trained-encoder mitigation, a stronger nuisance, the statistics-matching
#   variant on glyphs, a ProtoNet arm that may use the donor images (every transfer arm sees 4 × 5
#   donor images per episode that ProtoNet does not, §8), and any paper numbers (we have none to
#   compare with). We did not build the optional class-vector objective (class vectors fitted
#   on support plus virtual features, loss on the real queries): query matching is our only new
#   objective.
#
# ## References
# * S.-J. Park, S. Han, J.-W. Baek, I. Kim, J. Song, H. B. Lee, J.-J. Han, S. J. Hwang. Meta Variance
#   Transfer: Learning to Augment from the Others. ICML 2020, PMLR 119:7510–7520 (no public code).
# * Samsung Electronics / KAIST. Method and apparatus with neural network meta-training and class
#   vector training. US 2021/0241098 A1, granted as US 12,039,449 B2.
# * J. Snell, K. Swersky, R. Zemel. Prototypical Networks for Few-shot Learning. NeurIPS 2017.
# * Y.-X. Wang, R. Girshick, M. Hebert, B. Hariharan. Low-Shot Learning from Imaginary Data. CVPR 2018.
# * E. Schwartz et al. Δ-encoder: an effective sample synthesis method for few-shot object recognition. NeurIPS 2018.
# * B. Hariharan, R. Girshick. Low-shot Visual Recognition by Shrinking and Hallucinating Features. ICCV 2017.
# * X. Yin, X. Yu, K. Sohn, X. Liu, M. Chandraker. Feature Transfer Learning for Face Recognition
#   with Under-Represented Data. CVPR 2019.
