"""Deep Asymmetric Multi-task Feature Learning (and its predecessor AMTL).

Hae Beom Lee, Eunho Yang, Sung Ju Hwang. *Deep Asymmetric Multi-task Feature Learning.* ICML 2018
(arXiv:1708.00260); official code haebeom-lee/amtfl (TensorFlow 1, MNIST-Imbalanced only).
Predecessor: Lee, Yang, Hwang. *Asymmetric Multi-task Learning based on Task Relatedness and Loss.*
ICML 2016 (AMTL).  Equations as recorded in ``shared/papers/amtfl.md`` §3 (the paper's own numbering
was not available to our notes).

Shallow models (all tasks stacked in one tensor: ``x (T, n, d)``, ``y (T, n)``, weights ``(d, T)``):

* **STL**: ridge regression per task.                                                  -> fit_stl
* **GO-MTL** (Kumar & Daume 2012): ``W = L S``,
  ``min sum_t L_t(L s_t) + mu ||S||_1 + lam ||L||_F^2`` -- symmetric shared bases.        -> fit_gomtl
* **Reliability-weighted GO-MTL** (our control, not in the papers): GO-MTL with task t's loss weighted
  by ``c_t = 1 / (its single-task training MSE)``, normalised to mean 1 -- the loss as a reliability
  signal without any feedback matrix.                         -> reliability_weights, fit_gomtl(weights=)
* **AMTL** (2016): ``min_{W, B >= 0} sum_t (1 + mu ||b_t^o||_1) L_t(w_t) + lam sum_t ||w_t - W b_t||^2``
  (row ``b_t^o`` of B: task t's outgoing transfer; column ``b_t``: who reconstructs task t);
  Algorithm 1 alternates a W-step (gradient) and a B-step (a non-negative lasso per target,
  solved with the loss-rescaling trick).                          -> amtl_b_step, fit_amtl
* **AMTFL** (shallow, linear features as in the paper's synthetic experiment): with ``Z = X L``
  stacked over all tasks' training inputs and ``A (T, k)`` the task-to-feature feedback::

      sum_t (1 + alpha ||a_t||_1) L_t + gamma ||Z - (Z S) A||_F^2 / N + mu ||S||_1 + lam ||L||_F^2

  ``a_t`` is row t of A (task t's outgoing feedback into every feature).  -> amtfl_objective, fit_amtfl
* **Deep-AMTFL** (official code's objective): trunk features ``h``, one-vs-rest logits
  ``o = h S + b``, reconstruction ``h_hat = ReLU(o A + b_A)``::

      sum_t (1 + alpha ||a_t||_1) (L_t + kappa / sqrt(N_t / mean N)) + gamma E ||h - h_hat||^2
          + mu ||S||_1 + lam / 2 ||Theta||^2                                       -> deep_objective

  The symmetric multi-task network (same trunk and heads, no A) is the baseline.

Deliberate simplifications:

1. Shallow models are trained jointly with full-batch Adam (lr 1e-2, 1,500 steps), not by the papers'
   alternation (AMTL keeps the alternation for its B-step).
2. Deep-AMTFL is trained with **full-batch Adam at 1e-3 for 1,500 steps** (``DeepConfig.lr``,
   ``steps``); the official code uses mini-batches of 100 and a learning rate of 1e-4, then 1e-5.
   With at most 20 x 14 training images a full batch is one mini-batch; the larger rate is what
   lets it converge in seconds.
3. The deep part uses an MLP trunk on 14x14 glyphs and one-vs-rest glyph classes with imbalanced
   counts instead of LeNet on MNIST-Imbalanced.
4. The "loss weighting off" ablation keeps the l1 penalty on A but removes the loss factor.
5. AMTL's W-step adds STL's ridge penalty (see :func:`fit_amtl`).  In the synthetic comparison every
   method's hyper-parameters are chosen on validation draws of the task family from a starting grid
   of the same size (nine settings; an axis whose choice sits on its edge is extended, so the number
   of settings fitted differs; ``tutor.experiments.amtfl.tune_synthetic``), not taken from another method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tutor.data.multitask import MultiTaskData
from tutor.divergence import DivergenceGuard
from tutor.nets import MLP
from tutor.validation import as_float, as_int

__all__ = ["AMTFLConfig", "task_losses", "fit_stl", "reliability_weights", "gomtl_objective", "fit_gomtl",
           "amtfl_objective", "fit_amtfl",
           "nonneg_lasso", "weighted_nonneg_lasso_pista", "amtl_b_step", "amtl_objective", "fit_amtl", "size_term",
           "DeepConfig", "deep_init", "deep_objective", "fit_deep", "rmse"]


@dataclass
class AMTFLConfig:
    """Hyper-parameters of the shallow models (defaults: our notes §6.1)."""

    k: int = 6
    """Number of latent bases / features."""
    alpha: float = 1.0
    """Strength of the loss-weighted l1 penalty on A's rows (AMTFL)."""
    gamma: float = 0.1
    """Weight of the feature reconstruction term (AMTFL)."""
    mu: float = 1e-2
    """l1 on the codes S (GO-MTL, AMTFL); the loss-weighted l1 on B (AMTL)."""
    lam: float = 1e-3
    """l2 on the bases L (GO-MTL, AMTFL); the reconstruction weight of AMTL."""
    lr: float = 1e-2
    """Adam learning rate."""
    steps: int = 1500
    """Full-batch steps."""
    loss_weighting: bool = True
    """AMTFL's (1 + alpha ||a_t||_1) L_t; False gives the ablation sum_t L_t + alpha ||a_t||_1."""

    def __post_init__(self):
        self.k = as_int(self.k, "k", 1)
        self.steps = as_int(self.steps, "steps", 1)
        for name in ("alpha", "gamma", "mu", "lam"):
            setattr(self, name, as_float(getattr(self, name), name, 0.0))
        self.lr = as_float(self.lr, "lr", 0.0, strict=True)


def task_losses(W: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of every task: ``W (d, T)``, ``x (T, n, d)``, ``y (T, n)`` -> ``(T,)``."""
    if W.dim() != 2 or x.dim() != 3 or W.shape[1] != x.shape[0] or W.shape[0] != x.shape[2]:
        raise ValueError(f"shapes do not match: W {tuple(W.shape)} (d, T), x {tuple(x.shape)} (T, n, d)")
    return (torch.einsum("tnd,dt->tn", x, W) - y).pow(2).mean(1)


def rmse(W: torch.Tensor, data: MultiTaskData) -> torch.Tensor:
    """Test RMSE per task ``(T,)``."""
    return task_losses(W, data.x_test, data.y_test).sqrt()


def fit_stl(data: MultiTaskData, ridge: float = 1.0) -> torch.Tensor:
    """Single-task ridge regression for every task at once: ``W (d, T)``."""
    x, y = data.x_train, data.y_train
    d = x.shape[-1]
    gram = x.transpose(1, 2) @ x + ridge * torch.eye(d, dtype=x.dtype)       # (T, d, d)
    return torch.linalg.solve(gram, (x.transpose(1, 2) @ y[..., None]))[..., 0].T


def _adam(params, loss_fn, steps, lr):
    steps, lr = as_int(steps, "steps", 1), as_float(lr, "lr", 0.0, strict=True)
    opt = torch.optim.Adam(params, lr=lr)
    history = []
    guard = DivergenceGuard(setting=f"the learning rate (lr={lr})", what="the objective")   # tutor.divergence
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        guard(loss, where=f"at step {step}")
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def _init_bases(data: MultiTaskData, k: int, gen: torch.Generator):
    d, T = data.x_train.shape[-1], data.num_tasks
    L = (torch.randn(d, k, generator=gen) / math.sqrt(d)).requires_grad_()
    S = (torch.randn(k, T, generator=gen) * 0.1).requires_grad_()
    return L, S


def reliability_weights(data: MultiTaskData, ridge: float = 1.0) -> torch.Tensor:
    """``c_t = 1 / MSE_t`` of single-task ridge regression on task t's training data, normalised so that
    ``mean_t c_t = 1`` (a per-task reliability weight computed before any multi-task fit), ``(T,)``."""
    inv = 1.0 / task_losses(fit_stl(data, ridge), data.x_train, data.y_train)
    return inv / inv.mean()


def gomtl_objective(L: torch.Tensor, S: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                    config: AMTFLConfig, weights: torch.Tensor | None = None) -> torch.Tensor:
    """GO-MTL: ``sum_t c_t L_t(L s_t) + mu ||S||_1 + lam ||L||_F^2`` with ``L (d, k)``, ``S (k, T)``;
    ``weights`` c ``(T,)`` default to 1 (plain GO-MTL)."""
    losses = task_losses(L @ S, x, y)
    fit = losses.sum() if weights is None else (weights * losses).sum()
    return fit + config.mu * S.abs().sum() + config.lam * L.pow(2).sum()


def fit_gomtl(data: MultiTaskData, config: AMTFLConfig | None = None, seed: int = 0,
              weights: torch.Tensor | None = None) -> dict:
    """GO-MTL: ``W = L S`` with sparse codes; returns ``{"L", "S", "W", "history"}``.  ``weights (T,)``
    weight every task's loss (see :func:`reliability_weights`)."""
    cfg = config or AMTFLConfig()
    if weights is not None and (weights.shape != (data.num_tasks,) or not (weights > 0).all()):
        raise ValueError(f"weights must be positive, one per task ({data.num_tasks}), got shape {tuple(weights.shape)}")
    L, S = _init_bases(data, cfg.k, torch.Generator().manual_seed(seed))
    hist = _adam([L, S], lambda: gomtl_objective(L, S, data.x_train, data.y_train, cfg, weights), cfg.steps, cfg.lr)
    return {"L": L.detach(), "S": S.detach(), "W": (L @ S).detach(), "history": hist}


def amtfl_objective(L: torch.Tensor, S: torch.Tensor, A: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                    config: AMTFLConfig) -> tuple[torch.Tensor, dict]:
    """The shallow AMTFL objective and its parts.

    ``L (d, k)`` bases, ``S (k, T)`` codes, ``A (T, k)`` feedback (row t = task t's outgoing feedback).
    """
    T, k = S.shape[1], S.shape[0]
    if A.shape != (T, k):
        raise ValueError(f"A must have shape (tasks, features) = ({T}, {k}), got {tuple(A.shape)}")
    losses = task_losses(L @ S, x, y)                                   # (T,)
    Z = x.reshape(-1, x.shape[-1]) @ L                                   # (N, k): features of all inputs
    recon = (Z - (Z @ S) @ A).pow(2).sum(1).mean()                       # ||Z - (Z S) A||^2 / N
    outgoing = A.abs().sum(1)                                            # ||a_t||_1 over features, (T,)
    if config.loss_weighting:
        fit = ((1 + config.alpha * outgoing) * losses).sum()
    else:
        fit = losses.sum() + config.alpha * outgoing.sum()
    total = fit + config.gamma * recon + config.mu * S.abs().sum() + config.lam * L.pow(2).sum()
    return total, {"losses": losses.detach(), "recon": recon.detach(), "outgoing": outgoing.detach()}


def fit_amtfl(data: MultiTaskData, config: AMTFLConfig | None = None, seed: int = 0) -> dict:
    """Shallow AMTFL; returns ``{"L", "S", "A", "W", "outgoing", "history"}``."""
    cfg = config or AMTFLConfig()
    gen = torch.Generator().manual_seed(seed)
    L, S = _init_bases(data, cfg.k, gen)
    A = (torch.randn(data.num_tasks, cfg.k, generator=gen) * 0.01).requires_grad_()
    hist = _adam([L, S, A], lambda: amtfl_objective(L, S, A, data.x_train, data.y_train, cfg)[0], cfg.steps, cfg.lr)
    return {"L": L.detach(), "S": S.detach(), "A": A.detach(), "W": (L @ S).detach(),
            "outgoing": A.detach().abs().sum(1), "history": hist}


# ----------------------------------------------------------------------------------------------
# AMTL (ICML 2016): task-to-task transfer with a loss-weighted non-negative lasso
# ----------------------------------------------------------------------------------------------
def nonneg_lasso(X: torch.Tensor, y: torch.Tensor, alpha: float, iters: int = 500,
                 allowed: torch.Tensor | None = None) -> torch.Tensor:
    """``min_{b >= 0} 1/2 ||y - X b||^2 + alpha sum(b)`` by cyclic coordinate descent.

    ``X (n, p)``; ``y (n,)`` gives ``b (p,)``, or ``y (n, m)`` solves m problems at once (``b (p, m)``,
    one column per right-hand side).  ``allowed (p, m)`` (bool) pins the other coefficients to 0.
    """
    single = y.dim() == 1
    Y = y[:, None] if single else y
    p, m = X.shape[1], Y.shape[1]
    mask = torch.ones(p, m, dtype=torch.bool) if allowed is None else allowed.reshape(p, m)
    b = torch.zeros(p, m, dtype=X.dtype)
    col_sq = X.pow(2).sum(0)                                              # (p,)
    r = Y.clone()                                                         # residuals (n, m)
    for _ in range(iters):
        for j in range(p):
            if col_sq[j] == 0:
                continue
            rho = X[:, j] @ r + col_sq[j] * b[j]                          # (m,)
            new = torch.where(mask[j], torch.clamp((rho - alpha) / col_sq[j], min=0.0), 0.0)
            r += X[:, j, None] * (b[j] - new)
            b[j] = new
    return b[:, 0] if single else b


def weighted_nonneg_lasso_pista(X: torch.Tensor, y: torch.Tensor, costs: torch.Tensor, mu: float, lam: float,
                                iters: int = 5000) -> torch.Tensor:
    """Reference solver: ``min_{b >= 0} mu sum_s c_s b_s + lam ||y - X b||^2`` by projected ISTA."""
    step = 1.0 / (2 * lam * torch.linalg.matrix_norm(X, 2) ** 2)
    b = torch.zeros(X.shape[1], dtype=X.dtype)
    for _ in range(iters):
        grad = 2 * lam * X.T @ (X @ b - y)
        b = torch.clamp(b - step * (grad + mu * costs), min=0.0)
    return b


def amtl_b_step(W: torch.Tensor, losses: torch.Tensor, mu: float, lam: float, iters: int = 300) -> torch.Tensor:
    """AMTL's B-step: for every target t, ``min_{b >= 0, b_t = 0} mu sum_s L_s b_s + lam ||w_t - W b||^2``.

    Loss-rescaling trick (Algorithm 1): with ``b'_s = L_s b_s`` and ``W' = W diag(1 / L)`` it is a plain
    non-negative lasso ``1/2 ||w_t - W' b'||^2 + mu / (2 lam) sum b'``; map back ``b = b' / L``.
    Returns ``B (T, T)`` with ``B[s, t]`` = weight of task s in reconstructing task t.
    """
    T = W.shape[1]
    if losses.shape != (T,) or (losses <= 0).any():
        raise ValueError("losses must be a positive vector with one entry per task")
    scaled = W / losses                                                   # W' = W diag(1/L)
    others = ~torch.eye(T, dtype=torch.bool)                              # b_t = 0: no self-transfer
    B_scaled = nonneg_lasso(scaled, W, mu / (2 * lam), iters, allowed=others)   # all T targets at once
    return B_scaled / losses[:, None]                                     # B[s, t] = b'_s / L_s


def amtl_objective(W: torch.Tensor, B: torch.Tensor, x: torch.Tensor, y: torch.Tensor, config: AMTFLConfig,
                   ridge: float = 1.0) -> torch.Tensor:
    """AMTL's W-step objective (B fixed, ``B >= 0``):
    ``sum_t (1 + mu ||b_t^o||_1) L_t(w_t) + lam ||W - W B||_F^2 + ridge / n ||W||_F^2``."""
    losses = task_losses(W, x, y)                                         # (T,)
    outgoing = B.sum(1)                                                   # ||b_t^o||_1 (row t, B >= 0)
    return (((1 + config.mu * outgoing) * losses).sum() + config.lam * (W - W @ B).pow(2).sum()
            + ridge / x.shape[1] * W.pow(2).sum())


def fit_amtl(data: MultiTaskData, config: AMTFLConfig | None = None, rounds: int = 5,
             ridge: float = 1.0) -> dict:
    """AMTL by alternation: W-steps (Adam on :func:`amtl_objective`, ``config.steps / rounds`` each)
    and B-steps (:func:`amtl_b_step`).  Deterministic: it starts from the single-task solutions.

    ``config.mu`` weights the loss-weighted l1 on B, ``config.lam`` the reconstruction term.  The
    W-step adds the same ridge penalty as STL (``ridge / n * ||w_t||^2`` per task): without it the
    least-squares fit of 25 points in 20 dimensions overfits (a deviation from the 2016 objective).
    Returns ``{"W", "B"}`` (B ``(T, T)``, row t = task t's outgoing transfer).
    """
    cfg = config or AMTFLConfig()
    W = fit_stl(data, ridge).clone().requires_grad_()    # start from the single-task solutions
    T = data.num_tasks
    B = torch.zeros(T, T, dtype=W.dtype)
    for _ in range(rounds):
        _adam([W], lambda: amtl_objective(W, B, data.x_train, data.y_train, cfg, ridge),
              max(1, cfg.steps // rounds), cfg.lr)
        with torch.no_grad():
            B = amtl_b_step(W.detach(), task_losses(W, data.x_train, data.y_train), cfg.mu, cfg.lam)
    return {"W": W.detach(), "B": B}


# ----------------------------------------------------------------------------------------------
# Deep-AMTFL
# ----------------------------------------------------------------------------------------------
@dataclass
class DeepConfig:
    """Deep-AMTFL on one-vs-rest tasks (defaults: the official code's alpha, gamma, kappa, mu, lam)."""

    hidden: tuple = (256, 128)
    """Trunk MLP widths; the last is the feature size k."""
    alpha: float = 0.1
    gamma: float = 0.01
    kappa: float = 1e-3
    """Size term kappa / sqrt(N_t / mean N): small tasks count as less reliable."""
    mu: float = 1e-4
    """l1 on the task layer S."""
    lam: float = 1e-4
    """l2 (1/2 ||.||^2) on the trunk."""
    lr: float = 1e-3
    steps: int = 1500
    symmetric: bool = False
    """True: the symmetric multi-task network (no feedback, no asymmetric weights)."""

    def __post_init__(self):
        self.steps = as_int(self.steps, "steps", 1)
        for name in ("alpha", "gamma", "kappa", "mu", "lam"):
            setattr(self, name, as_float(getattr(self, name), name, 0.0))
        self.lr = as_float(self.lr, "lr", 0.0, strict=True)
        self.hidden = tuple(as_int(h, "hidden", 1) for h in self.hidden)
        if not self.hidden:
            raise ValueError("hidden must name at least one layer width")


def size_term(counts: torch.Tensor, kappa: float) -> torch.Tensor:
    """``kappa / sqrt(N_t / mean N)``: larger for smaller tasks; ``kappa`` when all are equal."""
    counts = counts.to(torch.float64)
    return (kappa / torch.sqrt(counts / counts.mean())).float()


def deep_init(in_features: int, tasks: int, config: DeepConfig, seed: int = 0) -> tuple[MLP, dict]:
    """Trunk (an MLP without head), task layer S, feedback A: ``{"trunk", "S", "b_S", "A", "b_A"}``."""
    gen = torch.Generator().manual_seed(seed)
    trunk = MLP(in_features, config.hidden, ways=0)
    k = config.hidden[-1]
    params = {"trunk": trunk.init(gen),
              "S": (torch.randn(k, tasks, generator=gen) * 0.01).requires_grad_(),
              "b_S": torch.zeros(tasks).requires_grad_(),
              "A": (torch.randn(tasks, k, generator=gen) * 0.01).requires_grad_(),
              "b_A": torch.zeros(k).requires_grad_()}
    return trunk, params


def deep_objective(trunk: MLP, params: dict, x: torch.Tensor, y: torch.Tensor, counts: torch.Tensor,
                   config: DeepConfig) -> tuple[torch.Tensor, dict]:
    """The Deep-AMTFL objective on one batch (class labels ``y``; task t = "is it class t?")."""
    T = params["S"].shape[1]
    h = trunk.embed(params["trunk"], x)                                 # (N, k) shared features
    o = h @ params["S"] + params["b_S"]                                  # (N, T) one-vs-rest logits
    target = F.one_hot(y, T).to(o.dtype)
    losses = F.binary_cross_entropy_with_logits(o, target, reduction="none").mean(0)   # (T,)
    reg = config.mu * params["S"].abs().sum() + config.lam * 0.5 * sum(p.pow(2).sum() for p in params["trunk"].values())
    if config.symmetric:
        return losses.sum() + reg, {"losses": losses.detach()}
    outgoing = params["A"].abs().sum(1)                                 # ||a_t||_1 over features
    h_hat = F.relu(o @ params["A"] + params["b_A"])                      # features rebuilt from task logits
    recon = (h - h_hat).pow(2).sum(1).mean()
    fit = ((1 + config.alpha * outgoing) * (losses + size_term(counts, config.kappa))).sum()
    return fit + config.gamma * recon + reg, {"losses": losses.detach(), "outgoing": outgoing.detach(),
                                               "recon": recon.detach()}


def fit_deep(x: torch.Tensor, y: torch.Tensor, counts: torch.Tensor, config: DeepConfig | None = None,
             seed: int = 0) -> tuple[MLP, dict]:
    """Full-batch Adam on ``deep_objective``; returns the trunk and trained parameters."""
    cfg = config or DeepConfig()
    trunk, params = deep_init(x[0].numel(), len(counts), cfg, seed)
    leaves = list(params["trunk"].values()) + [params[k] for k in ("S", "b_S")]
    if not cfg.symmetric:
        leaves += [params["A"], params["b_A"]]
    _adam(leaves, lambda: deep_objective(trunk, params, x, y, counts, cfg)[0], cfg.steps, cfg.lr)
    return trunk, params
