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
# # 01 · Deep Asymmetric Multi-task Feature Learning
#
# *Hae Beom Lee, Eunho Yang, Sung Ju Hwang. Deep Asymmetric Multi-task Feature Learning. ICML 2018;
# building on Lee, Yang, Hwang. Asymmetric Multi-task Learning based on Task Relatedness and Loss
# (AMTL), ICML 2016.*
#
# **Learning goals.** After this notebook you can
# 1. explain *negative transfer*: how sharing with a noisy task can hurt a clean one;
# 2. write AMTL's loss-weighted task-to-task transfer and AMTFL's loss-weighted **task-to-feature
#    feedback**, and say why the loss decides who gives and who takes;
# 3. fit STL, GO-MTL, AMTL and AMTFL on a synthetic problem with easy and hard tasks and read the
#    learned feedback matrix;
# 4. judge when the idea does and does not carry over to a deep, class-imbalanced problem.
#
# **Prerequisites.** Linear regression, ℓ1/ℓ2 penalties, multi-task learning with shared features.
# (This paper is not meta-learning in the episodic sense; it is the group's earlier work on
# *who should learn from whom*, an idea that returns in Bayesian TAML and Sequential Reptile.)
#
# **Time.** Reading ≈ 25 min. Compute ≈ 1.5 min on 2 CPU cores.

# %%
import inspect
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import tutor
from tutor import checks, widgets
from tutor.data.multitask import imbalanced_glyphs, synthetic_regression
from tutor.experiments import load_results
from tutor.experiments.amtfl import DEEP_COUNTS, per_class_error, synthetic_comparison, tune_synthetic
from tutor.papers.amtfl import (
    AMTFLConfig,
    DeepConfig,
    amtfl_objective,
    amtl_b_step,
    deep_objective,
    fit_amtfl,
    fit_amtl,
    fit_deep,
    fit_gomtl,
    fit_stl,
    rmse,
    size_term,
    task_losses,
)
from tutor.train import mean_ci

tutor.configure_threads()
tutor.seed_everything(0)
RESULTS = Path(tutor.__file__).resolve().parents[1] / "data" / "results" / "amtfl_deep.json"

# %% [markdown]
# ## 1. The idea
#
# Multi-task learning shares knowledge between tasks, usually **symmetrically**: every task's loss
# shapes the shared parameters equally. If some tasks are noisy or have little data, their errors
# flow into the shared parameters and from there into the good tasks — **negative transfer**.
#
# AMTL (2016) made transfer *directional*: each task's weight vector is rebuilt from the other
# tasks' weights, and a task with a **high loss pays more for giving** (its outgoing transfer is
# penalised in proportion to its loss). Deep-AMTFL (2018) moves the asymmetry from task→task to
# **task→feature**: the shared features must be reconstructable from the task predictions, and
# each task's feedback into the features is sparsified in proportion to its loss. Reliable
# (low-loss) tasks shape the features; unreliable ones mostly use them. This costs T×k feedback
# weights instead of T×T, and works in deep networks.
#
# ## 2. The objectives (`tutor/papers/amtfl.py`)
#
# Tasks t = 1..T with losses $\mathcal L_t$; GO-MTL writes all task weights through shared bases,
# $W = LS$:
# $$\textbf{GO-MTL:}\quad \min_{L,S}\ \sum_t \mathcal L_t(Ls_t) + \mu\lVert S\rVert_1 + \lambda\lVert L\rVert_F^2$$
# $$\textbf{AMTL:}\quad \min_{W,\,B\ge 0}\ \sum_t \big(1+\mu\lVert b_t^o\rVert_1\big)\mathcal L_t(w_t) + \lambda\sum_t \lVert w_t - Wb_t\rVert^2$$
# ($b_t^o$: row t of B, task t's outgoing transfer; $b_t$: column t, who reconstructs task t.)
# $$\textbf{AMTFL:}\quad \min_{L,S,A}\ \sum_t \big(1+\alpha\lVert a_t\rVert_1\big)\mathcal L_t + \gamma\,\lVert Z - (ZS)A\rVert_F^2 + \mu\lVert S\rVert_1 + \lambda\lVert L\rVert_F^2,\qquad Z = XL$$
# $A\in\mathbb R^{T\times k}$: row $a_t$ is task t's feedback into the k features ("an asymmetric
# autoencoder": encode features into task predictions ZS, decode back with A). The **deep**
# version (official code) uses a network's penultimate layer $h$, one-vs-rest logits $o=hS+b$, a
# decoder $\hat h = \mathrm{ReLU}(oA+b_A)$, and adds a **size term** $\kappa/\sqrt{N_t/\bar N}$ to each
# task's loss inside the weight (small tasks count as less reliable):
# $$\sum_t \big(1+\alpha\lVert a_t\rVert_1\big)\big(\mathcal L_t + \kappa/\sqrt{N_t/\bar N}\big) + \gamma\,\mathbb E\lVert h-\hat h\rVert^2 + \mu\lVert S\rVert_1 + \tfrac\lambda2\lVert\Theta\rVert^2$$

# %%
print(inspect.getsource(amtfl_objective))

# %% [markdown]
# The deep objective, line by line the formula above:

# %%
print(inspect.getsource(deep_objective))

# %% [markdown]
# ## 3. The synthetic experiment: easy and hard tasks
#
# Twelve regression tasks in 20 dimensions built from 4 latent bases; task t uses bases t mod 4
# and (t+1) mod 4, so **easy and hard tasks share bases**. Tasks 0–5 are easy (noise σ = 0.5),
# tasks 6–11 hard (σ = 4.0); 25 training points per task. The noise levels are the floors an
# oracle would reach: test RMSE 0.5 on the easy and 4.0 on the hard tasks.
#
# **Tuning, the same budget for everyone.** Each method gets nine settings of its own
# hyper-parameters (STL: the ridge; GO-MTL and AMTL: μ and λ; AMTFL: α and γ), chosen by the mean test
# RMSE on a *validation draw* of the task family (seed 1000), which is never scored. Then every
# method is fitted with its chosen setting on the same 3 scored draws (seeds 0, 1, 2).

# %%
t0 = time.perf_counter()
tuned = tune_synthetic()
for m, t in tuned.items():
    edge = f"  (on the grid's edge: {', '.join(t['on_edge'])})" if t["on_edge"] else ""
    print(f"{m:7s} chose {t['chosen']}{edge}")
seeds = [0, 1, 2]
res = synthetic_comparison(seeds, tuned=tuned)
hard = res["hard"]
methods = ["STL", "GO-MTL", "AMTL", "AMTFL", "AMTFL, loss weighting off"]
print(f"\n{'method':26s} {'easy RMSE':>16s} {'hard RMSE':>16s}   (mean over 3 seeds ± Student-t 95% CI of the seed means)")
group = {}
for m in methods:
    easy_means = [r[~hard].mean().item() for r in res[m]]
    hard_means = [r[hard].mean().item() for r in res[m]]
    group[m] = (easy_means, hard_means)
    (e, ec), (h, hc) = mean_ci(easy_means), mean_ci(hard_means)
    print(f"{m:26s} {e:8.3f} ± {ec:5.3f} {h:8.3f} ± {hc:5.3f}")
print(f"{'noise floor':26s} {0.5:8.3f}         {4.0:8.3f}")
worse = {m: [int(((r > s) & hard).sum()) for r, s in zip(res[m], res["STL"])] for m in ("GO-MTL", "AMTL", "AMTFL")}
print(f"hard tasks (of {int(hard.sum())} per seed) on which the method is worse than STL, per seed: {worse}")
outgoing = {k: [(o[~hard].mean().item(), o[hard].mean().item()) for o in res[k]] for k in ("outgoing", "outgoing_off")}
for k, label in (("outgoing", "AMTFL"), ("outgoing_off", "loss weighting off")):
    print(f"mean outgoing feedback ||a_t||_1, {label:18s} (easy, hard) per seed: "
          + "  ".join(f"({e:.3f}, {h:.4f})" for e, h in outgoing[k]))
train = [(r[~hard].mean().item(), r[hard].mean().item()) for r in res["train_rmse"]]
print("AMTFL training RMSE (easy, hard) per seed: " + "  ".join(f"({e:.2f}, {h:.2f})" for e, h in train)
      + f"   ({time.perf_counter() - t0:.0f} s)")
ratio_on = [e / h for e, h in outgoing["outgoing"]]
ratio_off = [e / h for e, h in outgoing["outgoing_off"]]
assert all(r > 5 for r in ratio_on)                          # every seed: the easy tasks give, the hard ones do not
assert all(a > 10 * b for a, b in zip(ratio_on, ratio_off))  # the loss factor, not the l1, makes the asymmetry

# %% [markdown]
# **Reading the numbers** (they are printed above; this paragraph was written from a run with
# these seeds and settings, and the asserts check its mechanism claims on every run).
#
# * **Who gives.** AMTFL's feedback is cleanly asymmetric in every seed: the easy tasks write into
#   the features, the hard tasks almost do not (easy/hard ratio of the outgoing norms above 50 in
#   our run). **Switching the loss weighting off removes this asymmetry**: the ratio falls to about
#   0.5–2, and in two of our three seeds the hard tasks' rows of A are even *larger* than the easy
#   ones' (one seed keeps a weak easy > hard order). So it is the loss factor, not the ℓ1 penalty,
#   that decides who gives; the assert checks the drop of the ratio in every seed.
# * **Accuracy.** Nobody is near the floors: the easy group sits at two to three times its floor
#   (≈ 1.0–1.7 against 0.5) and the hard group well above it (≈ 4.7–6.5 against 4.0; 25 noisy
#   points in 20 dimensions are too few). With every method tuned on the validation draw, AMTFL has the lowest
#   mean RMSE on both groups in our run, but read the intervals: over 3 seeds the Student-t
#   intervals are wide, and differences smaller than them are not an ordering. AMTL, now with its
#   own tuned μ and λ, is close behind AMTFL on the easy group.
# * **Negative transfer.** The line "worse than STL" counts, per seed, the hard tasks on which a
#   multi-task method is worse than learning the task alone. With every method tuned, it was 0 for
#   GO-MTL, AMTL and AMTFL in our seeds; negative transfer shows up with untuned settings (try the
#   widget in §7, which uses the library defaults α = 1, γ = 0.1).
# * **Training fit.** AMTFL's *training* RMSE is printed too: on the easy tasks it is near the noise
#   (≈ 0.5), on the hard tasks well below 4 (the hard tasks overfit their 25 points), which is why
#   their loss still marks them as unreliable here — unlike the deep demo of §5.

# %%
last = res["last"]
fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.1, 1.6]})
for ax, M, title in ((axes[0], last["A"].abs().numpy(), "AMTFL |A| (tasks x features)"),
                     (axes[1], last["A_off"].abs().numpy(), "loss weighting off |A|")):
    im = ax.imshow(M, cmap="viridis", aspect="auto")
    ax.set_ylabel("task (0-5 easy, 6-11 hard)")
    ax.set_xlabel("feature")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax)
im = axes[2].imshow(last["B"].numpy(), cmap="magma", aspect="auto")
axes[2].set_title("AMTL graph B[s, t]: s gives to t", fontsize=9)
axes[2].set_xlabel("receiving task t")
axes[2].set_ylabel("giving task s")
fig.colorbar(im, ax=axes[2])
x = np.arange(12)
w = 0.27
for i, m in enumerate(("STL", "GO-MTL", "AMTFL")):
    axes[3].bar(x + (i - 1) * w, torch.stack(res[m]).mean(0).numpy(), w, label=m)
worse = (torch.stack(res["GO-MTL"]).mean(0) > torch.stack(res["STL"]).mean(0))
for t in np.flatnonzero(worse.numpy()):
    axes[3].annotate("", (t, 0), (t, -0.4), arrowprops=dict(color="red", arrowstyle="-", lw=4))
axes[3].set_xticks(x)
axes[3].set_xlabel("task (red: GO-MTL worse than STL = negative transfer)")
axes[3].set_ylabel("test RMSE (mean of 3 seeds)")
axes[3].legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## 4. Scalability: a T×T graph vs T×k feedback
#
# AMTL's graph has T² entries and its B-step solves one lasso per task; AMTFL's feedback has T·k
# entries and is learned by the same gradient steps as everything else. Time one B-step against
# one AMTFL gradient step as the number of tasks grows (k = 6, d = 20). Our lasso is a plain
# Python coordinate descent, so its absolute time is not the point — its growth is.

# %%
timings = []
for T in (10, 20, 40, 80):
    data_T = synthetic_regression(0, tasks=T, n_train=25)
    W = fit_stl(data_T)
    losses = task_losses(W, data_T.x_train, data_T.y_train)
    t0 = time.perf_counter()
    amtl_b_step(W, losses, 1e-2, 1e-3, iters=5)
    t_b = time.perf_counter() - t0
    L = torch.randn(20, 6, requires_grad=True)
    S = torch.randn(6, T, requires_grad=True)
    A = torch.randn(T, 6, requires_grad=True)
    t0 = time.perf_counter()
    for _ in range(10):
        amtfl_objective(L, S, A, data_T.x_train, data_T.y_train, AMTFLConfig())[0].backward()
    t_a = (time.perf_counter() - t0) / 10
    timings.append((T, t_b, t_a))
    print(f"T = {T:3d}: AMTL B-step {t_b * 1e3:8.1f} ms ({T * T} graph entries) | AMTFL step {t_a * 1e3:6.2f} ms ({T * 6} feedback entries)")
Ts, tb, ta = (np.array(v) for v in zip(*timings))
print(f"growth from T=10 to T=80: AMTL B-step x{tb[-1] / tb[0]:.0f}, AMTFL step x{ta[-1] / ta[0]:.1f}")

# %% [markdown]
# ## 5. The deep part: one-vs-rest glyph classes with imbalanced counts (a mechanism demo)
#
# The paper's deep experiments (e.g. MNIST-Imbalanced: class k gets 200, 180, …, 20 training
# images) report gains concentrated on the **rare** classes. Our laptop analogue: 20 glyph
# classes as 20 one-vs-rest tasks with 14 down to 2 training images, an MLP trunk (196-256-128) on
# 14×14 glyphs, the official code's α = 0.1, γ = 0.01, κ = 10⁻³, and the symmetric multi-task
# network (same trunk and heads, no feedback) as the baseline; plus the remedy our notes suggest,
# a stronger size term (κ = 0.1). Five seeds precomputed by `tutor.experiments.amtfl` (command
# below); test error per class against its number of training images.
#
# Small runs of this kind did **not** reproduce the paper's gain on rare classes, and we say so up
# front. The reason is instructive: with so few images the trunk memorises the training set, every
# task's training loss goes to ≈ 0, and the loss stops being a reliability signal.

# %%
saved = load_results(RESULTS.name)     # checks the SHA-256 in data/results/SHA256SUMS
print(f"command: {saved['command']} ({saved['date']}, torch {saved['torch']})")
counts = np.array(saved["counts"])
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
summary = {}
for name, errs in saved["errors"].items():
    e = np.array(errs)                                               # (seeds, classes)
    per_count = {c: e[:, counts == c].mean() for c in sorted(set(counts))}
    axes[0].plot(list(per_count), list(per_count.values()), marker="o", label=name)
    freq, rare = e[:, counts >= 9].mean(1), e[:, counts <= 3].mean(1)
    summary[name] = (e.mean(1), freq, rare)
    print(f"{name:24s} error: all {e.mean():.3f}  frequent (>= 9 images) {freq.mean():.3f}  rare (<= 3 images) {rare.mean():.3f}")
axes[0].set_xlabel("training images of the class")
axes[0].set_ylabel("test error (5 seeds)")
axes[0].legend(fontsize=8)
axes[0].grid(alpha=0.3)
for name, outs in saved["outgoing"].items():
    o = np.array(outs).mean(0)
    axes[1].scatter(counts, o, label=name)
axes[1].set_xlabel("training images of the class")
axes[1].set_ylabel("outgoing feedback ||a_t||_1")
axes[1].legend(fontsize=8)
fig.tight_layout()
base = summary["symmetric MT-net"]
for name in ("Deep-AMTFL (official)", "Deep-AMTFL (kappa=0.1)"):
    d_rare = summary[name][2] - base[2]
    m, ci = mean_ci(d_rare)
    print(f"{name} - symmetric on rare classes, paired over seeds: {m:+.3f} ± {ci:.3f} error")

# %% [markdown]
# **What showed.** A negative paired difference on the rare classes would be the paper's claim; the
# printed differences are not negative. With the official hyper-parameters the feedback forms only
# a weak asymmetry by class size and the rare-class error is no better than the symmetric
# network's (the difference is inside its interval). The stronger size term (κ = 0.1) shapes A by
# class size much more clearly (right panel) — the mechanism the paper describes — but **the remedy
# hurt**: its mean error is higher than the symmetric network's on the rare classes *and* on the
# frequent ones (compare the printed means; on the rare classes the paired difference is positive
# but inside its Student-t interval over 5 seeds). We do not claim the paper's deep result here.
# Remedies we did **not** try for lack of time: a held-out loss as the reliability signal, and the
# real MNIST-Imbalanced protocol (it needs MNIST on disk).
#
# A live fit of one seed (fewer steps) to look inside the model:

# %%
deep_data = imbalanced_glyphs(0, classes=len(DEEP_COUNTS), counts=DEEP_COUNTS)
trunk, params = fit_deep(deep_data.x_train, deep_data.y_train, deep_data.counts, DeepConfig(kappa=0.1, steps=600), seed=0)
err = per_class_error(trunk, params, deep_data)
with torch.no_grad():
    h = trunk.embed(params["trunk"], deep_data.x_train)
    o = h @ params["S"] + params["b_S"]
    h_hat = torch.relu(o @ params["A"] + params["b_A"])
rel = ((h - h_hat).pow(2).sum(1) / h.pow(2).sum(1)).mean().item()
train_losses = torch.nn.functional.binary_cross_entropy_with_logits(
    o, torch.nn.functional.one_hot(deep_data.y_train, len(DEEP_COUNTS)).float(), reduction="none").mean(0)
print(f"relative reconstruction error of the features from the task logits: {rel:.2f}")
print(f"training loss per task after {600} steps: max {train_losses.max():.4f}, mean {train_losses.mean():.4f} "
      "(every task memorised: the loss no longer tells reliable tasks from unreliable ones)")
print("outgoing ||a_t||_1 by class size:", {int(c): round(v, 2) for c, v in zip(deep_data.counts, params["A"].detach().abs().sum(1).tolist())})
assert torch.isfinite(err).all() and rel < 1.0
assert train_losses.max() < 0.05                                    # the premise of the explanation above

# %% [markdown]
# ## 6. Paper results
#
# The papers' numeric tables were not available to our notes, so **no numbers are quoted here**.
# What the papers claim, qualitatively (from their abstracts and secondary summaries, not verified
# against the PDFs): on the synthetic data only the easy tasks end up with outgoing feedback, and
# AMTFL estimates bases and task parameters more accurately than GO-MTL and AMTL; on the shallow
# real data sets (AWA, MNIST, School, Room) AMTFL is best overall, with School a near tie won by
# GO-MTL; in the deep experiments (MNIST-Imbalanced, CUB-200, AWA, ImageNet-Small) Deep-AMTFL beats
# the CNN, the multi-task CNN and Deep-AMTL, with the largest gains on the imbalanced set.
#
# ## 7. Widget: noise levels and group sizes
#
# Change the noise of the easy and hard tasks, the number of hard tasks and the training points
# per task; the models refit (≈ 5 s). Top: AMTFL's |A| and AMTL's graph B. Bottom: per-task RMSE of
# STL, GO-MTL and AMTFL; red marks tasks where GO-MTL is worse than STL (negative transfer).
# Toggle the loss weighting to see the asymmetry vanish. The widget refits with the library's
# default hyper-parameters (α = 1, γ = 0.1, 500 steps), not the tuned ones of §3, so that a redraw
# stays fast; its numbers are for exploring, not for comparing methods.

# %%
def draw_refit(sigma_easy=0.5, sigma_hard=4.0, n_hard=6, n_train=25, loss_weighting=True):
    data = synthetic_regression(0, sigma_easy=sigma_easy, sigma_hard=sigma_hard, n_hard=n_hard, n_train=n_train)
    cfg = AMTFLConfig(steps=500, loss_weighting=loss_weighting)
    stl, go, am = fit_stl(data), fit_gomtl(data, cfg), fit_amtfl(data, cfg)
    B = fit_amtl(data, cfg, rounds=3)["B"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), gridspec_kw={"height_ratios": [1, 1]})
    axes[0, 0].imshow(am["A"].abs().numpy(), cmap="viridis", aspect="auto")
    axes[0, 0].set_title(f"AMTFL |A|, loss weighting {'on' if loss_weighting else 'off'} (rows: tasks)", fontsize=9)
    axes[0, 1].imshow(B.numpy(), cmap="magma", aspect="auto")
    axes[0, 1].set_title("AMTL graph B[s, t]", fontsize=9)
    ax = plt.subplot(2, 1, 2)
    axes[1, 0].remove()
    axes[1, 1].remove()
    x = np.arange(data.num_tasks)
    r = {m: rmse(W, data) for m, W in (("STL", stl), ("GO-MTL", go["W"]), ("AMTFL", am["W"]))}
    for i, (m, v) in enumerate(r.items()):
        ax.bar(x + (i - 1) * 0.27, v.numpy(), 0.27, label=m)
    for t in np.flatnonzero((r["GO-MTL"] > r["STL"]).numpy()):
        ax.axvspan(t - 0.45, t + 0.45, color="red", alpha=0.12)
    ax.set_xticks(x)
    ax.set_xlabel(f"task (first {data.num_tasks - n_hard} easy, last {n_hard} hard)")
    ax.set_ylabel("test RMSE")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


widgets.interactive(draw_refit, sigma_easy=widgets.slider(0.5, 0.1, 2.0), sigma_hard=widgets.slider(4.0, 0.5, 8.0),
                    n_hard=widgets.slider(6, 0, 11), n_train=widgets.slider(25, 10, 100),
                    loss_weighting=widgets.toggle(True))

# %% [markdown]
# ## 8. Exercises
#
# ### Exercise 1 — the asymmetric weights
# Write `my_weighted_fit(A, losses, alpha)` returning $\sum_t (1+\alpha\lVert a_t\rVert_1)\,\mathcal L_t$
# for `A (T, k)` and `losses (T,)`. Mind the axis: $a_t$ is a **row**.

# %% tags=["exercise"]
def my_weighted_fit(A, losses, alpha):
    # YOUR CODE HERE
    raise NotImplementedError


# %% tags=["solution"]
def my_weighted_fit(A, losses, alpha):
    return ((1 + alpha * A.abs().sum(1)) * losses).sum()


# %% tags=["check"]
_g = torch.Generator().manual_seed(0)
_cases = [(torch.randn(4, 4, generator=_g), torch.rand(4, generator=_g), 0.5),
          (torch.randn(3, 6, generator=_g), torch.rand(3, generator=_g), 1.0)]
result_1 = checks.check_function(my_weighted_fit, lambda A, l, a: ((1 + a * A.abs().sum(1)) * l).sum(), _cases,
                                 hint="||a_t||_1 sums |A| over the feature axis (dim 1), one value per task.")

# %% tags=["solution"]
assert result_1

# %% [markdown]
# ### Exercise 2 — the size term
# Write `my_size_term(counts, kappa)` = $\kappa/\sqrt{N_t/\bar N}$. Before running the check:
# what is it when all tasks have the same size?

# %% tags=["exercise"]
def my_size_term(counts, kappa):
    # YOUR CODE HERE
    raise NotImplementedError


# %% tags=["solution"]
def my_size_term(counts, kappa):
    counts = counts.float()
    return kappa / torch.sqrt(counts / counts.mean())


# %% tags=["check"]
result_2 = checks.check_function(my_size_term, size_term, [(torch.tensor([200, 100, 20]), 1e-3), (torch.tensor([5, 5]), 0.1)],
                                 hint="Divide each count by the mean count, take the square root, divide kappa by it.")

# %% tags=["solution"]
assert result_2

# %% [markdown]
# ## Summary
# * Symmetric sharing lets noisy tasks corrupt what clean tasks use (negative transfer).
# * AMTL penalises each task's *outgoing* transfer in proportion to its loss; AMTFL does the same
#   for each task's feedback into shared *features* (T×k instead of T×T), via an asymmetric
#   autoencoder from task predictions back to features.
# * On the synthetic problem the learned feedback is cleanly asymmetric (easy tasks give);
#   switching off the loss weighting reverses the asymmetry (the hard tasks then give more).
#   With every method tuned on validation draws, see §3 for which differences exceed the seed spread.
# * The loss is the reliability signal — when training losses collapse to zero (memorisation in a
#   small deep problem), the signal collapses too; our deep demo did not reproduce the paper's
#   rare-class gain.
#
# ## References
# * H. B. Lee, E. Yang, S. J. Hwang. Deep Asymmetric Multi-task Feature Learning. ICML 2018. Code: github.com/haebeom-lee/amtfl.
# * G. Lee, E. Yang, S. J. Hwang. Asymmetric Multi-task Learning based on Task Relatedness and Loss. ICML 2016.
# * A. Kumar, H. Daumé III. Learning Task Grouping and Overlap in Multi-task Learning (GO-MTL). ICML 2012.
# * A. Argyriou, T. Evgeniou, M. Pontil. Convex Multi-task Feature Learning. Machine Learning, 2008.
