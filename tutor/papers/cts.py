"""Continual Trajectory Shifting: many-shot meta-learning with a meta-update every inner step.

Jaewoong Shin, Hae Beom Lee, Boqing Gong, Sung Ju Hwang. *Large-Scale Meta-Learning with Continual
Trajectory Shifting.* ICML 2021 (arXiv:2102.07215). Official code: JWoong148/ContinualTrajectoryShifting
(PyTorch, 8 GPUs).  Loops follow the official code as recorded in ``shared/papers/cts.md`` §3.

Notation: phi the shared initialisation, theta_t the learner of task t, alpha the inner learning
rate, beta the meta learning rate, K the reset period (inner horizon), U_k(phi) the parameters
after k inner steps from phi.

* **Inner step** (SGD on every task at once)::      theta_t <- theta_t - alpha grad L_t(theta_t)  -> inner_sgd
* **Reptile** (§3.2): reset theta_t <- phi, K inner steps, then
  ``phi <- phi - beta (phi - mean_t theta_t)`` -- one meta-update per K inner steps.
                                                                          -> reptile_step, run_reptile
* **CTS** (§3.3): reset every K steps; after **every** inner step
  ``Delta = -beta (phi - mean_t theta_t);  phi <- phi + Delta;  theta_t <- theta_t + Delta``
  (the trajectory shift).                                                       -> cts_step, run_cts
* **Why the shift is valid** (§3.4): ``U_k(phi + Delta) = U_k(phi) + (dU_k/dphi) Delta + O(beta^2)`` with
  ``dU_k/dphi = prod_i (I - alpha H_i) = I + O(alpha h k)``; chaining k-1 shifts gives an error
  ``O(beta alpha h k^2 + beta^2 k)``.  Exact when the Hessian is zero.                         -> shift_error
* **"Accurate" curriculum** (§3.5, toy reference): for k = 1..K re-roll k fresh steps from the
  current phi and take one Reptile step -- O(K^2) inner steps.                             -> run_accurate
* **Horizon-curriculum Reptile** (our control, not in the paper): plain Reptile whose horizon grows
  linearly from K_start to K over the first ``ramp`` inner steps -- CTS's short-to-long curriculum
  without the per-step meta-update and without the shift.       -> horizon_schedule, run_reptile_curriculum
* ``beta`` of every run may be a tensor with one value per start (shape ``(starts,)``): a whole grid of
  meta learning rates in one vectorised run (tuning).
* **FOMAML / FOMAML + CTS** (§3.5, §4): the meta-direction is ``mean_t grad L_t(theta_t)``.
  ``run_reptile(..., direction="fomaml")`` and ``run_cts(..., direction="fomaml")``.

Every function is vectorised over many starting points and all tasks at once: parameters are
tensors shaped ``(starts, tasks, dim)`` (learners) and ``(starts, dim)`` (initialisations), and a
task family is a callable ``losses(x (..., tasks, dim)) -> (..., tasks)``.

Deliberate simplifications: plain SGD in the inner loop (the official runs use SGD with momentum
0.9 and weight decay; momentum diverged from some corner starts of the toy); P = 1 (aggregate every
step); no task-specific heads in the toy (the image experiment keeps one head per task, excluded
from phi, as the official code does); the "no-shift" ablation is ours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tutor.divergence import DivergenceGuard
from tutor.validation import as_float, as_int

__all__ = ["inner_sgd", "reptile_direction", "reptile_step", "cts_step", "MetaRun", "run_reptile", "run_cts",
           "run_accurate", "horizon_schedule", "run_reptile_curriculum",
           "unroll", "adaptation_curve", "adaptation_auc", "steps_to_threshold", "shift_error",
           "trajectory_drift", "meta_fixed_points"]

Losses = Callable[[torch.Tensor], torch.Tensor]


def _grad(losses: Losses, theta: torch.Tensor, guard: DivergenceGuard | None = None) -> torch.Tensor:
    with torch.enable_grad():
        theta = theta.detach().requires_grad_()
        values = losses(theta)
        if guard is not None:
            guard(values)
        (g,) = torch.autograd.grad(values.sum(), theta)
    return g


def inner_sgd(losses: Losses, theta: torch.Tensor, alpha: float, guard: DivergenceGuard | None = None
              ) -> torch.Tensor:
    """One SGD step for every task's learner: ``theta (..., tasks, dim)``; ``guard`` (the package's one
    divergence rule, :mod:`tutor.divergence`) checks the losses of a whole run."""
    if not torch.isfinite(theta).all():   # the learners were already broken (e.g. by a meta-step), not by alpha
        raise FloatingPointError("the learners' parameters are non-finite before the inner step: a meta-update "
                                 "diverged; lower the meta learning rate beta")
    out = theta - alpha * _grad(losses, theta, guard)
    if not torch.isfinite(out).all():
        raise FloatingPointError(f"an inner step diverged; lower the inner learning rate alpha={alpha}")
    return out


def unroll(losses: Losses, phi: torch.Tensor, k: int, alpha: float, tasks: int,
           guard: DivergenceGuard | None = None) -> torch.Tensor:
    """U_k(phi) for every task: ``phi (..., dim) -> (..., tasks, dim)``."""
    theta = phi.unsqueeze(-2).expand(*phi.shape[:-1], tasks, phi.shape[-1]).clone()
    for _ in range(k):
        theta = inner_sgd(losses, theta, alpha, guard)
    return theta


def reptile_direction(phi: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``phi - mean_t theta_t``: the (pseudo-)gradient Reptile descends, ``(..., dim)``."""
    return phi - theta.mean(-2)


def reptile_step(phi: torch.Tensor, theta: torch.Tensor, beta: float) -> torch.Tensor:
    """Reptile's meta-update ``phi - beta (phi - mean_t theta_t)``: ``phi (..., dim)``, ``theta (..., tasks, dim)``."""
    return phi - beta * reptile_direction(phi, theta)


def cts_step(phi: torch.Tensor, theta: torch.Tensor, beta: float, direction: torch.Tensor | None = None,
             shift: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """CTS after one inner step: ``Delta = -beta * direction``; ``phi + Delta`` and every learner
    ``theta_t + Delta`` (the trajectory shift; ``shift=False`` leaves the learners where they are).

    ``direction (..., dim)`` defaults to the Reptile direction ``phi - mean_t theta_t``.
    Returns ``(phi (..., dim), theta (..., tasks, dim))``.
    """
    delta = -beta * (reptile_direction(phi, theta) if direction is None else direction)
    return phi + delta, (theta + delta.unsqueeze(-2) if shift else theta)


def _direction(kind: str, losses: Losses, phi: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    if kind == "reptile":
        return reptile_direction(phi, theta)
    if kind == "fomaml":
        return _grad(losses, theta).mean(-2)
    raise ValueError(f"direction must be 'reptile' or 'fomaml', got {kind!r}")


@dataclass
class MetaRun:
    """A meta-training run: the initialisation after each meta-update and the compute spent.

    ``phis``: ``(updates + 1, starts, dim)``; ``inner_steps[i]``: cumulative inner steps per task
    spent when ``phis[i]`` was reached.
    """

    phis: torch.Tensor
    inner_steps: list[int] = field(default_factory=list)

    @property
    def final(self) -> torch.Tensor:
        return self.phis[-1]

    def at_budget(self, budget: int) -> torch.Tensor:
        """The initialisation reached within ``budget`` cumulative inner steps."""
        i = max(j for j, s in enumerate(self.inner_steps) if s <= budget)
        return self.phis[i]


def _check(K, alpha, beta, budget, phi0=None):
    """Validate the run's settings; returns ``(beta, guard)``: beta as a float, or (a tensor of one beta per
    start) as ``(starts, 1)`` so that it broadcasts over the parameters; and the run's divergence guard."""
    K, budget = as_int(K, "K (the horizon)", 1), as_int(budget, "budget", 1)
    if K < 1 or budget < 1:
        raise ValueError(f"K and budget must be >= 1, got K={K}, budget={budget}")
    as_float(alpha, "alpha (the inner learning rate)", 0.0)
    guard = DivergenceGuard(setting=f"the inner learning rate alpha={alpha} or the meta learning rate beta={beta}",
                            what="the tasks' inner loss")
    if not isinstance(beta, torch.Tensor):
        return as_float(beta, "beta (the meta learning rate)", 0.0), guard
    starts = phi0.shape[0] if phi0 is not None and phi0.dim() > 1 else None
    if beta.dim() != 1 or (starts is not None and beta.shape[0] != starts):
        raise ValueError(f"a tensor beta (the meta learning rate) needs one value per start, shape ({starts},), "
                         f"got {tuple(beta.shape)}")
    if not (torch.isfinite(beta).all() and (beta >= 0).all()):
        raise ValueError("beta (the meta learning rate) must be finite and >= 0 for every start")
    return beta.to(phi0.dtype if phi0 is not None else beta.dtype)[:, None], guard


def run_reptile(losses: Losses, phi0: torch.Tensor, tasks: int, K: int, alpha: float, beta: float,
                budget: int, direction: str = "reptile") -> MetaRun:
    """Reptile (or FOMAML) with horizon K: one meta-update every K inner steps, until ``budget``."""
    beta, guard = _check(K, alpha, beta, budget, phi0)
    if budget < K:
        raise ValueError(f"budget={budget} is below the horizon K={K}: Reptile would make no meta-update")
    phi, phis, spent = phi0.clone(), [phi0.clone()], [0]
    while spent[-1] + K <= budget:
        theta = unroll(losses, phi, K, alpha, tasks, guard)                # (starts, tasks, dim)
        phi = phi - beta * _direction(direction, losses, phi, theta)
        phis.append(phi)
        spent.append(spent[-1] + K)
    return MetaRun(torch.stack(phis), spent)


def horizon_schedule(k_start: int, k_end: int, budget: int, ramp: int | None = None) -> list[int]:
    """The horizons of a curriculum Reptile: episode e starts after ``spent`` inner steps and runs
    ``round(k_start + (k_end - k_start) * min(1, spent / ramp))`` steps (``ramp`` defaults to
    ``budget``); episodes stop when the next one would exceed ``budget``.

    ``k_start == k_end`` gives plain Reptile's ``[K] * (budget // K)``.  The horizons depend on
    ``ramp`` and not on ``budget``, so a longer budget extends a run without changing its start.
    """
    k_start, k_end = as_int(k_start, "k_start", 1), as_int(k_end, "k_end", 1)
    budget = as_int(budget, "budget", 1)
    ramp = budget if ramp is None else as_int(ramp, "ramp", 1)
    if k_start > k_end:
        raise ValueError(f"k_start must not exceed k_end, got k_start={k_start}, k_end={k_end}")
    out, spent = [], 0
    while True:
        k = int(round(k_start + (k_end - k_start) * min(1.0, spent / ramp)))
        if spent + k > budget:
            return out
        out.append(k)
        spent += k


def run_reptile_curriculum(losses: Losses, phi0: torch.Tensor, tasks: int, k_start: int, K: int, alpha: float,
                           beta: float, budget: int, ramp: int | None = None,
                           direction: str = "reptile") -> MetaRun:
    """Reptile with a growing horizon (:func:`horizon_schedule`): one meta-update per episode, no
    per-step meta-update, no shift.  ``k_start == K`` is :func:`run_reptile`."""
    beta, guard = _check(K, alpha, beta, budget, phi0)
    horizons = horizon_schedule(k_start, K, budget, ramp)
    if not horizons:
        raise ValueError(f"budget={budget} is below the first horizon k_start={k_start}: no meta-update")
    phi, phis, spent = phi0.clone(), [phi0.clone()], [0]
    for k in horizons:
        theta = unroll(losses, phi, k, alpha, tasks, guard)
        phi = phi - beta * _direction(direction, losses, phi, theta)
        phis.append(phi)
        spent.append(spent[-1] + k)
    return MetaRun(torch.stack(phis), spent)


def run_cts(losses: Losses, phi0: torch.Tensor, tasks: int, K: int, alpha: float, beta: float,
            budget: int, direction: str = "reptile", shift: bool = True) -> MetaRun:
    """CTS: a meta-update after every inner step, shifting every learner by the same Delta.

    ``shift=False`` is the ablation that meta-updates every step but leaves the learners on their
    stale trajectories.
    """
    beta, guard = _check(K, alpha, beta, budget, phi0)
    phi, phis, spent = phi0.clone(), [phi0.clone()], [0]
    theta = None
    while spent[-1] < budget:
        if (spent[-1] % K) == 0:                                            # reset period
            theta = phi.unsqueeze(-2).expand(*phi.shape[:-1], tasks, phi.shape[-1]).clone()
        theta = inner_sgd(losses, theta, alpha, guard)
        phi, theta = cts_step(phi, theta, beta, _direction(direction, losses, phi, theta), shift)
        phis.append(phi)
        spent.append(spent[-1] + 1)
    return MetaRun(torch.stack(phis), spent)


def run_accurate(losses: Losses, phi0: torch.Tensor, tasks: int, K: int, alpha: float, beta: float,
                 episodes: int = 1, direction: str = "reptile") -> MetaRun:
    """The exact curriculum: for k = 1..K, re-roll k steps from the current phi, one meta-step."""
    beta, guard = _check(K, alpha, beta, 1, phi0)
    phi, phis, spent = phi0.clone(), [phi0.clone()], [0]
    for _ in range(episodes):
        for k in range(1, K + 1):
            theta = unroll(losses, phi, k, alpha, tasks, guard)
            phi = phi - beta * _direction(direction, losses, phi, theta)
            phis.append(phi)
            spent.append(spent[-1] + k)
    return MetaRun(torch.stack(phis), spent)


def adaptation_curve(losses: Losses, phi: torch.Tensor, steps: int, alpha: float, tasks: int) -> torch.Tensor:
    """Task-averaged loss after k = 0..steps SGD steps from ``phi``: ``(steps + 1, starts)``."""
    theta = phi.unsqueeze(-2).expand(*phi.shape[:-1], tasks, phi.shape[-1]).clone()
    out = [losses(theta).mean(-1)]
    for _ in range(steps):
        theta = inner_sgd(losses, theta, alpha)
        out.append(losses(theta).mean(-1))
    return torch.stack(out).detach()


def adaptation_auc(losses: Losses, phi: torch.Tensor, K: int, alpha: float, tasks: int) -> torch.Tensor:
    """AUC_K: the task-averaged loss averaged over adaptation steps 1..K, per start ``(starts,)``."""
    return adaptation_curve(losses, phi, K, alpha, tasks)[1:].mean(0)


def steps_to_threshold(losses: Losses, phi: torch.Tensor, threshold: float, alpha: float, tasks: int,
                       max_steps: int = 200) -> torch.Tensor:
    """Adaptation steps until the task-averaged loss drops below ``threshold`` (capped at max_steps)."""
    curve = adaptation_curve(losses, phi, max_steps, alpha, tasks)         # (steps + 1, starts)
    below = curve < threshold
    first = torch.where(below.any(0), below.float().argmax(0), torch.full_like(curve[0], max_steps))
    return first.float()


def shift_error(losses: Losses, phi: torch.Tensor, delta: torch.Tensor, k: int, alpha: float,
                tasks: int) -> torch.Tensor:
    """``|| U_k(phi + Delta) - (U_k(phi) + Delta) ||`` per start and task ``(starts, tasks)``."""
    exact = unroll(losses, phi + delta, k, alpha, tasks)
    shifted = unroll(losses, phi, k, alpha, tasks) + delta.unsqueeze(-2)
    return (exact - shifted).norm(dim=-1)


def trajectory_drift(losses: Losses, phi0: torch.Tensor, tasks: int, k_max: int, alpha: float,
                     beta: float, delta: torch.Tensor | None = None) -> torch.Tensor:
    """How far CTS's shifted learners drift from exact re-rolls within one episode.

    Runs one CTS episode of ``k_max`` steps; after step k compares the shifted learners theta_k with
    U_k(phi_k), the learners re-rolled for k steps from the *current* initialisation.  Returns
    ``(k_max, starts)``: the task-averaged distance.  With a fixed shift per step (``delta``,
    ``(starts, dim)``, in place of ``-beta * (phi - mean theta)``) this is the chained Taylor error
    the paper bounds by ``O(alpha h k^2 |Delta|)`` (a quadratic gives exactly slope 2 in log-log).
    With the real CTS shift the drift follows no fixed power law: on the Himmelblau toy (notebook 05,
    alpha 0.05, beta 0.1) it grows more slowly than k^2 over the first ten steps (log-log slope
    about 1.3), peaks around k = 20 and then *falls* (we read the fall as the learners settling into
    minima; not measured).
    """
    phi = phi0.clone()
    theta = phi.unsqueeze(-2).expand(*phi.shape[:-1], tasks, phi.shape[-1]).clone()
    out = []
    for k in range(1, k_max + 1):
        theta = inner_sgd(losses, theta, alpha)
        step = -beta * reptile_direction(phi, theta) if delta is None else delta
        phi = phi + step
        theta = theta + step.unsqueeze(-2)
        out.append((theta - unroll(losses, phi, k, alpha, tasks)).norm(dim=-1).mean(-1))
    return torch.stack(out)


def meta_fixed_points(losses: Losses, starts: torch.Tensor, tasks: int, K: int, alpha: float, beta: float,
                      meta_steps: int = 400, decimals: int = 1,
                      tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Iterate the Reptile map from every start until it stops moving.

    A start has converged when its meta-step ``||beta (phi - mean U_K(phi))||`` falls below ``tol``;
    iteration stops when every start has converged or after ``meta_steps`` steps.  Returns
    ``(endpoints (n, 2), distinct fixed points (rounded to `decimals`), converged (n,) bool)``.
    """
    if meta_steps < 1 or tol <= 0:
        raise ValueError(f"meta_steps must be >= 1 and tol > 0, got meta_steps={meta_steps}, tol={tol}")
    phi = starts.clone()
    converged = torch.zeros(phi.shape[0], dtype=torch.bool)
    for _ in range(meta_steps):
        step = beta * reptile_direction(phi, unroll(losses, phi, K, alpha, tasks))
        phi = phi - step
        converged = step.norm(dim=-1) < tol
        if converged.all():
            break
    rounded = torch.round(phi * 10 ** decimals) / 10 ** decimals
    return phi, torch.unique(rounded, dim=0), converged
