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
# # 07 · Sequential Reptile: aligning gradients *between* tasks through one trajectory
#
# *Seanie Lee, Hae Beom Lee, Juho Lee, Sung Ju Hwang. Sequential Reptile: Inter-Task Gradient
# Alignment for Multilingual Learning. ICLR 2022 (arXiv:2110.02600).*
#
# **Learning goals.** After this notebook you can
# 1. explain negative transfer and forgetting when one pretrained model is fine-tuned on many
#    languages at once, and why the *agreement* of the per-language gradients matters;
# 2. write Sequential Reptile — one inner trajectory whose consecutive steps use batches of
#    different tasks, then a Reptile interpolation — next to its baselines (MTL, parallel Reptile,
#    PCGrad, GradVac);
# 3. derive, by a second-order expansion, the term that rewards inter-task gradient alignment, check
#    numerically that the expansion is right (residual ∝ α²), and state its caveats;
# 4. see the mechanism pick, among equally good MTL solutions, the one where the tasks agree
#    (two toys), and measure whether it shows on a real multilingual problem.
#
# **Prerequisites.** Notebook 00 (Reptile); Taylor expansions, Hessians, inner products.
#
# **Time.** Reading ≈ 35 min. Compute ≈ 1 min on 2 CPU cores (`TUTOR_FULL=1` for finer toy grids and
# every method in the live multilingual run).
#
# **What is ours.** No official code and no full paper text were available when this notebook was
# written. Verified facts (authors' slides, a reproducibility-audit page): multilingual BERT fine-tuned
# with AdamW (inner lr 3·10⁻⁵), TyDi-QA GoldP in 9 languages (ar bn en fi id ko ru sw te), WikiAnn NER,
# MNLI → 14 XNLI languages zero-shot, the MTL objective is the *sum* of task losses, PCGrad / GradVac /
# RecAdam as related methods. **Ours:** the task sampler (concatenated random permutations), plain SGD
# in the toys, K, η, the MTL step size in the toys, both toys, and the whole small multilingual
# experiment in Part 4. We quote no number from the paper.

# %%
import hashlib
import inspect
import itertools
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import tutor
from tutor import checks, widgets
from tutor.experiments import load_results
from tutor.experiments import seq_reptile as cldr_exp
from tutor.papers.seq_reptile import (
    InnerOptimizer,
    conflict_energy,
    cosine_matrix,
    cyclic_order,
    expansion_terms,
    meta_gradient,
    oracle,
    pair_counts,
    pair_inner_products,
    product_tasks,
    quadratic_tasks,
    random_order,
    run_toy,
    seq_reptile_step,
    sequential_trajectory,
    surrogate_loss,
    task_gradients,
    wells_tasks,
)
from tutor.train import mean_ci

FULL = os.environ.get("TUTOR_FULL", "0") == "1"
tutor.configure_threads()
tutor.seed_everything(0)
D = torch.float64
COLORS = {"MTL": "tab:blue", "Seq-Reptile": "tab:red", "Parallel Reptile": "tab:green", "PCGrad": "tab:purple",
          "GradVac": "tab:brown", "STL": "tab:gray", "seq_mtl": "tab:orange", "seq_reptile_eta1": "tab:pink",
          "mtl_small_batch": "tab:cyan", "seq_reptile_sgd": "tab:olive"}

# %% [markdown]
# ## 1. The idea
#
# Fine-tune a multilingual model (mBERT) on question answering in nine languages at once. Plain
# multi-task learning (MTL) descends the summed loss Σ_t L_t: each step adds up the per-language
# gradients g_t. When they point against each other, the sum is a compromise that helps no language
# much (**negative transfer**), and it drags the weights away from what pretraining taught
# (**forgetting**, measured as a rising masked-LM loss). Gradient-surgery methods (PCGrad, GradVac) edit
# the gradients at every step so that they conflict less.
#
# Sequential Reptile instead changes the *trajectory*. Start from the shared weights φ, take K inner
# steps, each on a batch of **a different task** (in random order), and move φ part of the way towards
# where the trajectory ended:
#
# $$\theta_0=\phi,\qquad \theta_k=\theta_{k-1}-\alpha\,\nabla L_{t_k}(\theta_{k-1}),\qquad
# \phi\leftarrow\phi-\eta\,(\phi-\theta_K).$$
#
# A step on language *b* right after a step on language *a* sees the gradient of *b* at a point that
# *a* has already moved; the end point therefore depends on how the two gradients interact. Section 3
# shows that the outer step descends the MTL loss **plus a reward for large inner products between the
# gradients of different tasks**. Ordinary ("parallel") Reptile runs one trajectory per task and
# averages the end points: it never mixes tasks inside a trajectory and has no such term.

# %% [markdown]
# ## 2. The algorithm in code
# A task family is a *gradient oracle* `grad_fn(theta (..., n, dim), tasks (n,))`; every function
# works on flat parameter vectors with any leading "starts" dimensions, so the toys run every start at
# once. The inner optimiser is pluggable (`InnerOptimizer`: SGD here, AdamW in Part 4).

# %%
print(inspect.getsource(sequential_trajectory))
print(inspect.getsource(seq_reptile_step))

# %% [markdown]
# ## 3. Where the alignment term comes from
#
# Write g_k = ∇L_{t_k}(φ) and H_k = ∇²L_{t_k}(φ), both at φ, and MG = (φ − θ_K)/α for the direction
# of the outer step. Expanding each inner gradient around φ,
# ∇L_{t_k}(θ_{k−1}) = g_k + H_k(θ_{k−1} − φ) + O(α²) = g_k − α H_k Σ_{j<k} g_j + O(α²), so
#
# $$\mathrm{MG}=\sum_k g_k-\alpha\sum_{j<k}H_k\,g_j+O(\alpha^2).$$
#
# Because ∇⟨g_j, g_k⟩ = H_j g_k + H_k g_j and a **random** order makes (j, k) and (k, j) equally
# likely, the average over orders is a gradient:
#
# $$\mathbb E[\mathrm{MG}]=\nabla_\phi\Big[\sum_k L_{t_k}(\phi)-\frac{\alpha}{2}\sum_{j<k}\langle g_j,g_k\rangle\Big]+O(\alpha^2).$$
#
# Pairs with t_j ≠ t_k are the **inter-task** terms (the claimed alignment); pairs with t_j = t_k are
# the **intra-task** terms that ordinary Reptile also has. For K = T (one batch per task),
# Σ_{j<k}⟨g_j, g_k⟩ = ½(‖Σ_t g_t‖² − Σ_t‖g_t‖²), so at a point where MTL is stationary (Σ_t g_t = 0)
# the surrogate is the MTL loss **plus (α/4) Σ_t ‖g_t‖²**: a penalty on every task's own gradient.
# We call Σ_t ‖g_t‖² the **conflict energy**; it is zero only where every task is stationary at once.
#
# **Caveats** (keep them in mind for every plot below):
# 1. The order must be random: with a fixed cyclic order the (j, k) and (k, j) terms differ and the
#    clean gradient form is lost.
# 2. η = 1 is plain sequential SGD over single-task batches: the alignment comes from consecutive
#    single-task steps themselves; the interpolation only damps them.
# 3. With two tasks, every MTL stationary point with non-zero task gradients has cos(g₁, g₂) = −1, so
#    the cosine *at the end* says nothing. We report the conflict energy at the end and the cosine
#    *during* training.
# 4. MTL with mixed batches has the implicit term −(α/2)·C(K,2)·‖Σg‖², which vanishes wherever MTL is
#    stationary: **MTL is indifferent, among its minima, to how much the tasks disagree.**

# %% [markdown]
# ## 4. Part 1 — does the expansion hold? (residual ∝ α²)
# Random positive-definite quadratics, L_t = ½(φ − c_t)ᵀA_t(φ − c_t), 3 tasks in 5 dimensions, the
# fixed order (0, 2, 1, 0, 1, 2). `expansion_terms` computes Σ_k g_k and the O(α) term with exact
# Hessian-vector products, split into its inter- and intra-task parts; the exact MG comes from running
# the trajectory. If the expansion is right, the residual shrinks 4× for every halving of α.

# %%
quad_losses, quad_A, quad_c = quadratic_tasks(3, 5, torch.Generator().manual_seed(0))
quad = oracle(quad_losses, 3)
phi_q = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=D)
ORDER_Q = torch.tensor([0, 2, 1, 0, 1, 2])
terms = expansion_terms(quad, phi_q, ORDER_Q)


def expansion_residuals(grad_fn, phi, order, alphas, terms):
    out = []
    for a in alphas:
        theta, _ = sequential_trajectory(grad_fn, phi, order, InnerOptimizer("sgd", a))
        pred = terms["zeroth"] + a * (terms["inter"] + terms["intra"])
        out.append((meta_gradient(phi, theta, a) - pred).norm().item())
    return np.array(out)


alphas = np.array([0.04, 0.02, 0.01, 0.005, 0.0025])
res = expansion_residuals(quad, phi_q, ORDER_Q, alphas, terms)
slope = np.polyfit(np.log(alphas), np.log(res), 1)[0]
for a, r in zip(alphas, res):
    print(f"alpha = {a:<7} residual = {r:.3e}")
print(f"fitted slope {slope:.3f};  |inter-task term| = {terms['inter'].norm():.3f}, "
      f"|intra-task term| = {terms['intra'].norm():.3f}")
fig, ax = plt.subplots(figsize=(4.5, 3.2))
ax.loglog(alphas, res, "o-", label="‖MG − first-order prediction‖")
ax.loglog(alphas, res[0] * (alphas / alphas[0]) ** 2, "k--", label="slope 2")
ax.set_xlabel("inner learning rate α")
ax.legend(fontsize=8)
plt.show()

# %%
assert 1.9 < slope < 2.1                                    # the expansion is correct to first order in alpha
assert terms["inter"].norm() > 0.1 * terms["zeroth"].norm() / 5    # and the inter-task term is not negligible

# %% [markdown]
# The permutation average of the second-order term is exactly half the gradient of the pairwise
# inner products (for quadratics, whose Hessians are constant). We average over all 6! / (2!·2!·2!)
# distinct orders of the same multiset:

# %%
orders = sorted(set(itertools.permutations(ORDER_Q.tolist())))
avg = sum(-(lambda t: t["inter"] + t["intra"])(expansion_terms(quad, phi_q, torch.tensor(o))) for o in orders)
avg = avg / len(orders)
x = phi_q.clone().requires_grad_()
xe = x.expand(3, 5)
(gq,) = torch.autograd.grad(quad_losses(xe, torch.arange(3)).sum(), xe, create_graph=True)
pairs = pair_inner_products(gq, pair_counts(ORDER_Q, 3))
(half_grad,) = torch.autograd.grad(0.5 * (pairs["inter"] + pairs["intra"]), x)
print(f"{len(orders)} orders; max |average - half gradient| = {(avg - half_grad).abs().max():.2e}")
assert torch.allclose(avg, half_grad, atol=1e-12)

# %% [markdown]
# ## 5. Part 2 — Toy A, "valley selection"
# Two parameters (x, y), one scalar model f = x·y, two tasks pulling it to different targets:
# L_t = ½(xy − c_t)², c = (1, 3). Every point of the hyperbola xy = 2 minimises the MTL loss, and
# along it the two task gradients g_t = (xy − c_t)(y, x) cancel exactly. Gradient flow on the MTL
# loss conserves x² − y² (d/dt(x² − y²) = 0), so **where MTL stops is decided by the start**. The
# conflict energy along the valley is Σ_t‖g_t‖² = 2(x² + y²), smallest at x = y = √2.
#
# Settings (ours): Seq-Reptile α = 0.05, K = 2 (one step per task, random order), η = 0.5, 4000 outer
# steps; MTL does one full-batch step of size ηαK/T = 0.025 on Σ_t g_t per outer step, so both move φ
# by the same amount per outer step to first order. Parallel Reptile uses K/T = 1 step per task.

# %%
toyA = product_tasks((1.0, 3.0))
STARTS_A = torch.tensor([[4.0, 0.2], [0.3, 3.0], [2.5, 0.5]], dtype=D)
runs_A = {m: run_toy(m, toyA, STARTS_A, 2, 4000, alpha=0.05, K=2, eta=0.5)
          for m in ("MTL", "Seq-Reptile", "Parallel Reptile", "PCGrad")}
print(f"{'start':>12} | " + " | ".join(f"{m:^30}" for m in runs_A))
for i, s in enumerate(STARTS_A.tolist()):
    cells = []
    for r in runs_A.values():
        x_, y_ = r.final[i].tolist()
        cells.append(f"({x_:.3f}, {y_:.3f}) x²−y²={x_**2 - y_**2:+6.2f} E={r.energy[-1, i]:.2f}")
    print(f"{str(tuple(s)):>12} | " + " | ".join(f"{c:^30}" for c in cells))

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
xs, ys = torch.meshgrid(torch.linspace(0.05, 4.5, 120, dtype=D), torch.linspace(0.05, 4.5, 120, dtype=D),
                        indexing="xy")
grid = torch.stack([xs, ys], -1)
mtl_loss = toyA(grid.unsqueeze(-2).expand(120, 120, 2, 2), torch.arange(2)).sum(-1)
axes[0].contourf(xs, ys, torch.log1p(mtl_loss), 30, cmap="Greys")
for m in ("MTL", "Seq-Reptile"):
    for i in range(3):
        p = runs_A[m].phis[:, i]
        axes[0].plot(p[:, 0], p[:, 1], color=COLORS[m], lw=1.5, label=m if i == 0 else None)
axes[0].plot(STARTS_A[:, 0], STARTS_A[:, 1], "ko", ms=4)
axes[0].set(title="paths on the MTL loss (log scale)", xlabel="x", ylabel="y")
axes[0].legend(fontsize=8)
for m, r in runs_A.items():
    b = r.phis[..., 0] ** 2 - r.phis[..., 1] ** 2
    axes[1].plot(b, color=COLORS[m], lw=1, label=m)
    axes[2].semilogy(r.energy, color=COLORS[m], lw=1)
axes[1].set(title="balance x² − y²", xlabel="outer step")
axes[1].legend(fontsize=8)
axes[2].set(title="conflict energy Σ‖g_t‖²", xlabel="outer step")
plt.tight_layout()
plt.show()

# %%
bal = {m: r.final[:, 0] ** 2 - r.final[:, 1] ** 2 for m, r in runs_A.items()}
b0 = STARTS_A[:, 0] ** 2 - STARTS_A[:, 1] ** 2
assert (bal["MTL"] - b0).abs().max() < 0.1                   # MTL (nearly) conserves x² − y² ...
assert bal["Seq-Reptile"].abs().max() < 1e-2                 # ... Seq-Reptile balances it from every start
assert (runs_A["Seq-Reptile"].energy[-1] < runs_A["MTL"].energy[-1]).all()
assert ((runs_A["Seq-Reptile"].final.prod(-1) - 2).abs() < 0.05).all()   # still (O(alpha)-near) the valley

# %% [markdown]
# **Reading.** MTL and parallel Reptile stop where they meet the valley, with x² − y² what it was at the
# start. Sequential Reptile slides *along* the valley to x = y ≈ 1.41, the point of least conflict
# energy (≈ 8.0 against MTL's 14–33), as the (α/4)Σ‖g_t‖² term predicts. Its end point sits an O(α)
# distance off the valley (xy ≈ 1.99): it minimises the surrogate, not the MTL loss. PCGrad does
# something else again: here the two gradients are exactly collinear, so once they conflict PCGrad
# projects *both* to zero and stops — off the valley (xy < 2), wherever the conflict began.
#
# Setting η = 1 makes this plain sequential SGD over the alternating single-task batches. The next cell
# runs it: it balances x² − y² from every start too (the alignment term comes from the consecutive
# single-task steps; the interpolation only damps them). Try other settings in the widget (Section 8).

# %%
seq_sgd_A = run_toy("Seq-Reptile", toyA, STARTS_A, 2, 4000, alpha=0.05, K=2, eta=1.0)
bal_sgd = seq_sgd_A.final[:, 0] ** 2 - seq_sgd_A.final[:, 1] ** 2
print("eta = 1 (sequential SGD): x² − y² at the end", [round(b, 4) for b in bal_sgd.tolist()],
      "; conflict energy", [round(e, 2) for e in seq_sgd_A.energy[-1].tolist()])
assert bal_sgd.abs().max() < 1e-2 and (seq_sgd_A.energy[-1] < runs_A["MTL"].energy[-1]).all()

# %% [markdown]
# ## 6. Part 3 — Toy B, "consensus well vs compromise well"
# Three tasks in 2-D. Each has a shared shallow Gaussian well at A = (0, 0) (depth 1, σ = 1) and a
# private deep well (depth 2, σ = 0.7) at distance 1 from B = (4, 0), at angles 0°, 120°, 240°. Near B
# the three gradients cancel but are individually large — a compromise. We start every method from a
# grid of points and record where it ends and the final conflict energy. (Small prototypes saw **no
# basin changes** between methods; we do not promise any.)

# %%
toyB = wells_tasks(3)
nx, ny = (33, 25) if FULL else (17, 13)
STARTS_B = torch.cartesian_prod(torch.linspace(-2, 6, nx, dtype=D), torch.linspace(-3, 3, ny, dtype=D))
runs_B = {m: run_toy(m, toyB, STARTS_B, 3, 300, alpha=0.3, K=12, eta=0.5)
          for m in ("MTL", "Seq-Reptile", "Parallel Reptile")}
in_A = {m: r.final.norm(dim=-1) < 1.0 for m, r in runs_B.items()}
near_B = {m: (r.final - torch.tensor([4.0, 0.0], dtype=D)).norm(dim=-1) < 1.5 for m, r in runs_B.items()}
energy_B = {m: r.energy[-1][near_B[m]].mean().item() for m, r in runs_B.items()}
for m, r in runs_B.items():
    print(f"{m:>17}: {in_A[m].float().mean():.0%} of starts end in A; conflict energy of the ends near B "
          f"{energy_B[m]:.3f}; mean inter-task cosine during training {r.cosine[1:].mean():+.3f}")

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
gx, gy = torch.meshgrid(torch.linspace(-2, 6, 90, dtype=D), torch.linspace(-3, 3, 70, dtype=D), indexing="xy")
gB = torch.stack([gx, gy], -1)
lossB = toyB(gB.unsqueeze(-2).expand(70, 90, 3, 2), torch.arange(3)).sum(-1)
for ax, (m, r) in zip(axes, runs_B.items()):
    ax.contourf(gx, gy, lossB, 30, cmap="Greys")
    for i in range(0, STARTS_B.shape[0], 7):
        ax.plot(r.phis[:, i, 0], r.phis[:, i, 1], color=COLORS[m], lw=0.7)
    ax.plot(r.final[:, 0], r.final[:, 1], "k.", ms=3)
    ax.set(title=m, xlim=(-2, 6), ylim=(-3, 3))
for m, r in runs_B.items():
    axes[3].plot(r.cosine.mean(1), color=COLORS[m], label=m)
axes[3].set(title="mean inter-task cosine (all starts)", xlabel="outer step")
axes[3].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
assert energy_B["Seq-Reptile"] < energy_B["MTL"] < energy_B["Parallel Reptile"]   # conflict-energy ordering
frac_A = {m: v.double().mean().item() for m, v in in_A.items()}
assert max(frac_A.values()) - min(frac_A.values()) < 0.1                           # the basins hardly change

# %% [markdown]
# **Reading.** The basins hardly change (compare the fractions ending in A). Among the ends near the
# compromise well B, Sequential Reptile's have the lowest conflict energy, MTL's more, parallel
# Reptile's the most: parallel Reptile's fixed point is the average of three per-task end points,
# which lies between the private wells and is *not* an MTL stationary point. The mean cosine during
# training is printed above; we draw no conclusion from it (three tasks, one scalar summary); the
# regime map at the end varies how far apart the private wells are.

# %% [markdown]
# ## 7. Part 4 — a real multilingual experiment, offline
#
# Does any of this show on real languages at a laptop scale? Small prototypes on synthetic
# "languages" saw no downstream gain (notes §6.4). Here the data are real: the CLDR locale data shipped
# inside `babel` names ≈ 295 territories, 400–660 languages and 170–300 currencies **in each
# language** (`tutor/data/cldr.py`).
#
# * **"Multilingual model":** a character-level convolutional encoder pretrained by masked-character
#   prediction on the names of 41 locales, with 10% of every locale's names held out: 122k parameters
#   with its masked-character head, of which **61k are fine-tuned** (embedding, convolutions and a new
#   3-class typing head; the masked-character head stays fixed to measure forgetting).
#   The pretraining was run once by `python -m tutor.experiments.seq_reptile pretrain` (≈ 1 min on one
#   core) and ships as `data/checkpoints/seq_reptile_mlm.pt` (500 kB, SHA-256 below).
# * **Tasks:** entity typing — *is this string the name of a territory, a language or a currency?* — in
#   the 9 TyDi-QA languages, 32 names per class to train on, 16 to validate, 48 to test.
# * **What we measure:** per-language test accuracy; forgetting (the held-out masked-character loss
#   after fine-tuning; uniform guessing over the 937 characters scores ln 937 = 6.84 nats, so a loss
#   above that is saturated); the agreement of the per-language gradients at 9 points of every run,
#   measured on **class-balanced validation names** (16 per class and language, the same at every
#   probe: `probe_batch`) — the mean pairwise cosine of the full gradient and of the encoder part only,
#   the mean pairwise inner product, the conflict energy Σ_t‖g_t‖² — next to the training loss. Besides
#   the paper's quantities, zero-shot accuracy on 8 languages never fine-tuned on (de es hi tr vi el fa
#   ta); ours is *multi-source* (one model trained on 9 languages, tested on 8 others), the paper's is
#   MNLI → XNLI from one source language.
# * **Equal gradient budget, unequal updates.** Every run computes 1800 mini-batch gradients of 16
#   names (the same names seen), but MTL, PCGrad and GradVac combine 9 of them per step (200 AdamW
#   updates of 144 names) while Sequential Reptile makes 1800 inner updates of 16 names and 50
#   interpolations (K = 36, 4 per language, η = 0.5; the table prints every run's counts).
# * **Controls** that take Sequential Reptile apart: `seq_mtl` — single-language AdamW steps on **the
#   same batches in the same order**, one Adam state, no interpolation; `seq_reptile_eta1` — η = 1
#   (Adam still reset every trajectory), so it differs from Seq-Reptile *only* in the interpolation;
#   `mtl_small_batch` — 1800 AdamW updates, each on 16 names pooled across the languages
#   (Seq-Reptile's update count; MTL sums one batch of 16 per language per update);
#   `seq_reptile_sgd` — a **plain SGD** inner loop, the algorithm Parts 1–3 analyse (Seq-Reptile,
#   `seq_reptile_eta1` and parallel Reptile run AdamW with the Adam state reset at every trajectory, as
#   the paper fine-tunes mBERT with AdamW, so each trajectory's first step is lr·sign(g); `seq_mtl`
#   keeps one Adam state).
# * **Tuning.** Every method's learning rate was chosen by mean validation accuracy over two tuning
#   seeds (100, 101; never scored) from the same three-value half-decade grid (AdamW 3e-3 … 3e-2, SGD
#   0.1 … 1), widened whenever the choice sat on an edge; no choice ends on an edge (printed below).
#
# The multi-seed results were produced by the package's own driver; we read them, check their
# checksum, and recompute every number below from the per-seed runs. Then we rerun seed 0 live.

# %%
ROOT = Path(tutor.__file__).resolve().parents[1]
CKPT_SHA256 = "a616b4f641dad8d7622e9547072ee90d78a4bccbcbda2102cdace9cb5fa9d1f4"   # also in data/README.md
assert hashlib.sha256(cldr_exp.CHECKPOINT.read_bytes()).hexdigest() == CKPT_SHA256, "checkpoint changed"
saved = load_results("seq_reptile.json")          # verifies the SHA-256 in data/results/SHA256SUMS
print("results:", saved["command"], "|", saved["date"], "| torch", saved["torch"])
SEEDS = [str(s) for s in saved["seeds"]]
METHODS = saved["methods"]
SHARED = [m for m in METHODS if m != "STL"]        # one shared model (STL trains one per language)
tuning = saved["tuning"]
print("learning rate chosen on validation names (tuning seeds", tuning["seeds"], "):", tuning["chosen"])
print("still on the edge of its grid:", [m for m, e in tuning["on_edge"].items() if e] or "none")
UNIFORM = math.log(937)                           # masked-character loss of uniform guessing (nats)


def per_seed(method, key, runs=None):
    runs = saved["runs"] if runs is None else runs
    return [runs[s][method][key] for s in SEEDS]


def fmt(values, scale=100):
    m, ci = mean_ci(values)
    return f"{m * scale:6.1f} ± {ci * scale:4.1f}"


def table(runs, methods):
    print(f"{'method':>17} | {'accuracy (9)':>13} | {'zero-shot (8)':>13} | {'MLM loss after':>14} | "
          f"{'updates':>7} | {'outer':>5}")
    for m in methods:
        r0 = runs[SEEDS[0]][m]
        zs = fmt(per_seed(m, "mean_zero_shot", runs)) if m != "STL" else "n/a".rjust(13)
        print(f"{m:>17} | {fmt(per_seed(m, 'mean_accuracy', runs)):>13} | {zs:>13} | "
              f"{fmt(per_seed(m, 'mlm_after', runs), 1):>14} | {r0['updates']:7d} | {r0['outer_updates']:5d}")


print(f"\n{len(SEEDS)} seeds, mean ± 95% Student-t CI over seeds; every run computes {saved['config']['budget']} "
      f"mini-batch gradients; uniform guessing scores {UNIFORM:.2f} nats of masked-character loss")
table(saved["runs"], METHODS)


# %%
def paired(key, a, b, runs=None):
    """a − b over seeds, paired: (mean, 95% Student-t half-width)."""
    return mean_ci([x - y for x, y in zip(per_seed(a, key, runs), per_seed(b, key, runs))])


def excludes_zero(mc):
    return abs(mc[0]) > mc[1]


def wins(a, b, key="mean_accuracy", runs=None):
    return sum(x > y for x, y in zip(per_seed(a, key, runs), per_seed(b, key, runs)))


print("Seq-Reptile − baseline, paired over seeds (points; mean ± 95% t-CI; seeds where Seq-Reptile is ahead)")
for m in METHODS:
    if m != "Seq-Reptile":
        acc = paired("mean_accuracy", "Seq-Reptile", m)
        zs = "" if m == "STL" else "   zero-shot {:+.2f} ± {:.2f}".format(*(100 * v for v in paired("mean_zero_shot", "Seq-Reptile", m)))
        print(f"{m:>17}: accuracy {100 * acc[0]:+.2f} ± {100 * acc[1]:.2f} ({wins('Seq-Reptile', m)}/{len(SEEDS)})" + zs)

# %% [markdown]
# **What the tuned runs show** (5 seeds; the next cell re-derives every sentence from the per-seed runs):
# * **Against the multilingual baselines.** Sequential Reptile is ahead of MTL (+2.1 ± 1.4 points),
#   PCGrad (+2.0 ± 0.9), GradVac (+3.1 ± 2.0) and parallel Reptile (+2.1 ± 0.6) in every seed, every
#   interval excluding 0. It does **not** beat nine single-task models: STL is ahead in every seed
#   (Seq-Reptile − STL −1.0 ± 1.0, the interval just reaching 0).
# * **The controls do not let us credit the sequential trajectory for the gain over MTL.** MTL with
#   Seq-Reptile's update count (`mtl_small_batch`: 1800 updates of 16 mixed names) comes within
#   +0.3 ± 1.0 points of Seq-Reptile (ahead of it in 2 of 5 seeds), so the gain over MTL cannot be
#   credited to the sequential trajectory. What closes the gap is not isolated: `mtl_small_batch`
#   differs from MTL in its update count, its batches (pooled, not one per language) and its tuned rate
#   (0.01 vs 0.003), and is +1.8 ± 1.9 over MTL (4 of 5 seeds; the interval includes 0). Against
#   `seq_mtl` — the same batches in the same order, but no interpolation, no Adam resets and its own
#   tuned rate (0.003 vs 0.01) — Seq-Reptile is +1.5 ± 1.4 ahead in every seed; with three differences
#   this does not isolate the interpolation (the gentle operating point below does). `seq_reptile_eta1`
#   (η = 1, Adam reset every trajectory) has the lowest mean accuracy (65.8 ± 4.0), not distinguishable
#   from GradVac's or MTL's; we have not tested why.
# * **The analysed algorithm** (`seq_reptile_sgd`, plain SGD inner loop) scores 71.1 ± 1.6: above MTL
#   in every seed (+3.1 ± 2.7), not distinguishable from the AdamW Seq-Reptile (+1.0 ± 2.1) or from STL.
# * **Zero-shot** (8 unseen languages): Seq-Reptile is above MTL (+2.3 ± 1.6), PCGrad and `seq_mtl`
#   (interval excluding 0), but not above `mtl_small_batch` (−0.4 ± 3.3): the same caveat as for accuracy.
# * **Forgetting cannot rank the tuned runs.** Their AdamW learning rates differ up to 33×, and after
#   fine-tuning the held-out masked-character loss of seven arms — Seq-Reptile among them — is above
#   uniform guessing (6.84 nats) on average (`seq_mtl` in 3 of 5 seeds, the six others in every seed):
#   the metric is saturated. The gentle operating point below fixes that.

# %%
multi = ["MTL", "PCGrad", "GradVac", "Parallel Reptile"]
acc_gap = {m: paired("mean_accuracy", "Seq-Reptile", m) for m in METHODS if m != "Seq-Reptile"}
assert all(acc_gap[m][0] > 0 and excludes_zero(acc_gap[m]) and wins("Seq-Reptile", m) == len(SEEDS) for m in multi)
assert acc_gap["STL"][0] < 0 and wins("STL", "Seq-Reptile") == len(SEEDS) and not excludes_zero(acc_gap["STL"])
assert not excludes_zero(acc_gap["mtl_small_batch"]) and abs(acc_gap["mtl_small_batch"][0]) < 0.01
assert wins("mtl_small_batch", "Seq-Reptile") == 2
assert excludes_zero(acc_gap["seq_mtl"]) and wins("Seq-Reptile", "seq_mtl") == len(SEEDS)
assert min(METHODS, key=lambda m: np.mean(per_seed(m, "mean_accuracy"))) == "seq_reptile_eta1"
sgd_mtl = paired("mean_accuracy", "seq_reptile_sgd", "MTL")
assert excludes_zero(sgd_mtl) and wins("seq_reptile_sgd", "MTL") == len(SEEDS)
assert not excludes_zero(paired("mean_accuracy", "seq_reptile_sgd", "Seq-Reptile"))
assert not excludes_zero(paired("mean_accuracy", "seq_reptile_sgd", "STL"))
zs_gap = {m: paired("mean_zero_shot", "Seq-Reptile", m) for m in SHARED if m != "Seq-Reptile"}
assert all(excludes_zero(zs_gap[m]) and zs_gap[m][0] > 0 for m in ("MTL", "PCGrad", "seq_mtl"))
assert not excludes_zero(zs_gap["mtl_small_batch"])
saturated = [m for m in METHODS if np.mean(per_seed(m, "mlm_after")) > UNIFORM]
assert "Seq-Reptile" in saturated and len(saturated) == 7, saturated
above = {m: sum(x > UNIFORM for x in per_seed(m, "mlm_after")) for m in saturated}
assert above.pop("seq_mtl") == 3 and all(n == len(SEEDS) for n in above.values())
lrs = [tuning["chosen"][m] for m in METHODS if m != "seq_reptile_sgd"]       # the AdamW arms
assert max(lrs) / min(lrs) > 30
print("saturated (MLM loss after > ln 937):", saturated)

# %%
ALIGN = ("cosine_encoder", "cosine", "inner", "energy", "train_loss")


def probe_mean(m, key, runs=None, seed=None):
    """Mean of a probe quantity over a run's probes after the start (the first probe is the shared start)."""
    runs = saved["runs"] if runs is None else runs
    return [float(np.mean([p[key] for p in runs[s][m]["probes"][1:]])) for s in ([seed] if seed else SEEDS)]


print("balanced validation probes (16 names per class and language), mean over the 8 probes after the start")
print(f"{'method':>17} | " + " | ".join(f"{k:>14}" for k in ALIGN))
for m in SHARED:
    print(f"{m:>17} | " + " | ".join(f"{np.mean(probe_mean(m, k)):14.3f}" for k in ALIGN))
cos_gain = {m: mean_ci([a - b for a, b in zip(probe_mean("Seq-Reptile", "cosine_encoder"), probe_mean(m, "cosine_encoder"))])
            for m in SHARED if m != "Seq-Reptile"}
print("\nencoder-only cosine, Seq-Reptile − baseline (paired over seeds):",
      {m: f"{v[0]:+.3f} ± {v[1]:.3f}" for m, v in cos_gain.items()})

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
show = [m for m in ("MTL", "PCGrad", "GradVac", "Seq-Reptile", "Parallel Reptile", "seq_mtl") if m in SHARED]
for m in show:
    cos = np.array([[p["cosine_encoder"] for p in saved["runs"][s][m]["probes"]] for s in SEEDS])
    calls = [p["calls"] for p in saved["runs"][SEEDS[0]][m]["probes"]]
    axes[0].plot(calls, cos.mean(0), "o-", color=COLORS[m], label=m, ms=3)
    loss = np.array([[p["train_loss"] for p in saved["runs"][s][m]["probes"]] for s in SEEDS])
    axes[1].plot(loss.mean(0), cos.mean(0), "o-", color=COLORS[m], label=m, ms=3)
axes[0].set(title="encoder-only gradient cosine\n(balanced validation probes)", xlabel="mini-batch gradients")
axes[1].set(title="the same cosine against training loss", xlabel="mean training loss", xscale="log")
axes[0].legend(fontsize=7)
for j, m in enumerate(SHARED):                      # tuned rate (solid) and lr 1e-3 (hatched, five arms)
    axes[2].bar(j - 0.2, np.mean(per_seed(m, "mlm_after")), 0.4, color=COLORS[m])
    if m in saved["gentle"]["methods"]:
        axes[2].bar(j + 0.2, np.mean(per_seed(m, "mlm_after", saved["gentle"]["runs"])), 0.4, color=COLORS[m],
                    hatch="//", alpha=0.5)
axes[2].set_xticks(range(len(SHARED)), SHARED, rotation=40, fontsize=7, ha="right")
axes[2].axhline(UNIFORM, color="k", ls="--", lw=1, label="uniform guessing")
axes[2].set(title="held-out masked-char loss after fine-tuning\n(solid: tuned lr; hatched: lr 1e-3)", ylabel="nats")
axes[2].legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Alignment, measured on balanced held-out names.** Every method's per-language gradients are
# nearly orthogonal: mean encoder-only cosines of 0.07–0.13 along training, full-vector 0.09–0.25.
# Sequential Reptile's encoder cosine is **not higher than MTL's** (−0.016 ± 0.041, higher in 1 of 5
# seeds), nor than `seq_mtl`'s: the paper's signature — more aligned task gradients — does not show in
# this experiment. The probes are taken at different training losses (along the run Seq-Reptile's
# average 0.10, MTL's 0.34), which confounds the comparison; whether near-orthogonal gradients leave
# the method little to do we have not tested.
# (An earlier version of this notebook probed the first 48 *training* names of each language; the
# splits are stored sorted by class, so those probes held no currency at all and the cosine tracked
# the remaining training loss. That measurement is gone.)

# %%
cos_all = {m: float(np.mean(probe_mean(m, "cosine_encoder"))) for m in SHARED}
full_all = {m: float(np.mean(probe_mean(m, "cosine"))) for m in SHARED}
assert 0.065 < min(cos_all.values()) and max(cos_all.values()) < 0.135               # "0.07-0.13"
assert 0.085 < min(full_all.values()) and max(full_all.values()) < 0.255              # "0.09-0.25"
loss_avg = {m: float(np.mean(probe_mean(m, "train_loss"))) for m in ("Seq-Reptile", "MTL")}
assert abs(loss_avg["Seq-Reptile"] - 0.10) < 0.005 and abs(loss_avg["MTL"] - 0.34) < 0.005
for m in ("MTL", "seq_mtl"):
    assert not excludes_zero(cos_gain[m]) and cos_gain[m][0] < 0
assert sum(a > b for a, b in zip(probe_mean("Seq-Reptile", "cosine_encoder"), probe_mean("MTL", "cosine_encoder"))) == 1
print({m: round(v, 3) for m, v in cos_all.items()})


# %% [markdown]
# **A second operating point where forgetting is measurable.** At AdamW lr 10⁻³ for every arm (not
# tuned; five arms, to save compute) the masked-character loss after fine-tuning stays between 2.6 and
# 4.7 nats in every run, well below uniform guessing, so forgetting can be compared.


# %%
gentle = saved["gentle"]
GM = gentle["methods"]
print(f"gentle operating point: AdamW lr {gentle['lr']:g} for every method (not tuned), {len(SEEDS)} seeds")
table(gentle["runs"], GM)
print("\nSeq-Reptile − baseline at the gentle lr (paired over seeds)")
for m in GM:
    if m != "Seq-Reptile":
        acc, f = paired("mean_accuracy", "Seq-Reptile", m, gentle["runs"]), paired("forgetting", "Seq-Reptile", m, gentle["runs"])
        print(f"{m:>17}: accuracy {100 * acc[0]:+.2f} ± {100 * acc[1]:.2f} ({wins('Seq-Reptile', m, runs=gentle['runs'])}/"
              f"{len(SEEDS)}),  forgetting {f[0]:+.3f} ± {f[1]:.3f} nats")

# %% [markdown]
# **Reading at the gentle rate.** `seq_reptile_eta1` differs from Seq-Reptile only in the
# interpolation (η = 1 instead of 0.5): with the interpolation the model forgets 0.77 ± 0.11 nats
# less and is 0.9 ± 0.8 points more accurate, in every seed — a controlled effect of the Reptile step.
# Against the other arms that make 1800 updates it also forgets less in every seed (`seq_mtl`
# −0.98 ± 0.21, `mtl_small_batch` −1.26 ± 0.29 nats). But **plain MTL forgets least** (Seq-Reptile
# forgets +0.15 ± 0.06 nats more, every seed), and Seq-Reptile's accuracy edge over MTL here
# (+0.9 ± 1.8, 3 of 5 seeds) is not distinguishable from 0; no zero-shot difference excludes 0.
# MTL's 200 updates of 144 names forget less than every 1800-update arm, in every seed; what causes
# that (the update count, the batch composition) we have not isolated.

# %%
G = gentle["runs"]
after = [x for m in GM for x in per_seed(m, "mlm_after", G)]
assert 2.6 < min(after) and max(after) < 4.7 < UNIFORM
f_gap = {m: paired("forgetting", "Seq-Reptile", m, G) for m in GM if m != "Seq-Reptile"}
a_gap = {m: paired("mean_accuracy", "Seq-Reptile", m, G) for m in GM if m != "Seq-Reptile"}
for m in ("seq_reptile_eta1", "seq_mtl", "mtl_small_batch"):
    assert f_gap[m][0] < 0 and excludes_zero(f_gap[m]) and wins(m, "Seq-Reptile", "forgetting", G) == len(SEEDS)
assert a_gap["seq_reptile_eta1"][0] > 0 and excludes_zero(a_gap["seq_reptile_eta1"])
assert wins("Seq-Reptile", "seq_reptile_eta1", runs=G) == len(SEEDS)
assert f_gap["MTL"][0] > 0 and excludes_zero(f_gap["MTL"]) and wins("Seq-Reptile", "MTL", "forgetting", G) == len(SEEDS)
assert not excludes_zero(a_gap["MTL"]) and wins("Seq-Reptile", "MTL", runs=G) == 3
assert not any(excludes_zero(paired("mean_zero_shot", "Seq-Reptile", m, G)) for m in GM if m != "Seq-Reptile")
for m in GM:                                          # MTL forgets least, every seed, against every other arm
    if m != "MTL":
        assert wins(m, "MTL", "forgetting", G) == len(SEEDS) and excludes_zero(paired("forgetting", m, "MTL", G))
print({m: f"{v[0]:+.2f} ± {v[1]:.2f} nats" for m, v in f_gap.items()})

# %% [markdown]
# **Live check.** We rerun seed 0 of three methods here, with the shipped checkpoint and the shipped
# learning rates, on one thread as the driver does. On the machine that wrote the file this
# reproduces the stored per-seed numbers exactly; on another CPU tiny floating-point differences may
# move a few names.

# %%
pre, vocab, cfg = cldr_exp.load_pretrained()
data = cldr_exp.build_data(cfg, vocab)
LIVE = METHODS if FULL else ["MTL", "Seq-Reptile", "Parallel Reptile"]
threads = torch.get_num_threads()
tutor.configure_threads(1)
live = {m: cldr_exp.evaluate_model(cldr_exp.finetune(m, pre, data, cfg, tuning["chosen"][m], seed=0), data, cfg, pre)
        for m in LIVE}
tutor.configure_threads(threads)
for m, r in live.items():
    stored = saved["runs"][SEEDS[0]][m]
    print(f"{m:>17}: accuracy {r['mean_accuracy']:.4f} (stored {stored['mean_accuracy']:.4f}), "
          f"forgetting {r['forgetting']:.4f} (stored {stored['forgetting']:.4f})")
    assert abs(r["mean_accuracy"] - stored["mean_accuracy"]) < 0.03

# %% [markdown]
# ## Regime map
# The paper's argument: the gain comes from aligning *conflicting* task gradients, so it should grow
# with the amount of conflict and vanish where the tasks agree. The driver's docstring
# (`tutor/experiments/seq_reptile.py`) registered these predictions **before** any run:
# * Toy B with the three private wells at 0°, s, 2s around the compromise point (s = 0: the tasks
#   agree; 64 random starts within distance 1 of the compromise point per seed, α = 0.2, K = 3, η = 0.5,
#   600 outer steps): Seq-Reptile's gain over MTL in final conflict energy is indistinguishable from 0
#   at s = 0 and grows with s; its gain over sequential SGD (η = 1, the toy's "SeqMTL") is much smaller
#   than its gain over MTL at every s > 0. (The steps are smaller than Part 3's because in a pilot MTL
#   did not settle at α = 0.3, K = 12 when the wells coincide: its step 0.6 on the sum of three
#   gradients, times a curvature of about 4 per task, is ≈ 7, above the stability limit 2.)
# * CLDR typing on a 4-language group sharing the Latin script (en fi id sw) against one with four
#   scripts (ar bn ko ru), MTL / Seq-Reptile / `seq_mtl` at the rates tuned on 9 languages, budget 4/9
#   (800 gradients, K = 16): higher balanced-probe cosine within the shared-script group, a larger gain
#   over MTL for the mixed-script group, no gain over `seq_mtl` in either.
#
# Both maps ship with 5 seeds; one toy point is recomputed live.

# %%
from tutor import viz  # noqa: E402
from tutor.experiments.regime import summarise_regime  # noqa: E402

maps = {(m["factor"].split(" (")[0], m["baseline"]): m for m in saved["regime"]}
fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
for (factor, base), reg in maps.items():
    toy = factor.startswith("spread")
    viz.regime_plot(reg, ax=axes[0 if toy else 1], label=f"Seq-Reptile − {base}")
for ax in axes:
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
pts = {key: {p.value: p for p in summarise_regime(reg)} for key, reg in maps.items()}
for key, ps in pts.items():
    print(f"{key[0]}, vs {key[1]}: " + "; ".join(f"{v}: gain {p.gain:+.3f} ± {p.ci95:.3f} ({p.n_seeds} seeds)"
                                                   for v, p in ps.items()))
groups = saved["script_regime"]
group_cos = {g: {m: float(np.mean([np.mean([p["cosine_encoder"] for p in groups[g][s][m]["probes"][1:]])
                                   for s in SEEDS])) for m in cldr_exp.REGIME_METHODS} for g in groups}
print("mean encoder-only cosine on balanced validation probes, by group:", group_cos)

# %% [markdown]
# **Reading.** Toy B: the first prediction held in part — no gain where the tasks agree (every start
# ends with (numerically) zero conflict energy for every method at 0°), none detectable at 30° (+0.04 ± 0.04), then
# +0.60 ± 0.32 at 60° and +2.11 ± 0.08 at 90°, but a smaller gain at 120° (+1.10 ± 0.01) than at 90°:
# it grows with the conflict up to a point, not monotonically. The second held at 90° and 120°, where
# the gain over sequential SGD (η = 1) is under 2.5% of the gain over MTL; at 60° it is undecided
# (+0.10 ± 0.34 against +0.60 ± 0.32; MTL − sequential SGD +0.50 ± 0.62 includes 0) and at 30° both
# gains are ≈ 0. Every mean gain over sequential SGD is within ±0.11 of zero and only the 120° interval
# excludes 0 (+0.014): where the conflict is large, the gain over MTL comes with the consecutive
# single-task steps, not with the interpolation.
#
# Real task: the languages that share a script do have more aligned gradients — encoder cosine 0.28
# against 0.10 for MTL (higher in every seed, but the paired interval +0.17 ± 0.18 includes 0), and
# +0.13 ± 0.05 and +0.14 ± 0.13 for Seq-Reptile and `seq_mtl` (excluding 0) — but no group shows a gain
# over MTL that excludes 0
# (shared script +1.3 ± 2.6, different scripts +2.6 ± 3.0 points), and the mixed-script group's larger
# mean gain is within the seed spread (+1.4 ± 3.3): the second half of the prediction is **not
# shown**. No gain over `seq_mtl` excludes 0 in either group, as predicted — with intervals of ±3
# points, which a gain like the 9-language one (+1.5) would also fit.

# %%
tm, ts = pts[("spread of the task optima", "MTL")], pts[("spread of the task optima", "Sequential SGD")]
E = saved["toy_regime"]["energy"]
assert all(x < 1e-9 for m in E for x in E[m]["0"])                               # tasks agree: (numerically) zero energy
assert not tm[30].excludes_zero and all(tm[v].gain > 0 and tm[v].excludes_zero for v in (60, 90, 120))
assert tm[30].gain < tm[60].gain < tm[90].gain and tm[120].gain < tm[90].gain    # grows up to 90 degrees, not beyond
assert all(abs(ts[v].gain) < 0.11 for v in ts) and [v for v in ts if ts[v].excludes_zero] == [120]
rm, rs = pts[("language group", "MTL")], pts[("language group", "seq_mtl")]
cos_mtl = {g: [np.mean([p["cosine_encoder"] for p in groups[g][s]["MTL"]["probes"][1:]]) for s in SEEDS] for g in groups}
assert all(a > b for a, b in zip(cos_mtl["shared script"], cos_mtl["different scripts"]))
script_cos = {m: mean_ci([np.mean([p["cosine_encoder"] for p in groups["shared script"][s][m]["probes"][1:]])
                          - np.mean([p["cosine_encoder"] for p in groups["different scripts"][s][m]["probes"][1:]])
                          for s in SEEDS]) for m in cldr_exp.REGIME_METHODS}
assert not excludes_zero(script_cos["MTL"]) and all(excludes_zero(script_cos[m]) for m in ("Seq-Reptile", "seq_mtl"))
assert all(ts[v].gain < 0.025 * tm[v].gain for v in (90, 120))                  # prediction 2 at 90 and 120 degrees
mtl_vs_sgd60 = mean_ci([a - b for a, b in zip(E["MTL"]["60"], E["Sequential SGD"]["60"])])
assert not excludes_zero(mtl_vs_sgd60)                                          # ... undecided at 60 degrees
assert not any(p.excludes_zero for p in rm.values()) and rm["different scripts"].gain > rm["shared script"].gain
between = mean_ci([a - b for a, b in zip(rm["different scripts"].diffs, rm["shared script"].diffs)])
assert not excludes_zero(between)
assert not any(p.excludes_zero for p in rs.values())
print(f"gain over MTL, different − shared scripts: {between[0] * 100:+.2f} ± {between[1] * 100:.2f} points")

# %%
live_toy = cldr_exp.toy_regime([0], spreads=(90,))           # one live point: seed 0 at 90 degrees (≈ 1 s)
for m, per in live_toy["energy"].items():
    stored = saved["toy_regime"]["energy"][m]["90"][0]
    print(f"{m:>15}: live {per[90][0]:.4f}, stored {stored:.4f}")
    assert abs(per[90][0] - stored) < 1e-6 * max(1.0, abs(stored))

# %% [markdown]
# ## 8. Widget — gradient alignment
# Pick a toy, the inner learning rate α, the inner steps K, the outer rate η, the order (random or
# cyclic), Toy A's targets and the start. Panels: paths on the MTL loss; the **surrogate**
# Σ_k L_{t_k} − (α/2)Σ_{j<k}⟨g_j, g_k⟩ for this α and K (where the averaged Seq-Reptile step is
# heading); the pairwise cosine matrix at Seq-Reptile's end; along the run, the conflict energy, the
# mean inter-task cosine and, beside it, the mean inner product ⟨g_i, g_j⟩ — the quantity the surrogate
# rewards. With two tasks in Toy A the gradients are collinear (g_t = (xy − c_t)(y, x)), so the cosine
# is stuck at ±1; the inner product is not, and you can watch it move. Tick *surgery* to add PCGrad and
# GradVac paths. The random task orders are seeded, so a redraw with the same settings gives the same
# figure. A run that diverges says so.

# %%
def draw_alignment(toy="A: valley (2 tasks)", alpha=0.1, K=2, eta=0.5, order="random", c1=1.0, c2=3.0,
                   start_x=3.0, start_y=0.5, steps=300, surgery=False):
    if toy.startswith("A"):
        losses, T, lim = product_tasks((c1, c2)), 2, ((0.05, 4.5), (-2.0, 4.5))
    else:
        losses, T, lim = wells_tasks(3), 3, ((-2.0, 6.0), (-3.0, 3.0))
    start = torch.tensor([[start_x, start_y]], dtype=D)
    methods = ["MTL", "Seq-Reptile"] + (["PCGrad", "GradVac"] if surgery else [])
    runs, failed = {}, []
    for m in methods:
        try:
            runs[m] = run_toy(m, losses, start, T, steps, alpha=alpha, K=K, eta=eta, order=order)
        except FloatingPointError:
            failed.append(m)
    fig, ax = plt.subplots(2, 4, figsize=(16, 7))
    gx, gy = torch.meshgrid(torch.linspace(*lim[0], 70, dtype=D), torch.linspace(*lim[1], 70, dtype=D),
                            indexing="xy")
    g = torch.stack([gx, gy], -1)
    total = losses(g.unsqueeze(-2).expand(70, 70, T, 2), torch.arange(T)).sum(-1)
    gen = torch.Generator().manual_seed(0)           # seeded: the same counts at every redraw (odd K)
    counts = pair_counts(random_order(T, K, gen) if order == "random" else cyclic_order(T, K), T)
    sur = surrogate_loss(losses, g, counts, alpha)
    shade = (lambda v: torch.log1p(v - v.min())) if toy.startswith("A") else (lambda v: v)
    ax[0, 0].contourf(gx, gy, shade(total), 20, cmap="Greys")
    ax[0, 1].contourf(gx, gy, shade(sur), 20, cmap="Greys")
    k = int(sur.argmin())
    ax[0, 1].plot(gx.flatten()[k], gy.flatten()[k], "y*", ms=12, label="surrogate min (grid)")
    for m, r in runs.items():
        for a in (ax[0, 0], ax[0, 1]) if m == "Seq-Reptile" else (ax[0, 0],):
            a.plot(r.phis[:, 0, 0], r.phis[:, 0, 1], color=COLORS[m], lw=1.5, label=m)
        ax[1, 0].semilogy(r.energy[:, 0].clamp_min(1e-12), color=COLORS[m], label=m)
        ax[1, 1].plot(r.cosine[:, 0], color=COLORS[m], label=m)
        gp = task_gradients(oracle(losses, T), r.phis[:, 0], T)                       # (steps + 1, T, 2)
        gram = gp @ gp.transpose(-1, -2)
        ax[1, 2].plot((gram.sum((-1, -2)) - gram.diagonal(dim1=-2, dim2=-1).sum(-1)) / (T * (T - 1)),
                      color=COLORS[m], label=m)
    for a in (ax[0, 0], ax[0, 1]):
        a.plot(start_x, start_y, "ko")
        a.set(xlim=lim[0], ylim=lim[1])
    ax[0, 0].set_title("MTL loss Σ L_t and paths")
    ax[0, 1].set_title(f"surrogate for α={alpha:.3g}, task counts {counts.tolist()}")
    ax[0, 0].legend(fontsize=7)
    ax[0, 1].legend(fontsize=7)
    if "Seq-Reptile" in runs:
        end = runs["Seq-Reptile"].final
        cm = cosine_matrix(task_gradients(oracle(losses, T), end, T))[0]
        im = ax[0, 2].imshow(cm, vmin=-1, vmax=1, cmap="coolwarm")
        for i in range(T):
            for j in range(T):
                ax[0, 2].text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=9)
        fig.colorbar(im, ax=ax[0, 2], fraction=0.046)
        energy_end = conflict_energy(task_gradients(oracle(losses, T), end, T)).item()
        ax[0, 2].set_title(f"cosines at Seq-Reptile's end\nconflict energy {energy_end:.3g}")
    ax[1, 0].set(title="conflict energy Σ‖g_t‖²", xlabel="outer step")
    ax[1, 1].set(title="mean inter-task cosine", xlabel="outer step", ylim=(-1.05, 1.05))
    ax[1, 2].set(title="mean inner product ⟨g_i, g_j⟩ (what the surrogate rewards)", xlabel="outer step")
    ax[1, 2].axhline(0, color="k", lw=0.6)
    ax[0, 3].axis("off")
    ax[1, 0].legend(fontsize=7)
    if toy.startswith("A"):
        for m, r in runs.items():
            ax[1, 3].plot(r.phis[:, 0, 0] ** 2 - r.phis[:, 0, 1] ** 2, color=COLORS[m], label=m)
        ax[1, 3].set(title="balance x² − y²", xlabel="outer step")
    else:
        for m, r in runs.items():
            ax[1, 3].plot((r.phis[:, 0] - torch.tensor([4.0, 0.0], dtype=D)).norm(dim=-1), color=COLORS[m])
        ax[1, 3].set(title="distance to the compromise B", xlabel="outer step")
    targets = f"task targets c = ({c1:.3g}, {c2:.3g})" + ("" if toy.startswith("A") else " (used by toy A only)")
    if failed:
        fig.suptitle(f"diverged: {', '.join(failed)} — lower α or η, or move the start; {targets}", color="red")
    else:
        fig.suptitle(f"{toy}: K={K}, η={eta:.3g}, {order} order, {steps} outer steps; {targets}", fontsize=10)
    fig.subplots_adjust(hspace=0.4, wspace=0.3, left=0.05, right=0.97, top=0.9, bottom=0.07)
    return fig


widgets.interactive(draw_alignment,
                    toy=widgets.dropdown("A: valley (2 tasks)", ["A: valley (2 tasks)", "B: wells (3 tasks)"]),
                    alpha=widgets.slider(0.1, 0.01, 0.3, log=True, step=0.05),
                    K=widgets.slider(2, 1, 8), eta=widgets.slider(0.5, 0.05, 1.0),
                    order=widgets.dropdown("random", ["random", "cyclic"]),
                    c1=widgets.slider(1.0, 0.5, 4.0), c2=widgets.slider(3.0, 0.5, 4.0),
                    start_x=widgets.slider(3.0, 0.2, 4.5), start_y=widgets.slider(0.5, -2.0, 4.5),
                    steps=widgets.slider(300, 50, 1000, step=50), surgery=widgets.toggle(False))

# %% [markdown]
# ### The expansion checker
# Exact MG against its first-order prediction for random quadratics, per coordinate, with the O(α)
# term split into inter- and intra-task parts, and the residual against α (slope 2). Try a cyclic
# order: the expansion still holds for that order, but it is no longer the gradient of a surrogate.

# %%
def draw_expansion(alpha=0.02, K=6, tasks=3, order="random", seed=0):
    gen = torch.Generator().manual_seed(seed)
    losses, _, _ = quadratic_tasks(tasks, 5, gen)
    gf = oracle(losses, tasks)
    phi = torch.randn(5, generator=gen, dtype=D)
    o = random_order(tasks, K, gen) if order == "random" else cyclic_order(tasks, K)
    t = expansion_terms(gf, phi, o)
    theta, _ = sequential_trajectory(gf, phi, o, InnerOptimizer("sgd", alpha))
    mg = meta_gradient(phi, theta, alpha)
    pred = t["zeroth"] + alpha * (t["inter"] + t["intra"])
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
    idx = np.arange(5)
    ax[0].bar(idx - 0.2, mg.numpy(), 0.4, label="exact MG")
    ax[0].bar(idx + 0.2, pred.numpy(), 0.4, label="Σg − α Σ H g")
    ax[0].set(title=f"order {o.tolist()}", xlabel="coordinate")
    ax[0].legend(fontsize=8)
    ax[1].bar(["inter-task", "intra-task"], [alpha * t["inter"].norm().item(), alpha * t["intra"].norm().item()],
              color=["tab:red", "tab:gray"])
    ax[1].set_title("size of the O(α) term")
    al = alpha * 2.0 ** -np.arange(5)
    r = expansion_residuals(gf, phi, o, al, t)
    ax[2].loglog(al, np.maximum(r, 1e-16), "o-", label="residual")
    ax[2].loglog(al, max(r[0], 1e-16) * (al / al[0]) ** 2, "k--", label="slope 2")
    ax[2].set(xlabel="α")
    ax[2].legend(fontsize=8)
    fig.subplots_adjust(wspace=0.3, left=0.05, right=0.98, bottom=0.15)
    return fig


widgets.interactive(draw_expansion, alpha=widgets.slider(0.02, 0.002, 0.1, log=True, step=0.1),
                    K=widgets.slider(6, 1, 12), tasks=widgets.slider(3, 1, 5),
                    order=widgets.dropdown("random", ["random", "cyclic"]), seed=widgets.slider(0, 0, 9))

# %% [markdown]
# ## 9. Exercises
#
# ### Exercise 1 — one Sequential Reptile outer step
# Write `my_seq_reptile_step(grad_fn, phi, order, alpha, eta)` with plain SGD: walk the trajectory
# θ_k = θ_{k−1} − α g_{t_k}(θ_{k−1}) through the given task order, then interpolate. `grad_fn(theta
# (1, dim), tasks (1,))` returns the gradient of task `tasks[0]` at `theta[0]`, shape `(1, dim)`.

# %% tags=["exercise"]
def my_seq_reptile_step(grad_fn, phi, order, alpha, eta):
    # YOUR CODE HERE
    raise NotImplementedError


# %% tags=["solution"]
def my_seq_reptile_step(grad_fn, phi, order, alpha, eta):
    theta = phi
    for t in order:
        theta = theta - alpha * grad_fn(theta.view(1, -1), torch.tensor([int(t)]))[0]
    return phi - eta * (phi - theta)


# %% tags=["check"]
def _reference_step(grad_fn, phi, order, alpha, eta):
    return seq_reptile_step(grad_fn, phi, order, InnerOptimizer("sgd", alpha), eta)[0]


_g = torch.Generator().manual_seed(0)
result_1 = checks.check_function(
    my_seq_reptile_step, _reference_step,
    [(quad, torch.randn(5, generator=_g, dtype=D), torch.tensor(o), a, e)
     for o, a, e in (([0, 1, 2], 0.1, 0.5), ([2, 2, 0, 1], 0.05, 1.0), ([1], 0.2, 0.3))],
    hint="Every step uses the gradient at the CURRENT theta, of the task named by the order; then "
         "phi - eta (phi - theta_K).")

# %% tags=["solution"]
assert result_1

# %% [markdown]
# ### Exercise 2 — the K = T identity
# For one batch per task (K = T), show numerically that the sum of the pairwise inner products over
# the trajectory does not depend on the order and equals ½(‖Σ_t g_t‖² − Σ_t‖g_t‖²). Write
# `pairwise_sum(g_seq)` (Σ_{j<k}⟨g_j, g_k⟩ for gradients `g_seq (K, dim)` in trajectory order) and
# `identity(g)` (the closed form for `g (T, dim)`).

# %% tags=["exercise"]
def pairwise_sum(g_seq):
    # YOUR CODE HERE
    raise NotImplementedError


def identity(g):
    # YOUR CODE HERE
    raise NotImplementedError


# %% tags=["solution"]
def pairwise_sum(g_seq):
    return sum(g_seq[j] @ g_seq[k] for k in range(len(g_seq)) for j in range(k))


def identity(g):
    return 0.5 * (g.sum(0).pow(2).sum() - g.pow(2).sum())


# %% tags=["check"]
_g = torch.Generator().manual_seed(1)
_cases = [torch.randn(T, 6, generator=_g, dtype=D) for T in (2, 3, 5)]
result_2 = checks.check_function(lambda g: (pairwise_sum(g[torch.randperm(len(g), generator=_g)]), identity(g)),
                                 lambda g: (pair_inner_products(g, torch.ones(len(g)))["inter"],) * 2,
                                 [(c,) for c in _cases], name="pairwise_sum / identity", atol=1e-10,
                                 hint="Sum g_j·g_k over j < k; the closed form is half of |sum|² minus the "
                                      "sum of squared norms.")

# %% tags=["solution"]
assert result_2

# %% [markdown]
# ### Exercise 3 — where does Seq-Reptile stop on Toy A?
# On the valley xy = 2 the conflict energy is 2(x² + y²). Set `answer_3` to the point (x, y) with x, y
# > 0 that minimises it; the check compares it with Seq-Reptile's end point from Part 2 (which is an
# O(α) distance off the valley, hence the tolerance).

# %% tags=["exercise"]
answer_3 = ...  # (x, y)

# %% tags=["solution"]
answer_3 = (math.sqrt(2), math.sqrt(2))

# %% tags=["check"]
result_3 = checks.check_value(answer_3, runs_A["Seq-Reptile"].final[0].tolist(), atol=0.01, name="answer_3",
                              hint="Minimise x² + y² subject to xy = 2 (AM-GM).")

# %% tags=["solution"]
assert result_3

# %% [markdown]
# ## Summary
# * Sequential Reptile runs one inner trajectory through batches of different tasks and interpolates
#   towards its end; the cost is that of MTL.
# * To second order, its averaged step descends Σ L_t − (α/2)Σ_{j<k}⟨g_j, g_k⟩: a reward for
#   inter-task agreement (plus the intra-task term ordinary Reptile has). The expansion checks out
#   numerically (residual slope 2), and the permutation average is an exact gradient.
# * Caveats: the order must be random; η = 1 is plain sequential SGD; with two tasks the cosine at an
#   MTL minimum is −1, so measure the conflict energy.
# * Toys: where MTL has a whole valley of minima, Seq-Reptile walks to the point of least conflict
#   (Toy A); among compromise end points it ends with the least conflict energy (Toy B), without
#   changing basins.
# * Real multilingual typing at laptop scale (5 seeds): Sequential Reptile is more accurate than MTL,
#   PCGrad, GradVac and parallel Reptile in every seed, but MTL with as many updates (on smaller,
#   pooled batches) is not distinguishable from it (+0.3 ± 1.0), nine single-task models are ahead of
#   it in every seed, and its gradients are not more aligned than MTL's on balanced held-out probes.
#   The SGD-inner variant that Parts 1–3 analyse ties the single-task models. At a learning rate where
#   forgetting is measurable, the interpolation (η = 0.5 vs 1, all else equal) reduces forgetting and
#   raises accuracy in every seed; plain MTL forgets least. The gain on Toy B grows with the conflict
#   up to 90° and, where the conflict is large, comes with sequential SGD. Languages sharing a script
#   have more aligned gradients, but the predicted larger gain for mixed scripts was not shown.
#   The paper's downstream claims (QA/NER/XNLI with mBERT) are not tested here.
#
# ## References
# * S. Lee, H. B. Lee, J. Lee, S. J. Hwang. Sequential Reptile: Inter-Task Gradient Alignment for
#   Multilingual Learning. ICLR 2022. arXiv:2110.02600. (No official code public.)
# * A. Nichol, J. Achiam, J. Schulman. On First-Order Meta-Learning Algorithms (Reptile). 2018.
# * T. Yu et al. Gradient Surgery for Multi-Task Learning (PCGrad). NeurIPS 2020.
# * Z. Wang, Y. Tsvetkov, O. Firat, Y. Cao. Gradient Vaccine: Investigating and Improving Multi-task
#   Optimization in Massively Multilingual Models (GradVac). ICLR 2021.
# * Y. Shi et al. Gradient Matching for Domain Generalization (Fish). ICLR 2022.
# * J. H. Clark et al. TyDi QA. TACL 2020. Unicode CLDR (locale data, via `babel`).
