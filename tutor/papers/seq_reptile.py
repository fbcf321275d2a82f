"""Sequential Reptile: inter-task gradient alignment through one cross-task inner trajectory.

Seanie Lee, Hae Beom Lee, Juho Lee, Sung Ju Hwang. *Sequential Reptile: Inter-Task Gradient Alignment
for Multilingual Learning.* ICLR 2022 (arXiv:2110.02600).  No official code and no full text were
available to us: the algorithm follows "Algorithm 1 Sequential Reptile" as described in the abstract
and the notes ``shared/papers/seq_reptile.md`` (§3); equation labels below are those of the notes.

Notation: phi the shared (pretrained) parameters, tasks t = 1..T (languages), alpha the inner learning
rate, K the inner steps, eta the outer (interpolation) rate, g_t = grad L_t(phi), H_t its Hessian.

* **Sequential Reptile** (notes §3.1): ONE trajectory from theta_0 = phi whose step k uses a batch of
  task t_k (the order is passed explicitly)::

      theta_k = theta_{k-1} - alpha grad L_{t_k}(theta_{k-1})                 -> sequential_trajectory
      phi    <- phi - eta (phi - theta_K)                                      -> reptile_outer, seq_reptile_step

  The inner optimiser is pluggable (:class:`InnerOptimizer`: plain SGD for the toys and the analysis,
  Adam/AdamW as in the paper's network experiments).
* **Parallel (task-wise) Reptile**: one trajectory per task, ``phi <- phi - eta (phi - mean_t theta^t_K)``.
                                                                              -> parallel_reptile_step
* **MTL**: gradient of the summed loss sum_t L_t (mixed batches)               -> mtl_gradient, mtl_step
  **PCGrad** (Yu et al. 2020) and **GradVac** (Wang et al. 2021) replace the sum by a projected sum.
                                                                              -> pcgrad, gradvac
  Single-task fine-tuning (STL), one model per task, needs no function of its own: it is the network
  experiment's ``finetune("STL", ...)`` in ``tutor/experiments/seq_reptile.py``.
* **First-order expansion** (§3.2): with MG = (phi - theta_K) / alpha,
  ``MG = sum_k g_{t_k} - alpha sum_{j<k} H_{t_k} g_{t_j} + O(alpha^2)``; the O(alpha) part splits into
  inter-task pairs (t_j != t_k) and intra-task pairs (t_j == t_k).            -> expansion_terms
* **Surrogate** (§3.2): averaged over random orders, the outer step descends
  ``sum_k L_{t_k} - (alpha/2) sum_{j<k} <g_{t_j}, g_{t_k}>``; for a multiset with n_t batches of task t
  the pair sum is ``sum_t C(n_t, 2) |g_t|^2 + sum_{a<b} n_a n_b <g_a, g_b>``.  -> pair_inner_products,
  surrogate_loss.  For K = T it is ``sum_t L_t - (alpha/4)|sum_t g_t|^2 + (alpha/4) sum_t |g_t|^2``.
* **Diagnostics**: per-task gradients, pairwise cosine matrix, conflict energy ``sum_t |g_t|^2`` (§3.3:
  with two tasks the cosine is -1 at every MTL stationary point, so the energy is the informative number).
                                                      -> task_gradients, cosine_matrix, conflict_energy

Vectorisation: parameters are flat vectors ``(..., dim)`` with any leading "starts" dims.  A task family
is a *gradient oracle* ``grad_fn(theta (..., n, dim), tasks (n,) long) -> (..., n, dim)``: the gradient of
task ``tasks[i]``'s loss at ``theta[..., i, :]``.  Toys make one from a loss
``losses(theta (..., n, dim), tasks (n,)) -> (..., n)`` with :func:`oracle`; the network experiment
(``tutor/experiments/seq_reptile.py``) makes one that draws mini-batches.

Deliberate simplifications and choices that are ours (the paper does not state them, or we could not
check): the task order is a concatenation of random permutations (every task equally often; uniform
sampling with replacement is the other obvious choice); plain SGD in the toys and the analysis (the
paper uses AdamW with lr 3e-5 on mBERT); the inner optimiser's state is reset at every outer step; K, eta
and the MTL step size are ours; MTL uses mixed batches (every task every step); GradVac's targets are
one EMA per task pair (the paper also has per-layer variants); the toys are our own designs, not the
paper's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tutor.divergence import DivergenceGuard, check_loss

__all__ = ["GradFn", "oracle", "InnerOptimizer", "random_order", "cyclic_order", "check_order",
           "sequential_trajectory", "reptile_outer", "seq_reptile_step", "parallel_reptile_step",
           "task_gradients", "mtl_gradient", "pcgrad", "gradvac", "mtl_step", "cosine_matrix",
           "mean_inter_task_cosine", "conflict_energy", "expansion_terms", "meta_gradient",
           "pair_counts", "pair_inner_products", "surrogate_loss", "quadratic_tasks", "product_tasks",
           "wells_tasks", "ToyRun", "run_toy", "METHODS"]

GradFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Losses = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# gradient oracles and the inner optimiser
# --------------------------------------------------------------------------------------------
def oracle(losses: Losses, num_tasks: int) -> GradFn:
    """A gradient oracle from per-task losses ``losses(theta (..., n, dim), tasks (n,)) -> (..., n)``.

    Uses ``losses.grad`` (same signature, returns ``(..., n, dim)``) when the loss carries a closed-form
    gradient (the toys do: it is ~10x faster than autograd for 2-D problems), autograd otherwise.

    Raises ``ValueError`` for an unknown task index and ``FloatingPointError`` for a non-finite loss.
    """
    closed = getattr(losses, "grad", None)

    def grad_fn(theta: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        tasks = _check_tasks(tasks, num_tasks)
        if closed is not None:                          # a closed-form gradient (the toys): no autograd
            g = closed(theta, tasks)
            if not torch.isfinite(g).all():
                raise FloatingPointError("a task gradient became non-finite; lower the inner learning rate "
                                         "alpha or move the start closer to the tasks' minima")
            return g
        with torch.enable_grad():
            x = theta.detach().requires_grad_()
            values = losses(x, tasks)
            check_loss(values, setting="the inner learning rate alpha or move the start closer to the tasks' minima",
                       what="a task loss")
            (g,) = torch.autograd.grad(values.sum(), x)
        return g
    grad_fn.num_tasks = num_tasks
    grad_fn.losses = losses
    return grad_fn


@dataclass
class InnerOptimizer:
    """The inner-loop optimiser of a trajectory: ``"sgd"``, ``"adam"`` or ``"adamw"``.

    Its state (Adam moments) starts afresh at every trajectory (our choice).  Works on flat
    parameters of any shape; every leading dim is an independent trajectory.
    """

    kind: str = "sgd"
    lr: float = 0.05                 # inner learning rate alpha
    betas: tuple = (0.9, 0.999)      # Adam moment decays
    eps: float = 1e-8                # Adam denominator offset
    weight_decay: float = 0.0        # decoupled (AdamW) or L2 (sgd/adam) weight decay

    def __post_init__(self):
        if self.kind not in ("sgd", "adam", "adamw"):
            raise ValueError(f"InnerOptimizer.kind must be 'sgd', 'adam' or 'adamw', got {self.kind!r}")
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise ValueError(f"InnerOptimizer.lr must be a finite number >= 0, got {self.lr}")
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else None
        if betas is None or len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"InnerOptimizer.betas must be two numbers in [0, 1) (Adam's moment decays; 1 would "
                             f"divide by zero in the bias correction), got {self.betas!r}")
        if not (isinstance(self.eps, (int, float)) and self.eps > 0 and math.isfinite(self.eps)):
            raise ValueError(f"InnerOptimizer.eps must be a finite number > 0, got {self.eps!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0
                and math.isfinite(self.weight_decay)):
            raise ValueError(f"InnerOptimizer.weight_decay must be a finite number >= 0, got {self.weight_decay!r}")

    def init(self, theta: torch.Tensor) -> dict:
        if self.kind == "sgd":
            return {}
        return {"m": torch.zeros_like(theta), "v": torch.zeros_like(theta), "t": 0}

    def step(self, theta: torch.Tensor, g: torch.Tensor, state: dict) -> torch.Tensor:
        """One step from ``theta`` with gradient ``g`` (same shape); updates ``state`` in place."""
        if self.kind == "sgd":
            return theta - self.lr * (g + self.weight_decay * theta if self.weight_decay else g)
        if self.kind == "adam" and self.weight_decay:
            g = g + self.weight_decay * theta
        b1, b2 = self.betas
        state["t"] += 1
        state["m"] = b1 * state["m"] + (1 - b1) * g
        state["v"] = b2 * state["v"] + (1 - b2) * g * g
        m_hat = state["m"] / (1 - b1 ** state["t"])
        v_hat = state["v"] / (1 - b2 ** state["t"])
        out = theta - self.lr * m_hat / (v_hat.sqrt() + self.eps)
        if self.kind == "adamw" and self.weight_decay:
            out = out - self.lr * self.weight_decay * theta
        return out


# --------------------------------------------------------------------------------------------
# task orders
# --------------------------------------------------------------------------------------------
def _check_tasks(tasks, num_tasks: int) -> torch.Tensor:
    """The cheap per-call check of an oracle's task indices (integers within 0..T-1)."""
    tasks = torch.as_tensor(tasks)
    if tasks.dtype.is_floating_point or tasks.dtype == torch.bool:
        raise TypeError(f"task indices must be integers, got dtype {tasks.dtype}")
    lo, hi = tasks.aminmax()
    if lo < 0 or hi >= num_tasks:
        return check_order(tasks.flatten(), num_tasks)              # raises with the offending indices
    return tasks


def check_order(order, num_tasks: int) -> torch.Tensor:
    """``order`` as a 1-D long tensor; ``ValueError`` if empty or naming a task outside ``0..T-1``."""
    order = torch.as_tensor(order)
    if order.dim() != 1 or order.numel() == 0:
        raise ValueError(f"a task order must be a non-empty 1-D sequence of task indices, got shape "
                         f"{tuple(order.shape)}")
    if order.dtype.is_floating_point or order.dtype == torch.bool:
        raise TypeError(f"task indices must be integers, got dtype {order.dtype}")
    bad = order[(order < 0) | (order >= num_tasks)]
    if bad.numel():
        raise ValueError(f"task order names unknown task(s) {bad.unique().tolist()}; allowed are 0..{num_tasks - 1}")
    return order.long()


def random_order(num_tasks: int, K: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """K task indices: consecutive random permutations of ``0..T-1``, cut at K (every task equally
    often when T divides K).  ``(K,)`` long."""
    if num_tasks < 1 or K < 1:
        raise ValueError(f"num_tasks and K must be >= 1, got num_tasks={num_tasks}, K={K}")
    reps = -(-K // num_tasks)
    return torch.cat([torch.randperm(num_tasks, generator=gen) for _ in range(reps)])[:K]


def cyclic_order(num_tasks: int, K: int) -> torch.Tensor:
    """K task indices ``0, 1, .., T-1, 0, 1, ..`` (the fixed order that breaks the gradient form, §3.3)."""
    if num_tasks < 1 or K < 1:
        raise ValueError(f"num_tasks and K must be >= 1, got num_tasks={num_tasks}, K={K}")
    return torch.arange(K) % num_tasks


# --------------------------------------------------------------------------------------------
# the algorithm
# --------------------------------------------------------------------------------------------
def sequential_trajectory(grad_fn: GradFn, phi: torch.Tensor, order, inner: InnerOptimizer
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """One inner trajectory across tasks: step k uses task ``order[k]`` (notes §3.1).

    ``phi (..., dim)``.  Returns ``(theta_K (..., dim), grads (K, ..., dim))``: the end point and the
    gradient used at every step.
    """
    num_tasks = getattr(grad_fn, "num_tasks", None)          # oracles record T; others check indices themselves
    order = check_order(order, num_tasks if num_tasks is not None else 2 ** 62)
    theta, state, grads = phi, inner.init(phi), []
    for t in order:
        g = grad_fn(theta.unsqueeze(-2), t.view(1)).squeeze(-2)         # (..., dim)
        theta = inner.step(theta, g, state)
        grads.append(g)
    if not torch.isfinite(theta).all():
        raise FloatingPointError(f"the inner trajectory diverged; lower the inner learning rate (lr={inner.lr})")
    return theta, torch.stack(grads)


def reptile_outer(phi: torch.Tensor, theta: torch.Tensor, eta: float) -> torch.Tensor:
    """Reptile's interpolation ``phi - eta (phi - theta)`` towards the trajectory's end point."""
    return phi - eta * (phi - theta)


def seq_reptile_step(grad_fn: GradFn, phi: torch.Tensor, order, inner: InnerOptimizer, eta: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One Sequential Reptile outer step; returns ``(new phi (..., dim), inner grads (K, ..., dim))``."""
    _check_eta(eta)
    theta, grads = sequential_trajectory(grad_fn, phi, order, inner)
    return reptile_outer(phi, theta, eta), grads


def parallel_reptile_step(grad_fn: GradFn, phi: torch.Tensor, num_tasks: int, steps: int,
                          inner: InnerOptimizer, eta: float) -> torch.Tensor:
    """Parallel (task-wise) Reptile: ``steps`` inner steps per task, every task's trajectory at once
    (``theta (..., T, dim)``), then ``phi - eta (phi - mean_t theta^t)``.  Returns phi ``(..., dim)``."""
    _check_eta(eta)
    if steps < 1:
        raise ValueError(f"parallel Reptile needs steps >= 1 per task, got {steps}")
    tasks = torch.arange(num_tasks)
    theta = phi.unsqueeze(-2).expand(*phi.shape[:-1], num_tasks, phi.shape[-1]).clone()
    state = inner.init(theta)
    for _ in range(steps):
        theta = inner.step(theta, grad_fn(theta, tasks), state)
    if not torch.isfinite(theta).all():
        raise FloatingPointError(f"a task trajectory diverged; lower the inner learning rate (lr={inner.lr})")
    return reptile_outer(phi, theta.mean(-2), eta)


def _check_eta(eta):
    if not (0 <= eta <= 1):
        raise ValueError(f"the outer rate eta must be in [0, 1] (1 = keep the trajectory's end), got {eta}")


def task_gradients(grad_fn: GradFn, phi: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Every task's gradient at the shared point: ``phi (..., dim) -> (..., T, dim)``."""
    theta = phi.unsqueeze(-2).expand(*phi.shape[:-1], num_tasks, phi.shape[-1])
    return grad_fn(theta, torch.arange(num_tasks))


# --------------------------------------------------------------------------------------------
# MTL and gradient surgery baselines (functions of the per-task gradients g (..., T, dim))
# --------------------------------------------------------------------------------------------
def mtl_gradient(g: torch.Tensor) -> torch.Tensor:
    """The gradient of the summed MTL loss: ``sum_t g_t`` ``(..., dim)``."""
    return g.sum(-2)


def _dot(a, b):
    return (a * b).sum(-1, keepdim=True)


def pcgrad(g: torch.Tensor, order: list[int] | None = None, gen: torch.Generator | None = None) -> torch.Tensor:
    """PCGrad (Yu et al. 2020): for each task i, for each other task j (in ``order``), if
    ``<g_i', g_j> < 0`` remove from g_i' its component along g_j; return ``sum_i g_i'`` ``(..., dim)``.

    The original shuffles the other tasks afresh **for every task i**: pass a generator ``gen`` to do
    that (one ``randperm`` per i); otherwise ``order`` (default 0..T-1) is used for every i.
    """
    T = g.shape[-2]
    if gen is not None and order is not None:
        raise ValueError("pcgrad takes either a fixed order or a generator that reshuffles per task, not both")
    order = list(range(T)) if order is None else list(order)
    out = []
    for i in range(T):
        gi = g[..., i, :]
        for j in (torch.randperm(T, generator=gen).tolist() if gen is not None else order):
            if j == i:
                continue
            gj = g[..., j, :]
            d = _dot(gi, gj)
            gi = gi - torch.where(d < 0, d / _dot(gj, gj).clamp_min(1e-30), torch.zeros_like(d)) * gj
        out.append(gi)
    return torch.stack(out, -2).sum(-2)


def gradvac(g: torch.Tensor, targets: torch.Tensor, beta: float = 0.01, order: list[int] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient Vaccine (Wang et al. 2021, Eq. 4-5 as we read them): for each pair with cosine
    ``c_ij < target_ij``, ``g_i' += |g_i'| (tgt sqrt(1-c^2) - c sqrt(1-tgt^2)) / (|g_j| sqrt(1-tgt^2)) g_j``,
    which sets the pair's cosine to the target; targets follow an EMA ``(1-beta) tgt + beta c``.

    ``targets (T, T)``.  Returns ``(sum_i g_i' (..., dim), new targets (T, T))`` (targets updated with the
    cosines averaged over any leading dims).  With all targets 0 and ``beta = 0`` this is PCGrad.
    """
    T = g.shape[-2]
    order = list(range(T)) if order is None else list(order)
    cos_obs = cosine_matrix(g)
    new_t = targets.clone()
    out = []
    for i in range(T):
        gi = g[..., i, :]
        for j in order:
            if j == i:
                continue
            gj = g[..., j, :]
            ni, nj = gi.norm(dim=-1, keepdim=True), gj.norm(dim=-1, keepdim=True)
            c = (_dot(gi, gj) / (ni * nj).clamp_min(1e-30)).clamp(-1, 1)
            tgt = targets[i, j]
            w = ni * (tgt * (1 - c ** 2).sqrt() - c * math.sqrt(max(1 - float(tgt) ** 2, 0.0))) \
                / (nj * math.sqrt(max(1 - float(tgt) ** 2, 1e-30))).clamp_min(1e-30)
            gi = gi + torch.where(c < tgt, w, torch.zeros_like(w)) * gj
        out.append(gi)
    mean_cos = cos_obs.reshape(-1, T, T).mean(0)
    new_t = (1 - beta) * targets + beta * mean_cos
    return torch.stack(out, -2).sum(-2), new_t


def mtl_step(grad_fn: GradFn, phi: torch.Tensor, num_tasks: int, lr: float,
             combine: Callable[[torch.Tensor], torch.Tensor] = mtl_gradient) -> torch.Tensor:
    """One (full-batch) MTL gradient step ``phi - lr * combine(g (..., T, dim))``."""
    return phi - lr * combine(task_gradients(grad_fn, phi, num_tasks))


# --------------------------------------------------------------------------------------------
# diagnostics
# --------------------------------------------------------------------------------------------
def cosine_matrix(g: torch.Tensor) -> torch.Tensor:
    """Pairwise cosines between task gradients: ``g (..., T, dim) -> (..., T, T)``."""
    n = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return n @ n.transpose(-1, -2)


def mean_inter_task_cosine(g: torch.Tensor) -> torch.Tensor:
    """Mean cosine over the pairs of distinct tasks: ``(..., T, dim) -> (...)``."""
    T = g.shape[-2]
    if T < 2:
        raise ValueError("an inter-task cosine needs at least 2 tasks")
    c = cosine_matrix(g)
    off = ~torch.eye(T, dtype=torch.bool, device=g.device)
    return c[..., off].mean(-1)


def conflict_energy(g: torch.Tensor) -> torch.Tensor:
    """``sum_t |g_t|^2``: zero only where every task is stationary at once (§3.3). ``(..., T, dim) -> (...)``."""
    return g.pow(2).sum((-1, -2))


def meta_gradient(phi: torch.Tensor, theta: torch.Tensor, alpha: float) -> torch.Tensor:
    """MG = (phi - theta_K) / alpha, the direction the outer step follows (§3.2)."""
    return (phi - theta) / alpha


def expansion_terms(grad_fn: GradFn, phi: torch.Tensor, order) -> dict[str, torch.Tensor]:
    """The first-order expansion of MG at ``phi (..., dim)`` for the given order (§3.2), by Hessian-vector
    products: ``zeroth = sum_k g_{t_k}``; ``inter = -sum_{j<k, t_j != t_k} H_{t_k} g_{t_j}``;
    ``intra`` the same over t_j == t_k.  Prediction: ``MG ~ zeroth + alpha (inter + intra)``.
    Needs an oracle made by :func:`oracle` (second derivatives)."""
    if not hasattr(grad_fn, "losses"):
        raise TypeError("expansion_terms needs an oracle made by seq_reptile.oracle (it differentiates twice)")
    T = grad_fn.num_tasks
    order = check_order(order, T)
    with torch.enable_grad():
        x = phi.detach().unsqueeze(-2).expand(*phi.shape[:-1], T, phi.shape[-1]).clone().requires_grad_()
        (g,) = torch.autograd.grad(grad_fn.losses(x, torch.arange(T)).sum(), x, create_graph=True)

        def hvp(t, v):                        # H_t v at phi for every leading index
            (h,) = torch.autograd.grad((g[..., t, :] * v).sum(), x, retain_graph=True)
            return h[..., t, :]
        inter = torch.zeros_like(phi)
        intra = torch.zeros_like(phi)
        for k in range(len(order)):
            prev = g[..., order[:k], :].detach()
            same = (order[:k] == order[k]).to(phi.dtype).unsqueeze(-1)
            if k:
                intra = intra - hvp(order[k], (prev * same).sum(-2))
                inter = inter - hvp(order[k], (prev * (1 - same)).sum(-2))
    gd = g.detach()
    return {"zeroth": gd[..., order, :].sum(-2), "inter": inter.detach(), "intra": intra.detach()}


def pair_counts(order, num_tasks: int) -> torch.Tensor:
    """How often each task appears in the order: ``(T,)`` (the multiset the surrogate depends on)."""
    order = check_order(order, num_tasks)
    return torch.bincount(order, minlength=num_tasks)


def pair_inner_products(g: torch.Tensor, counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """``sum_{j<k} <g_{t_j}, g_{t_k}>`` for a multiset with ``counts[t]`` batches of task t, split into
    ``intra = sum_t C(n_t, 2) |g_t|^2`` and ``inter = sum_{a<b} n_a n_b <g_a, g_b>``.  ``g (..., T, dim)``."""
    n = torch.as_tensor(counts, dtype=g.dtype, device=g.device)
    gram = g @ g.transpose(-1, -2)                                   # (..., T, T)
    diag = torch.diagonal(gram, dim1=-2, dim2=-1)
    intra = (n * (n - 1) / 2 * diag).sum(-1)
    inter = ((n.unsqueeze(-1) * n * gram).sum((-1, -2)) - (n * n * diag).sum(-1)) / 2
    return {"inter": inter, "intra": intra}


def surrogate_loss(losses: Losses, phi: torch.Tensor, counts, alpha: float, create_graph: bool = False
                   ) -> torch.Tensor:
    """The loss the averaged outer step descends (§3.2): ``sum_t n_t L_t - (alpha/2) sum_{j<k} <g, g>``.

    ``phi (..., dim)``; ``counts (T,)``.  Returns ``(...)`` (differentiable when ``create_graph``)."""
    n = torch.as_tensor(counts)
    T = n.numel()
    with torch.enable_grad():
        x = phi if create_graph else phi.detach().requires_grad_()
        xe = x.unsqueeze(-2).expand(*x.shape[:-1], T, x.shape[-1])
        if not create_graph:
            xe = xe.clone().detach().requires_grad_()
        vals = losses(xe, torch.arange(T))                               # (..., T)
        (g,) = torch.autograd.grad(vals.sum(), xe, create_graph=create_graph)
        pairs = pair_inner_products(g, n)
        out = (n.to(vals.dtype) * vals).sum(-1) - alpha / 2 * (pairs["inter"] + pairs["intra"])
    return out if create_graph else out.detach()


# --------------------------------------------------------------------------------------------
# toy task families (our designs, notes §6)
# --------------------------------------------------------------------------------------------
def quadratic_tasks(num_tasks: int, dim: int, gen: torch.Generator | None = None, dtype=torch.float64
                    ) -> tuple[Losses, torch.Tensor, torch.Tensor]:
    """Random positive-definite quadratics ``L_t = 0.5 (x - c_t)^T A_t (x - c_t)`` (Part 1).

    Returns ``(losses, A (T, dim, dim), c (T, dim))``."""
    q = torch.randn(num_tasks, dim, dim, generator=gen, dtype=dtype)
    A = q @ q.transpose(-1, -2) / dim + 0.5 * torch.eye(dim, dtype=dtype)
    c = torch.randn(num_tasks, dim, generator=gen, dtype=dtype)

    def losses(x, tasks):
        d = x - c[tasks]                                                 # (..., n, dim)
        return 0.5 * torch.einsum("...ni,nij,...nj->...n", d, A[tasks], d)
    return losses, A, c


def _two_d(p: torch.Tensor, toy: str) -> torch.Tensor:
    """The 2-D toys take points ``(..., n, 2)``; anything else would give a wrong loss or gradient."""
    if not isinstance(p, torch.Tensor) or p.dim() < 1 or p.shape[-1] != 2:
        shape = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
        raise ValueError(f"{toy} is a 2-D toy: points (starts phi0, theta) must have last dimension 2, got {shape}")
    return p


def product_tasks(targets=(1.0, 3.0)) -> Losses:
    """Toy A, "valley selection": ``L_t = 0.5 (x y - c_t)^2`` on ``(x, y)``; every point with
    ``x y = mean(c)`` minimises the MTL loss (§6.2)."""
    c = torch.as_tensor(targets, dtype=torch.float64)

    def losses(p, tasks):
        _two_d(p, "product_tasks")
        return 0.5 * (p[..., 0] * p[..., 1] - c[tasks].to(p.dtype)) ** 2

    def grad(p, tasks):                                                 # (xy - c) (y, x)
        _two_d(p, "product_tasks")
        r = p[..., 0] * p[..., 1] - c[tasks].to(p.dtype)
        return r.unsqueeze(-1) * p.flip(-1)
    losses.grad = grad
    return losses


def wells_tasks(num_tasks: int = 3, shared_depth: float = 1.0, private_depth: float = 2.0,
                centre=(4.0, 0.0), radius: float = 1.0, spread: float | None = None) -> Losses:
    """Toy B, "consensus vs compromise": every task has a shared shallow Gaussian well at (0, 0)
    (sigma 1) and a private deep well (sigma 0.7) at ``radius`` from ``centre``, at angles
    ``spread * t`` degrees (default ``spread = 360 / T``: evenly around the centre).  ``spread = 0``
    puts every private well at the same place (the tasks agree); larger spreads make them conflict."""
    if spread is None:
        spread = 360.0 / num_tasks
    if not (math.isfinite(spread) and 0 <= spread <= 360):
        raise ValueError(f"spread must be an angle in degrees within [0, 360], got {spread}")
    ang = math.radians(spread) * torch.arange(num_tasks, dtype=torch.float64)
    private = torch.tensor(centre, dtype=torch.float64) + radius * torch.stack([ang.cos(), ang.sin()], -1)

    def losses(p, tasks):
        _two_d(p, "wells_tasks")
        shared = -shared_depth * torch.exp(-0.5 * p.pow(2).sum(-1))
        d2 = (p - private[tasks].to(p.dtype)).pow(2).sum(-1)
        return shared - private_depth * torch.exp(-0.5 * d2 / 0.7 ** 2)

    def grad(p, tasks):
        _two_d(p, "wells_tasks")
        d = p - private[tasks].to(p.dtype)
        shared = shared_depth * torch.exp(-0.5 * p.pow(2).sum(-1, keepdim=True)) * p
        return shared + private_depth / 0.7 ** 2 * torch.exp(-0.5 * d.pow(2).sum(-1, keepdim=True) / 0.7 ** 2) * d
    losses.grad = grad
    return losses


# --------------------------------------------------------------------------------------------
# toy runs (every start at once)
# --------------------------------------------------------------------------------------------
METHODS = ("MTL", "Seq-Reptile", "Parallel Reptile", "PCGrad", "GradVac")


@dataclass
class ToyRun:
    """A toy run from many starts: ``phis (steps + 1, starts, dim)``; at every phi the conflict energy
    ``energy (steps + 1, starts)`` and the mean inter-task cosine ``cosine (steps + 1, starts)``."""

    phis: torch.Tensor
    energy: torch.Tensor
    cosine: torch.Tensor
    orders: list = field(default_factory=list)

    @property
    def final(self) -> torch.Tensor:
        return self.phis[-1]


def run_toy(method: str, losses: Losses, phi0: torch.Tensor, num_tasks: int, steps: int, alpha: float,
            K: int, eta: float, seed: int = 0, order: str = "random", gradvac_beta: float = 0.01) -> ToyRun:
    """Run ``method`` (one of :data:`METHODS`) for ``steps`` outer steps from every start ``phi0 (starts, dim)``.

    Seq-Reptile: K SGD steps across tasks (``order`` "random" or "cyclic"), then interpolation by eta.
    Parallel Reptile: K / T steps per task (the same K gradient evaluations), then interpolation.
    MTL / PCGrad / GradVac: one full-batch step of size ``eta * alpha * K / T`` on the combined gradient,
    so that all methods move phi by the same amount per outer step to first order.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if order not in ("random", "cyclic"):
        raise ValueError(f"order must be 'random' or 'cyclic', got {order!r}")
    if steps < 0 or K < 1:
        raise ValueError(f"steps must be >= 0 and K >= 1, got steps={steps}, K={K}")
    _check_eta(eta)
    grad_fn = oracle(losses, num_tasks)
    gen = torch.Generator().manual_seed(seed)
    inner = InnerOptimizer("sgd", alpha)
    targets = torch.zeros(num_tasks, num_tasks, dtype=phi0.dtype)
    phi, phis, orders = phi0.clone(), [phi0.clone()], []
    guard = DivergenceGuard(setting=f"alpha (={alpha}) or eta (={eta})", what=f"{method}'s task losses")

    def check(p, where):                                                # the package's one rule: tutor.divergence
        guard(losses(p.unsqueeze(-2).expand(*p.shape[:-1], num_tasks, p.shape[-1]), torch.arange(num_tasks)), where)

    check(phi, "at the start")
    for step in range(steps):
        if method == "Seq-Reptile":
            o = random_order(num_tasks, K, gen) if order == "random" else cyclic_order(num_tasks, K)
            orders.append(o)
            phi, _ = seq_reptile_step(grad_fn, phi, o, inner, eta)
        elif method == "Parallel Reptile":
            phi = parallel_reptile_step(grad_fn, phi, num_tasks, max(K // num_tasks, 1), inner, eta)
        else:
            lr = eta * alpha * K / num_tasks
            if method == "GradVac":
                g = task_gradients(grad_fn, phi, num_tasks)
                step_dir, targets = gradvac(g, targets, gradvac_beta)
                phi = phi - lr * step_dir
            else:
                phi = mtl_step(grad_fn, phi, num_tasks, lr, mtl_gradient if method == "MTL" else pcgrad)
        if not torch.isfinite(phi).all():
            raise FloatingPointError(f"{method} diverged; lower alpha (={alpha}) or eta (={eta})")
        check(phi, f"at outer step {step + 1}")
        phis.append(phi)
    phis = torch.stack(phis)
    g = task_gradients(grad_fn, phis, num_tasks)                        # (steps + 1, starts, T, dim)
    return ToyRun(phis, conflict_energy(g), mean_inter_task_cosine(g) if num_tasks > 1 else
                  torch.ones(phis.shape[:-1], dtype=phis.dtype), orders)
