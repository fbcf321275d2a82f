"""HyperDistill: online hypergradients by distilling the whole inner trajectory into one JVP.

Haebeom Lee, Hayeon Lee, Jaewoong Shin, Eunho Yang, Timothy M. Hospedales, Sung Ju Hwang. *Online
Hyperparameter Meta-Learning with Hypergradient Distillation.* ICLR 2022 (arXiv:2110.02508). No
official code is public; this module follows the paper's text as recorded in
``shared/papers/hyperdistill.md``.

Notation.  ``w`` are the inner weights (any shape, e.g. ``(tasks, P)`` for a meta-batch of task heads),
``lam`` the hyperparameters ``lambda`` (flat ``(H,)``), one inner step is plain SGD
``w_t = Phi(w_{t-1}, lam; D_t) = w_{t-1} - eta grad_w L_train(w_{t-1}, lam; D_t)`` with a minibatch
``D_t`` given as indices into the problem's examples.  ``A_t = dPhi/dw_{t-1}``, ``B_t = dPhi/dlam``,
``alpha_t = dL_val(w_t)/dw_t``.  The paper calls the products ``alpha A`` and ``alpha B`` "JVPs" (they
are reverse-mode vector-Jacobian products); so do we, and we count each product as one JVP.

Equations (numbered as in the paper) -> functions:

* Eq. 2-3, hypergradient ``g^FO_t + g^SO_t`` with ``g^SO_t = alpha_t sum_i (prod_{j>i} A_j) B_i``;
  Alg. 1 (reverse mode through the stored trajectory)             -> :func:`reverse_mode_hypergradient`
* first-order baseline ``g^FO`` only                                -> :func:`first_order_hypergradient`
* one-step lookahead ``g^FO + alpha_T B_T`` (Luketina et al. 2016)  -> :func:`one_step_hypergradient`
* Eq. 7, ``prod A_j ~ gamma^{t-i} I``: ``g^FO + sum_i gamma^{t-i} alpha_t B_i``  -> :func:`gamma_sum_hypergradient`
* DrMAD (Fu et al. 2016, Alg. 2): reverse mode along the straight line ``w_0 -> w_T``
                                                                    -> :func:`drmad_hypergradient`
* Neumann IFT (Lorraine et al. 2020): ``g^FO + sum_{j=0..N} alpha A^j B`` at the last iterate
                                                                    -> :func:`neumann_ift_hypergradient`
* Eq. 13, the distilled point as an online EMA, ``p_t = (gamma - gamma^t)/(1 - gamma^t)``
                                                    -> :func:`ema_weight`, :func:`ema_update`, :func:`distilled_point`
* Eq. 17, its reversed twin (newest iterate weight 1)               -> :func:`reversed_distilled_point`
* Eq. 14 / Eq. 18, the distilled batch ``D*_t = SS(D*_{t-1}, p_t) u SS(D_t, 1 - p_t)``
                                                                    -> :func:`distilled_batch_update`
* Eq. 15, the scale ``c = theta ||v_t|| S_t``, so ``g_t = g^FO_t + theta S_t v_t`` with
  ``v_t = alpha_t dPhi(w*_t, lam; D*_t)/dlam``      -> :func:`horizon_sum`, :func:`hyperdistill_hypergradient`
* Alg. 4 / Eq. 16-18, LinearEstimation of ``theta`` by least squares through the origin
                                                                    -> :func:`linear_estimation`, :func:`fit_theta`
* Alg. 3, the online loop (lambda moves after every inner step; Reptile on the initialisation of w)
                                                                    -> :func:`meta_train`, with the hypergradient
  of every method after inner step t in one place               -> :func:`online_hypergradient`
  (``exact_online``: reverse mode through w_0..w_t after every step, 2t - 1 JVPs, the ceiling; its
  Jacobians are taken at the current lam along iterates that earlier lams produced;
  ``scaled_one_step``: gamma = 0 with a fitted theta, the control that separates a length fix from the
  distilled direction)

Three inner problems: :class:`QuadraticTasks` (a meta-batch of noisy quadratics with a
per-coordinate L2 strength as lam; its first-order term is identically zero), :class:`QuadraticProblem`
(notes §6.4: per-coordinate L2 strength ``e^lam`` as the hyperparameter; exact Jacobians, the exactness
identities) and :class:`ANILRegression` (the paper's App. G sinusoid experiment: a tanh feature
extractor is ``lam``, a linear head with bias is ``w``;
vectorised over the tasks of a meta-batch).

Deliberate simplifications (see the notes §3.12 and §9):

* **plain SGD** in the inner loop (the paper uses momentum 0.9 and does not say how the momentum
  buffer enters A and B), so Phi is a pure function of (w, lam, D);
* the **trajectory is stored** for Eq. 17 (LinearEstimation's distilled points use the true iterates;
  its back-pass uses the interpolated iterates of DrMAD, as Alg. 4 does; ``exact_backpass=True``
  uses the true ones);
* **theta is clipped** to ``[0, theta_max]`` and the unclipped value is logged; it is refit every
  ``estimation_period`` inner-opts (default 5 of M = 30: the paper refits 20 times in M = 1000, every 50);
* **tanh features and lr 0.02** instead of ReLU and lr 0.01 with momentum (the ReLU port diverged in
  the notes' prototypes), Adam on lam as in App. G; the query-set size (30) and meta-learning the head
  by Reptile are our choices (the paper does not state them);
* the distilled batch picks the same example positions for every task of a meta-batch (the tasks'
  examples differ, the positions are shared); with the notebook's 5-example minibatches Eq. 14's
  ``round(|D| p_t)`` quantises the mix (gamma = 0.3: one example kept per step, an effective decay of 0.2;
  gamma = 0.9: four; gamma = 0.99: all five from t = 11 on, so D* stops taking new examples), which the
  paper's |D| = 100 does not;
* DrMAD updates lam once per inner-opt (it is offline); Neumann IFT updates it in the last K steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from tutor.divergence import DivergenceGuard, check_loss
from tutor.train import progress_enabled
from tutor.validation import as_float, as_int, check_inputs

__all__ = ["QuadraticProblem", "ANILRegression", "init_features", "inner_step", "unroll", "sample_batches",
           "step_vjp", "val_grads", "reverse_mode_hypergradient", "first_order_hypergradient",
           "one_step_hypergradient", "gamma_sum_hypergradient", "drmad_hypergradient", "neumann_ift_hypergradient",
           "ema_weight", "ema_update", "distilled_point", "reversed_distilled_point", "distilled_batch_update",
           "horizon_sum", "hyperdistill_hypergradient", "LinearEstimate", "linear_estimation", "fit_theta",
           "HyperDistillConfig", "METHODS", "FITTED", "method_gamma", "jvps_per_inner_opt", "OnlineState",
           "online_hypergradient", "streams", "meta_train", "MetaRun", "meta_test_mse", "QuadraticTasks",
           "estimator_diagnostics", "estimator_cosines", "cosine"]


# --------------------------------------------------------------------------------------------
# inner problems
# --------------------------------------------------------------------------------------------
class QuadraticProblem:
    """The analytic quadratic of notes §6.4 with minibatch noise.

    ``L_train(w, lam; D) = 1/2 (w - c)^T H (w - c) + 1/2 sum_j e^{lam_j} w_j^2 + mean_{k in D} xi_k^T w``,
    ``L_val(w) = 1/2 ||w - w_val||^2``.  So ``A = I - eta (H + diag(e^lam))`` (the noise is linear in w,
    it moves the trajectory but not A or B) and ``B_t = -eta diag(e^lam (.) w_{t-1})``, linear in w.

    Args: hessian ``(P, P)``, centre ``c (P,)``, target ``w_val (P,)``, noise ``xi (n, P)`` (default one
    zero example).
    """

    def __init__(self, hessian: torch.Tensor, centre: torch.Tensor, target: torch.Tensor,
                 noise: torch.Tensor | None = None):
        P = centre.shape[-1]
        if hessian.shape != (P, P) or target.shape != (P,):
            raise ValueError(f"hessian must be ({P}, {P}) and target ({P},), got {tuple(hessian.shape)} "
                             f"and {tuple(target.shape)}")
        self.hessian, self.centre, self.target = hessian, centre, target
        self.noise = torch.zeros(1, P, dtype=centre.dtype) if noise is None else noise
        self.n_examples = self.noise.shape[0]

    def train_loss(self, w: torch.Tensor, lam: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        d = w - self.centre
        return 0.5 * d @ self.hessian @ d + 0.5 * (lam.exp() * w ** 2).sum() + self.noise[idx].mean(0) @ w

    def val_loss(self, w: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((w - self.target) ** 2).sum()

    def curvature(self, lam: torch.Tensor) -> torch.Tensor:
        """``H + diag(e^lam)``, the Hessian of the training loss in w ``(P, P)``."""
        return self.hessian + torch.diag(lam.exp())


def init_features(gen: torch.Generator, hidden=(40, 40, 40), dtype=torch.float32) -> torch.Tensor:
    """lam: the flat parameters of a tanh MLP ``1 -> hidden`` (weights ``N(0, 1/fan_in)``, zero biases)."""
    parts, d_in = [], 1
    for d in hidden:
        parts += [torch.randn(d, d_in, generator=gen, dtype=dtype) / math.sqrt(d_in), torch.zeros(d, dtype=dtype)]
        d_in = d
    return torch.cat([p.flatten() for p in parts])


class ANILRegression:
    """ANIL sinusoid regression (App. G): ``lam`` = a tanh feature extractor, ``w`` = linear heads.

    Tasks are stacked: ``support_x (tasks, S, 1)``, ``support_y (tasks, S, 1)``, query likewise; ``w`` is
    ``(tasks, d + 1)`` (weights and bias of every task's head).  ``L_train`` is the *sum over tasks* of each
    task's mean squared error on the minibatch (so every task's head gets its own gradient) and ``L_val``
    the mean over tasks of the query MSE, so the hypergradient is that of the meta-batch average.
    """

    def __init__(self, support_x, support_y, query_x, query_y, hidden=(40, 40, 40)):
        tasks = support_x.shape[0] if isinstance(support_x, torch.Tensor) and support_x.dim() else None
        for name, t, n in (("support_x", support_x, "S"), ("support_y", support_y, "S"),
                           ("query_x", query_x, "Q"), ("query_y", query_y, "Q")):
            if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[-1] != 1 or t.shape[0] != tasks:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must be (tasks, {n}, 1) with tasks={tasks} (the shape of support_x), got "
                                 f"{shape}" + (" (use y[..., None] for one output)" if name.endswith("_y") else ""))
            check_inputs(t, name)
        if support_y.shape[1] != support_x.shape[1] or query_y.shape[1] != query_x.shape[1]:
            raise ValueError(f"inputs and targets disagree: support {support_x.shape[1]} vs {support_y.shape[1]}, "
                             f"query {query_x.shape[1]} vs {query_y.shape[1]} examples")
        if support_x.shape[1] == 0 or query_x.shape[1] == 0:
            raise ValueError("the support and query sets must not be empty (S, Q >= 1)")
        self.support_x, self.support_y, self.query_x, self.query_y = support_x, support_y, query_x, query_y
        self.hidden = tuple(hidden)
        self.n_examples = support_x.shape[1]
        self.tasks = support_x.shape[0]
        self.head_size = self.hidden[-1] + 1

    @classmethod
    def from_episode(cls, episode, hidden=(40, 40, 40)) -> ANILRegression:
        """From a stacked :class:`~tutor.data.episodes.Episode` of sinusoid tasks."""
        return cls(episode.support_x, episode.support_y, episode.query_x, episode.query_y, hidden)

    def features(self, lam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """tanh MLP features ``x (tasks, n, 1) -> (tasks, n, d)``."""
        h, d_in, i = x, 1, 0
        for d in self.hidden:
            W = lam[i:i + d * d_in].view(d, d_in)
            b = lam[i + d * d_in:i + d * d_in + d]
            h, i, d_in = torch.tanh(h @ W.T + b), i + d * d_in + d, d
        if i != lam.shape[-1]:
            raise ValueError(f"lam has {lam.shape[-1]} entries; hidden={self.hidden} needs {i}")
        return h

    def predict(self, w: torch.Tensor, lam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(tasks, n, 1)`` predictions of every task's head on its inputs."""
        return self.features(lam, x) @ w[:, :-1, None] + w[:, None, -1:]

    def train_loss(self, w, lam, idx):
        pred = self.predict(w, lam, self.support_x[:, idx])
        return ((pred - self.support_y[:, idx]) ** 2).mean((1, 2)).sum()

    def per_task_val_loss(self, w, lam) -> torch.Tensor:
        """Query MSE of every task ``(tasks,)``."""
        return ((self.predict(w, lam, self.query_x) - self.query_y) ** 2).mean((1, 2))

    def val_loss(self, w, lam):
        return self.per_task_val_loss(w, lam).mean()


# --------------------------------------------------------------------------------------------
# the inner loop and its products
# --------------------------------------------------------------------------------------------
def _check_gamma(gamma: float) -> None:
    if not isinstance(gamma, (int, float)) or not 0 <= gamma < 1:
        raise ValueError(f"gamma must be a number in [0, 1), got {gamma!r}")


def _check_horizon(T: int) -> None:
    as_int(T, "the horizon (inner_steps, T)", 1)


def inner_step(problem, w: torch.Tensor, lam: torch.Tensor, idx: torch.Tensor, lr: float,
               create_graph: bool = False, guard: DivergenceGuard | None = None) -> torch.Tensor:
    """``Phi(w, lam; D) = w - eta grad_w L_train(w, lam; D)`` (plain SGD); a diverged loss (the package's one
    rule, :mod:`tutor.divergence`; ``guard`` carries the reference of a whole trajectory) stops with an
    error naming the inner learning rate."""
    with torch.enable_grad():
        if not create_graph:
            w, lam = w.detach().requires_grad_(), lam.detach()
        elif not w.requires_grad:                       # a constant start w_0: make it differentiable
            w = w.detach().requires_grad_()
        loss = problem.train_loss(w, lam, idx)
        if guard is not None:
            guard(loss)
        else:
            check_loss(loss, setting=f"the inner learning rate (inner_lr={lr}) or the horizon",
                       what="the inner training loss")
        (g,) = torch.autograd.grad(loss, w, create_graph=create_graph)
    out = w - lr * g
    return out if create_graph else out.detach()


def sample_batches(T: int, n_examples: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    """``T`` minibatches of ``batch`` distinct example indices each: ``(T, batch)`` long."""
    _check_horizon(T)
    if not 1 <= batch <= n_examples:
        raise ValueError(f"batch must be in [1, {n_examples}] (the number of examples), got {batch}")
    return torch.stack([torch.randperm(n_examples, generator=gen)[:batch] for _ in range(T)])


def unroll(problem, w0: torch.Tensor, lam: torch.Tensor, batches: torch.Tensor, lr: float) -> torch.Tensor:
    """The stored trajectory ``w_0..w_T``: ``(T + 1, *w.shape)`` for ``batches (T, b)``."""
    _check_horizon(len(batches))
    ws = [w0.detach()]
    guard = DivergenceGuard(setting=f"the inner learning rate (inner_lr={lr}) or the horizon",
                            what="the inner training loss")
    for idx in batches:
        ws.append(inner_step(problem, ws[-1], lam, idx, lr, guard=guard))
    return torch.stack(ws)


def step_vjp(problem, alpha: torch.Tensor, w: torch.Tensor, lam: torch.Tensor, idx: torch.Tensor,
             lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha A, alpha B)``: ``alpha`` times the Jacobians of ``Phi(w, lam; D)`` in w and in lam
    (shapes of w and of lam), from one Hessian-vector product."""
    with torch.enable_grad():
        w, lam = w.detach().requires_grad_(), lam.detach().requires_grad_()
        (g,) = torch.autograd.grad(problem.train_loss(w, lam, idx), w, create_graph=True)
        gw, gl = torch.autograd.grad((alpha.detach() * g).sum(), (w, lam), allow_unused=True)
    gw = torch.zeros_like(w) if gw is None else gw
    gl = torch.zeros_like(lam) if gl is None else gl
    return alpha.detach() - lr * gw, -lr * gl


def val_grads(problem, w: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha, g^FO) = (dL_val/dw, dL_val/dlam)`` at ``(w, lam)``."""
    with torch.enable_grad():
        w, lam = w.detach().requires_grad_(), lam.detach().requires_grad_()
        a, g = torch.autograd.grad(problem.val_loss(w, lam), (w, lam), allow_unused=True)
    return a, (torch.zeros_like(lam) if g is None else g)


# --------------------------------------------------------------------------------------------
# hypergradient estimators on a stored trajectory (horizon T = len(batches))
# --------------------------------------------------------------------------------------------
def reverse_mode_hypergradient(problem, ws, lam, batches, lr) -> torch.Tensor:
    """Exact ``dL_val(w_T)/dlam`` (Eq. 2-3) by Alg. 1: ``g = g^FO``, then for ``t = T..1``:
    ``g += alpha B_t;  alpha <- alpha A_t`` at the stored ``(w_{t-1}, D_t)``.  ``2T - 1`` JVPs."""
    alpha, g = val_grads(problem, ws[-1], lam)
    for t in range(len(batches), 0, -1):
        alpha_a, alpha_b = step_vjp(problem, alpha, ws[t - 1], lam, batches[t - 1], lr)
        g, alpha = g + alpha_b, alpha_a
    return g


def first_order_hypergradient(problem, ws, lam, batches=None, lr=None) -> torch.Tensor:
    """FO: ``g^FO_T = dL_val(w_T, lam)/dlam`` at fixed w (the response Jacobian dropped).  0 JVPs."""
    return val_grads(problem, ws[-1], lam)[1]


def one_step_hypergradient(problem, ws, lam, batches, lr) -> torch.Tensor:
    """One-step lookahead: ``g^FO_T + alpha_T B_T`` (w_{T-1} treated as constant).  1 JVP."""
    alpha, g = val_grads(problem, ws[-1], lam)
    return g + step_vjp(problem, alpha, ws[-2], lam, batches[-1], lr)[1]


def gamma_sum_hypergradient(problem, ws, lam, batches, lr, gamma: float) -> torch.Tensor:
    """Eq. 7: ``g^FO_T + sum_i gamma^{T-i} alpha_T B_i`` (products of Jacobians replaced by ``gamma^{T-i} I``).
    T JVPs: an intermediate target, not an online method."""
    _check_gamma(gamma)
    alpha, g = val_grads(problem, ws[-1], lam)
    T = len(batches)
    for i in range(1, T + 1):
        g = g + gamma ** (T - i) * step_vjp(problem, alpha, ws[i - 1], lam, batches[i - 1], lr)[1]
    return g


def drmad_hypergradient(problem, ws, lam, batches, lr) -> torch.Tensor:
    """DrMAD (Alg. 2): Alg. 1 on the straight line ``w_hat_{t-1} = (1 - (t-1)/T) w_0 + ((t-1)/T) w_T``
    (only w_0 and w_T are needed).  ``2T - 1`` JVPs, once per inner optimisation (offline)."""
    T = len(batches)
    alpha, g = val_grads(problem, ws[-1], lam)
    for t in range(T, 0, -1):
        s = (t - 1) / T
        w_hat = (1 - s) * ws[0] + s * ws[-1]
        alpha_a, alpha_b = step_vjp(problem, alpha, w_hat, lam, batches[t - 1], lr)
        g, alpha = g + alpha_b, alpha_a
    return g


def neumann_ift_hypergradient(problem, w, lam, idx, lr, terms: int) -> torch.Tensor:
    """Neumann IFT at ``w`` (assumed a fixed point): ``g^FO - alpha (grad^2_w L)^{-1} grad^2_{w lam} L`` with
    the inverse replaced by ``eta sum_{j=0..N} (I - eta grad^2_w L)^j``, i.e. ``g^FO + sum_{j=0..N} (alpha A^j) B``.
    ``N + 1`` JVPs (``terms = N``)."""
    if int(terms) != terms or terms < 0:
        raise ValueError(f"terms (N) must be an integer >= 0, got {terms!r}")
    alpha, g = val_grads(problem, w, lam)
    acc = alpha
    for _ in range(terms):                      # acc = sum_{j=0..N} alpha A^j
        alpha = step_vjp(problem, alpha, w, lam, idx, lr)[0]
        acc = acc + alpha
    return g + step_vjp(problem, acc, w, lam, idx, lr)[1]


# --------------------------------------------------------------------------------------------
# distillation: the EMA point (Eq. 13, 17), the batch (Eq. 14, 18) and the scale (Eq. 15)
# --------------------------------------------------------------------------------------------
def horizon_sum(t: int, gamma: float) -> float:
    """``S_t = sum_{i=1..t} gamma^{t-i} = (1 - gamma^t)/(1 - gamma)`` (``S_t = 1`` for gamma = 0)."""
    _check_gamma(gamma)
    _check_horizon(t)
    return (1 - gamma ** t) / (1 - gamma)


def ema_weight(t: int, gamma: float) -> float:
    """Eq. 13: ``p_t = (gamma - gamma^t)/(1 - gamma^t)`` = ``S_{t-1} gamma / S_t``, the weight kept on
    ``w*_{t-1}`` (``p_1 = 0``)."""
    _check_gamma(gamma)
    _check_horizon(t)
    return 0.0 if t == 1 else (gamma - gamma ** t) / (1 - gamma ** t)


def ema_update(w_star, w_prev, t: int, gamma: float):
    """Eq. 13: ``w*_t = p_t w*_{t-1} + (1 - p_t) w_{t-1}`` (``w*_1 = w_0``; pass ``w_star=None`` at t = 1)."""
    if t == 1 or w_star is None:
        return w_prev
    p = ema_weight(t, gamma)
    return p * w_star + (1 - p) * w_prev


def distilled_point(ws: torch.Tensor, gamma: float) -> torch.Tensor:
    """``w*_t`` for the iterates ``ws = (w_0..w_{t-1})`` by the Eq. 13 recursion; equals
    ``sum_i gamma^{t-i} w_{i-1} / S_t`` (gamma = 0: the last iterate ``w_{t-1}``)."""
    _check_gamma(gamma)
    w_star = None
    for t in range(1, len(ws) + 1):
        w_star = ema_update(w_star, ws[t - 1], t, gamma)
    return w_star


def reversed_distilled_point(ws: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 17: ``w*_s`` over the last ``s = len(ws)`` iterates ``ws = (w_{T-s}..w_{T-1})``, built newest
    first: ``w*_1 = w_{T-1}``, ``w*_s = p_s w*_{s-1} + (1 - p_s) w_{T-s}``, ``p_s = (1 - gamma^{s-1})/(1 - gamma^s)``.
    Weights: newest 1, oldest ``gamma^{s-1}`` (normalised)."""
    _check_gamma(gamma)
    w_star = ws[-1]
    for s in range(2, len(ws) + 1):
        p = (1 - gamma ** (s - 1)) / (1 - gamma ** s)
        w_star = p * w_star + (1 - p) * ws[-s]
    return w_star


def distilled_batch_update(d_star: torch.Tensor, d_new: torch.Tensor, p: float,
                           gen: torch.Generator) -> torch.Tensor:
    """Eq. 14: ``D* <- SS(D*, p) u SS(D_new, 1 - p)``; SS draws ``round(|D| p)`` examples without
    replacement, so the size stays ``|D|``.  Batches are index tensors ``(b,)``."""
    if d_star.shape != d_new.shape:
        raise ValueError(f"batches must have the same size, got {tuple(d_star.shape)} and {tuple(d_new.shape)}")
    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    b = d_star.shape[0]
    k = int(round(b * p))
    keep = d_star[torch.randperm(b, generator=gen)[:k]]
    new = d_new[torch.randperm(b, generator=gen)[:b - k]]
    return torch.cat([keep, new])


def hyperdistill_hypergradient(problem, ws, lam, batches, lr, gamma: float, theta: float,
                               gen: torch.Generator | None = None) -> torch.Tensor:
    """HyperDistill at horizon T (Eq. 13-15): ``g^FO_T + theta S_T v_T`` with
    ``v_T = alpha_T dPhi(w*_T, lam; D*_T)/dlam``, ``w*_T`` the EMA of ``w_0..w_{T-1}`` and ``D*_T`` the distilled
    batch.  This is the value the online loop uses at its last step; 1 JVP."""
    _check_gamma(gamma)
    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    T = len(batches)
    d_star = batches[0]
    for t in range(2, T + 1):
        d_star = distilled_batch_update(d_star, batches[t - 1], ema_weight(t, gamma), gen)
    w_star = distilled_point(ws[:-1], gamma)
    alpha, g = val_grads(problem, ws[-1], lam)
    v = step_vjp(problem, alpha, w_star, lam, d_star, lr)[1]
    return g + theta * horizon_sum(T, gamma) * v


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """``a^T b / (|a| |b|)`` (0 when either is zero)."""
    na, nb = a.norm(), b.norm()
    return 0.0 if na == 0 or nb == 0 else (a.flatten() @ b.flatten() / (na * nb)).item()


@dataclass
class LinearEstimate:
    """What :func:`linear_estimation` returns: the clipped and raw slopes and the samples (x_s, y_s)."""

    theta: float
    theta_raw: float
    x: torch.Tensor      # (T,)  ||v_s|| S_s
    y: torch.Tensor      # (T,)  sigma(v_s)^T gSO_s
    jvps: int


def linear_estimation(problem, ws, lam, batches, lr, gamma: float, theta_max: float = 10.0,
                      gen: torch.Generator | None = None, exact_backpass: bool = False) -> LinearEstimate:
    """Alg. 4 (Eq. 16-18): fit ``theta`` so that ``theta ||v_s|| S_s ~ sigma(v_s)^T g^SO_s`` for horizons
    ``s = 1..T`` ending at T, by least squares through the origin, clipped to ``[0, theta_max]``.

    The back-pass runs on DrMAD's straight line (``exact_backpass=True``: on the stored iterates); after
    step ``t`` it holds the SO term of horizon ``s = T - t + 1`` (Eq. 16).  The distilled points are the
    reversed EMA of the stored iterates (Eq. 17) and the distilled batches Eq. 18 (``D*_s`` mixes ``D_{T-s+1}``).
    """
    _check_gamma(gamma)
    if theta_max <= 0:
        raise ValueError(f"theta_max must be > 0, got {theta_max}")
    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    T = len(batches)
    alpha_T, _ = val_grads(problem, ws[-1], lam)
    alpha, g_so = alpha_T, torch.zeros_like(lam)
    w_star, d_star, xs, ys, jvps = None, None, [], [], 0
    for t in range(T, 0, -1):
        s = T - t + 1
        w_back = ws[t - 1] if exact_backpass else (1 - (t - 1) / T) * ws[0] + ((t - 1) / T) * ws[-1]
        alpha_a, alpha_b = step_vjp(problem, alpha, w_back, lam, batches[t - 1], lr)
        g_so, alpha, jvps = g_so + alpha_b, alpha_a, jvps + (2 if t > 1 else 1)
        if s == 1:                                                   # Eq. 17-18, newest first
            w_star, d_star = ws[T - 1], batches[T - 1]
        else:
            p = (1 - gamma ** (s - 1)) / (1 - gamma ** s)
            w_star = p * w_star + (1 - p) * ws[T - s]
            d_star = distilled_batch_update(d_star, batches[T - s], p, gen)
        v = step_vjp(problem, alpha_T, w_star, lam, d_star, lr)[1]
        jvps += 1
        nv = v.norm()
        xs.append(nv * horizon_sum(s, gamma))
        ys.append((v / nv) @ g_so if nv > 0 else torch.zeros((), dtype=lam.dtype))
    x, y = torch.stack(xs), torch.stack(ys)
    theta, raw = fit_theta(x, y, theta_max)
    return LinearEstimate(theta, raw, x, y, jvps)


def fit_theta(x: torch.Tensor, y: torch.Tensor, theta_max: float = 10.0) -> tuple[float, float]:
    """Least squares through the origin, ``theta = x^T y / x^T x`` (Alg. 4), and its clip to ``[0, theta_max]``:
    returns ``(clipped, raw)``."""
    if x.shape != y.shape or x.dim() != 1:
        raise ValueError(f"x and y must be 1-D of the same length, got {tuple(x.shape)} and {tuple(y.shape)}")
    raw = (x @ y / (x @ x)).item() if (x @ x) > 0 else 0.0
    return min(max(raw, 0.0), theta_max), raw


# --------------------------------------------------------------------------------------------
# a meta-batch of quadratics whose first-order term is identically zero (regime map)
# --------------------------------------------------------------------------------------------
class QuadraticTasks:
    """A meta-batch of noisy diagonal quadratics with a per-coordinate L2 strength ``e^lam`` as the hyperparameter.

    Task ``i``: ``L_train(w_i) = 1/2 sum_j k_j (w_ij - c_ij)^2 + 1/2 sum_j e^{lam_j} w_ij^2 + mean_{D} xi_ik^T w_i``,
    ``L_val(w_i) = 1/2 ||w_i - rho (.) c_i||^2`` (the validation optimum is a shrunk copy of the training
    optimum, so some L2 strength helps).  ``L_val`` does not depend on lam: the first-order term ``g^FO`` is
    identically zero and the whole hypergradient is the second-order term (the paper's sharpest case).
    ``w`` is ``(tasks, P)``; ``L_train`` sums the tasks' losses and ``L_val`` averages them.
    """

    def __init__(self, curvature: torch.Tensor, centre: torch.Tensor, target: torch.Tensor, noise: torch.Tensor):
        if centre.dim() != 2 or target.shape != centre.shape or curvature.shape != centre.shape[-1:]:
            raise ValueError(f"centre and target must be (tasks, P) and curvature (P,), got {tuple(centre.shape)}, "
                             f"{tuple(target.shape)} and {tuple(curvature.shape)}")
        if noise.dim() != 3 or noise.shape[0] != centre.shape[0] or noise.shape[2] != centre.shape[1]:
            raise ValueError(f"noise must be (tasks, n, P), got {tuple(noise.shape)}")
        self.curvature, self.centre, self.target, self.noise = curvature, centre, target, noise
        self.tasks, self.n_examples, self.head_size = centre.shape[0], noise.shape[1], centre.shape[1]

    @classmethod
    def sample(cls, tasks: int, gen: torch.Generator, dim: int = 8, examples: int = 16, noise: float = 0.5,
               dtype=torch.float32) -> QuadraticTasks:
        """``tasks`` quadratics: curvatures ``k`` log-spaced in [0.03, 1], shrink factors ``rho`` in [0.3, 0.9]
        (fixed), centres ``c ~ N(0, I)`` and minibatch noise ``xi ~ N(0, noise^2 I)`` per task."""
        k = torch.logspace(-1.5, 0.0, dim, dtype=dtype)
        rho = torch.linspace(0.3, 0.9, dim, dtype=dtype)
        c = torch.randn(tasks, dim, generator=gen).to(dtype)
        xi = noise * torch.randn(tasks, examples, dim, generator=gen).to(dtype)
        return cls(k, c, rho * c, xi)

    def train_loss(self, w, lam, idx):
        d = w - self.centre
        return (0.5 * (self.curvature * d ** 2).sum() + 0.5 * (lam.exp() * w ** 2).sum()
                + (self.noise[:, idx].mean(1) * w).sum())

    def per_task_val_loss(self, w, lam) -> torch.Tensor:
        return 0.5 * ((w - self.target) ** 2).sum(-1)

    def val_loss(self, w, lam):
        return self.per_task_val_loss(w, lam).mean()


# --------------------------------------------------------------------------------------------
# Alg. 3: online hyperparameter meta-learning
# --------------------------------------------------------------------------------------------
METHODS = ("fo", "one_step", "scaled_one_step", "hyperdistill", "exact_online", "drmad", "neumann")
FITTED = ("scaled_one_step", "hyperdistill")      # the methods whose JVP is scaled by a fitted theta


@dataclass
class HyperDistillConfig:
    """The App. G sinusoid setting in the stable configuration of notes §6.2 (defaults fit the notebook)."""

    inner_steps: int = 30          # T, plain-SGD steps per inner optimisation
    inner_lr: float = 0.02         # eta of the inner SGD
    batch: int = 5                 # minibatch of support points per inner step (of `shots`)
    shots: int = 10                # support points per task
    queries: int = 30              # query points per task (the validation loss)
    hidden: tuple = (40, 40, 40)   # tanh feature extractor 1-40-40-40 (= lam)
    hyper_lr: float = 1e-3         # Adam on lam
    inner_opts: int = 30           # M, inner optimisations (meta-batches) per run
    meta_batch: int = 10           # tasks per inner optimisation, run in parallel
    reptile_lr: float = 1.0        # eta_Reptile on the head initialisation phi
    gamma: float = 0.9             # HyperDistill decay
    theta_max: float = 10.0        # clip of the fitted scale
    estimation_period: int = 5     # refit theta at m = 0, 5, 10, ... (the paper: every 50 of M = 1000)
    neumann_terms: int = 3         # N of N.IFT(N, K) (App. G: (3, 5))
    neumann_last: int = 5          # K of N.IFT(N, K): online in the last K steps

    def __post_init__(self):
        _check_gamma(self.gamma)
        _check_horizon(self.inner_steps)
        for name in ("inner_lr", "hyper_lr", "reptile_lr", "theta_max"):      # finite and > 0 (inf is not a rate)
            setattr(self, name, as_float(getattr(self, name), name, 0.0, strict=True))
        for name in ("inner_opts", "meta_batch", "shots", "queries", "estimation_period", "batch",
                     "neumann_terms", "neumann_last"):
            setattr(self, name, as_int(getattr(self, name), name, 0 if name == "neumann_terms" else 1))
        if not 1 <= self.batch <= self.shots:
            raise ValueError(f"batch must be in [1, shots={self.shots}], got {self.batch}")
        if not 1 <= self.neumann_last <= self.inner_steps:
            raise ValueError(f"neumann_last must be in [1, inner_steps={self.inner_steps}], got {self.neumann_last}")


def method_gamma(method: str, cfg: HyperDistillConfig) -> float:
    """The decay a fitted method distils with: the config's gamma, or 0 for the scaled one-step control."""
    return 0.0 if method == "scaled_one_step" else cfg.gamma


def jvps_per_inner_opt(method: str, cfg: HyperDistillConfig, amortised: bool = False) -> float:
    """The paper's #JVP per inner optimisation (Table 2).  ``amortised=True`` adds the LinearEstimation fits
    (``3T - 1`` JVPs each, at m = 0, P, 2P, ... of M) spread over the M inner optimisations."""
    T = cfg.inner_steps
    counts = {"fo": 0, "one_step": T, "scaled_one_step": T, "hyperdistill": T, "exact_online": T * T,
              "drmad": 2 * T - 1, "neumann": (cfg.neumann_terms + 1) * cfg.neumann_last, "reverse_mode_online": T * T}
    if method not in counts:
        raise ValueError(f"method must be one of {sorted(counts)}, got {method!r}")
    n = counts[method]
    if amortised and method in FITTED:
        fits = math.ceil(cfg.inner_opts / cfg.estimation_period)
        return n + fits * (3 * T - 1) / cfg.inner_opts
    return n


@dataclass
class OnlineState:
    """What Alg. 3 carries through one inner optimisation: the stored iterates (exact online reverse mode),
    the fitted scale theta, the distilled point ``w*_t`` and batch ``D*_t``."""

    ws: list
    theta: float = 1.0
    w_star: torch.Tensor | None = None
    d_star: torch.Tensor | None = None


def online_hypergradient(method: str, problem, lam, state: OnlineState, w_prev, w, batches, t: int,
                         cfg: HyperDistillConfig, gen: torch.Generator) -> tuple[torch.Tensor | None, int]:
    """The hypergradient Alg. 3 applies to lam right after inner step ``t`` (``w_prev = w_{t-1}``, ``w = w_t``),
    and its JVP count; ``(None, 0)`` when the method leaves lam alone at this step (DrMAD is offline; N.IFT
    acts in the last K steps only).  ``gen`` draws the distilled batches (its own stream).

    * fo:               ``g^FO_t``
    * one_step:         ``g^FO_t + alpha_t B_t``
    * hyperdistill:     ``g^FO_t + theta S_t v_t``, ``v_t = alpha_t dPhi(w*_t, lam; D*_t)/dlam`` (Eq. 13-15)
    * scaled_one_step:  the same with gamma = 0: ``g^FO_t + theta alpha_t B_t`` (theta fitted at gamma = 0)
    * exact_online:     exact reverse mode through ``w_0..w_t`` (Alg. 1, ``2t - 1`` JVPs)
    * neumann:          N.IFT(N, K) at ``w_t``
    """
    T, eta, idx = cfg.inner_steps, cfg.inner_lr, batches[t - 1]
    if method in FITTED:                                # Eq. 13-14: w*_t mixes w_0..w_{t-1}; D*_t mixes D_1..D_t
        gamma = method_gamma(method, cfg)
        state.w_star = ema_update(state.w_star, w_prev, t, gamma)
        state.d_star = idx if t == 1 else distilled_batch_update(state.d_star, idx, ema_weight(t, gamma), gen)
    if method == "exact_online":
        state.ws.append(w)
    if method == "drmad" or (method == "neumann" and t <= T - cfg.neumann_last):
        return None, 0
    alpha, g_fo = val_grads(problem, w, lam)            # alpha_t at the new w_t
    if method == "fo":
        return g_fo, 0
    if method == "one_step":
        return g_fo + step_vjp(problem, alpha, w_prev, lam, idx, eta)[1], 1
    if method in FITTED:                                # Eq. 15
        v = step_vjp(problem, alpha, state.w_star, lam, state.d_star, eta)[1]
        return g_fo + state.theta * horizon_sum(t, gamma) * v, 1
    if method == "exact_online":
        return reverse_mode_hypergradient(problem, torch.stack(state.ws), lam, batches[:t], eta), 2 * t - 1
    if method == "neumann":
        return neumann_ift_hypergradient(problem, w, lam, idx, eta, cfg.neumann_terms), cfg.neumann_terms + 1
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


@dataclass
class MetaRun:
    """The result of :func:`meta_train`: final ``lam`` and ``phi`` and a plottable history."""

    lam: torch.Tensor
    phi: torch.Tensor
    val_loss: list[float] = field(default_factory=list)     # mean L_val(w_T) of each inner-opt
    jvps: list[int] = field(default_factory=list)           # cumulative JVPs after each inner-opt
    theta: list[tuple[int, float, float]] = field(default_factory=list)   # (m, clipped, raw)
    diagnostics: list[tuple[int, dict]] = field(default_factory=list)     # (m, estimator_diagnostics(...))


def _sinusoid_problem(sampler, cfg, gen, dtype):
    ep = sampler.batch(cfg.meta_batch, cfg.shots, cfg.queries, gen).to(dtype=dtype)
    return ANILRegression.from_episode(ep, cfg.hidden)


def streams(seed: int) -> dict:
    """The generators of one run, one per source of randomness, so that runs of different methods with the
    same seed see the same initialisation and the same tasks and minibatches (paired comparisons):
    ``tasks`` (lam's initialisation, then the task stream), ``distilled`` (the D* draws of the online loop),
    ``estimation`` (LinearEstimation's D* draws), ``diagnostics``."""
    return {name: torch.Generator().manual_seed(seed + 1_000_003 * k)
            for k, name in enumerate(("tasks", "distilled", "estimation", "diagnostics"))}


def meta_train(cfg: HyperDistillConfig, method: str, seed: int = 0, sampler=None, dtype=torch.float32,
               diagnose_every: int = 0, diagnose_problem=None, progress: bool | None = None,
               make_problem=None, lam0: torch.Tensor | None = None) -> MetaRun:
    """Alg. 3: ``M`` inner optimisations of a meta-batch in parallel; lam takes an Adam step on the method's
    hypergradient after every inner step (:func:`online_hypergradient`; DrMAD: once per inner-opt on its
    offline estimate); the fitted methods refit theta by LinearEstimation every ``estimation_period``
    inner-opts; after each inner-opt Reptile moves the head initialisation phi.

    Defaults: sinusoid ANIL tasks from ``sampler`` (``make_problem(gen) -> problem`` and ``lam0`` replace
    them, e.g. :class:`QuadraticTasks`).  The task stream, the D* draws and LinearEstimation use separate
    generators (:func:`streams`), so every method sees the same tasks for a seed.  ``diagnose_every > 0``
    records :func:`estimator_diagnostics` every that many inner-opts on ``diagnose_problem``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    from tutor.data.tasks import SinusoidTasks

    gens = streams(seed)
    if make_problem is None:
        sampler = sampler or SinusoidTasks()
        make_problem = lambda gen: _sinusoid_problem(sampler, cfg, gen, dtype)   # noqa: E731
    lam = (init_features(gens["tasks"], cfg.hidden, dtype) if lam0 is None else lam0.detach().clone()).requires_grad_()
    phi = None
    opt = torch.optim.Adam([lam], lr=cfg.hyper_lr)
    T, eta, theta = cfg.inner_steps, cfg.inner_lr, 1.0
    run, jvps = MetaRun(lam, phi), 0
    if progress is None:
        progress = progress_enabled()
    val_guard = DivergenceGuard(setting=f"hyper_lr={cfg.hyper_lr} or inner_lr={eta}", what="the validation loss")
    inner_guard = DivergenceGuard(setting=f"the inner learning rate (inner_lr={eta}) or hyper_lr={cfg.hyper_lr}",
                                  what="the inner training loss")

    def hyper_step(g):
        opt.zero_grad()
        lam.grad = g.detach().clone()
        opt.step()

    for m in tqdm(range(cfg.inner_opts), desc=method, disable=not progress, leave=False, mininterval=0.5):
        problem = make_problem(gens["tasks"])
        batches = sample_batches(T, problem.n_examples, cfg.batch, gens["tasks"])
        if phi is None:
            phi = torch.zeros(problem.head_size, dtype=dtype)         # the heads' initialisation (Reptile)
        w0 = phi.expand(problem.tasks, -1).clone()
        if method in FITTED and m % cfg.estimation_period == 0:        # Alg. 3: theta <- LinearEstimation
            est = linear_estimation(problem, unroll(problem, w0, lam, batches, eta), lam.detach(), batches, eta,
                                    method_gamma(method, cfg), cfg.theta_max, gens["estimation"])
            theta, jvps = est.theta, jvps + est.jvps
            run.theta.append((m, est.theta, est.theta_raw))
        if diagnose_every and m % diagnose_every == 0:
            run.diagnostics.append((m, estimator_diagnostics(diagnose_problem or problem, phi, lam.detach(), cfg,
                                                             theta if method in FITTED else None)))
        state, w = OnlineState([w0], theta), w0
        for t in range(1, T + 1):                                     # w_t = Phi(w_{t-1}, lam; D_t)
            w_prev, w = w, inner_step(problem, w, lam.detach(), batches[t - 1], eta, guard=inner_guard)
            g, n = online_hypergradient(method, problem, lam.detach(), state, w_prev, w, batches, t, cfg,
                                        gens["distilled"])
            if g is not None:                                         # lam <- lam - eta_hyper g (Adam)
                hyper_step(g)
                jvps += n
        if method == "drmad":                                         # offline: one update per inner-opt
            ws = unroll(problem, w0, lam, batches, eta)
            hyper_step(drmad_hypergradient(problem, ws, lam.detach(), batches, eta))
            jvps += 2 * T - 1
            w = ws[-1]
        run.val_loss.append(val_guard(problem.val_loss(w, lam.detach()), where=f"at inner-opt {m} ({method})"))
        run.jvps.append(jvps)
        phi = phi - cfg.reptile_lr * (phi - w.mean(0))               # Reptile on the head initialisation
    run.lam, run.phi = lam.detach(), phi.detach()
    return run


def _so_stats(est: torch.Tensor, exact: torch.Tensor) -> dict:
    """cosine, projection ``est^T exact / |exact|^2`` and length ratio ``|est| / |exact|`` of two SO terms."""
    n2 = (exact.flatten() @ exact.flatten()).clamp_min(1e-300)
    return {"cos": cosine(est, exact), "proj": (est.flatten() @ exact.flatten() / n2).item(),
            "ratio": (est.norm() / n2.sqrt()).item()}


def estimator_diagnostics(problem, phi, lam, cfg: HyperDistillConfig, theta_run: float | None = None,
                          gen: torch.Generator | None = None, draws: int = 5) -> dict:
    """How well each estimator's second-order (SO) term matches the exact one, on one trajectory of horizon T
    from ``phi`` (the paper's Fig. 3b/c quantity, plus the lengths).

    Returns ``exact_so_norm`` and ``fo_norm``; ``so[name] = {cos, proj, ratio}`` (cosine to the exact SO term,
    projection onto it over its squared length, length ratio) for ``one_step`` (``alpha_T B_T``),
    ``gamma_sum`` (Eq. 7, unscaled), ``hd_unit`` (the distilled ``S_T v_T`` with theta = 1; multiply proj and
    ratio by any theta), ``drmad`` and ``neumann``; ``theta_refit`` / ``theta0_refit``: LinearEstimation on
    this trajectory at gamma and at 0 (fresh thetas of HyperDistill and of the scaled one-step control);
    ``theta_run``: the run's current theta (None for unfitted methods); ``hd_draws``: cosines of ``draws``
    distilled JVPs (fresh D* draws) to the exact SO term and to the gamma-sum; ``full``: cosines of full
    hypergradients to exact, with the thetas named in the keys."""
    gen = gen if gen is not None else torch.Generator().manual_seed(1)
    T, eta, gamma = cfg.inner_steps, cfg.inner_lr, cfg.gamma
    batches = sample_batches(T, problem.n_examples, cfg.batch, gen)
    w0 = phi.expand(problem.tasks, -1).clone()
    ws = unroll(problem, w0, lam, batches, eta)
    exact = reverse_mode_hypergradient(problem, ws, lam, batches, eta)
    alpha, g_fo = val_grads(problem, ws[-1], lam)
    so = exact - g_fo
    jv = [step_vjp(problem, alpha, ws[i - 1], lam, batches[i - 1], eta)[1] for i in range(1, T + 1)]
    gsum = sum(gamma ** (T - i) * jv[i - 1] for i in range(1, T + 1))
    w_star, hd = distilled_point(ws[:-1], gamma), []
    for _ in range(draws):
        d_star = batches[0]
        for t in range(2, T + 1):
            d_star = distilled_batch_update(d_star, batches[t - 1], ema_weight(t, gamma), gen)
        hd.append(horizon_sum(T, gamma) * step_vjp(problem, alpha, w_star, lam, d_star, eta)[1])
    fit = linear_estimation(problem, ws, lam, batches, eta, gamma, cfg.theta_max, gen)
    fit0 = linear_estimation(problem, ws, lam, batches, eta, 0.0, cfg.theta_max, gen)
    est = {"one_step": jv[-1], "gamma_sum": gsum, "hd_unit": hd[0],
           "drmad": drmad_hypergradient(problem, ws, lam, batches, eta) - g_fo,
           "neumann": neumann_ift_hypergradient(problem, ws[-1], lam, batches[-1], eta, cfg.neumann_terms) - g_fo}
    full = {"fo": cosine(g_fo, exact), "one_step": cosine(g_fo + jv[-1], exact),
            "scaled_one_step_refit": cosine(g_fo + fit0.theta * jv[-1], exact),
            "hyperdistill_refit": cosine(g_fo + fit.theta * hd[0], exact),
            "drmad": cosine(g_fo + est["drmad"], exact), "neumann": cosine(g_fo + est["neumann"], exact)}
    if theta_run is not None:
        full["fitted_run_theta"] = cosine(g_fo + theta_run * hd[0], exact)
    return {"exact_so_norm": so.norm().item(), "fo_norm": g_fo.norm().item(),
            "so": {k: _so_stats(v, so) for k, v in est.items()},
            "theta_refit": fit.theta, "theta_refit_raw": fit.theta_raw, "theta0_refit": fit0.theta,
            "theta_run": theta_run, "gamma": gamma,
            "hd_draws": {"cos_exact": [cosine(h, so) for h in hd], "cos_gamma_sum": [cosine(h, gsum) for h in hd]},
            "full": full}


def estimator_cosines(problem, phi, lam, cfg: HyperDistillConfig, theta: float,
                      gen: torch.Generator | None = None) -> dict:
    """Cosine to exact reverse mode of every estimator's full hypergradient at horizon T from ``phi`` (one
    trajectory); the HyperDistill entry uses the given ``theta``."""
    gen = gen if gen is not None else torch.Generator().manual_seed(1)
    T, eta = cfg.inner_steps, cfg.inner_lr
    batches = sample_batches(T, problem.n_examples, cfg.batch, gen)
    w0 = phi.expand(problem.tasks, -1).clone() if hasattr(problem, "tasks") else phi
    ws = unroll(problem, w0, lam, batches, eta)
    exact = reverse_mode_hypergradient(problem, ws, lam, batches, eta)
    est = {"fo": first_order_hypergradient(problem, ws, lam),
           "one_step": one_step_hypergradient(problem, ws, lam, batches, eta),
           "gamma_sum": gamma_sum_hypergradient(problem, ws, lam, batches, eta, cfg.gamma),
           "hyperdistill": hyperdistill_hypergradient(problem, ws, lam, batches, eta, cfg.gamma, theta, gen),
           "drmad": drmad_hypergradient(problem, ws, lam, batches, eta),
           "neumann": neumann_ift_hypergradient(problem, ws[-1], lam, batches[-1], eta, cfg.neumann_terms)}
    return {k: cosine(v, exact) for k, v in est.items()}


def meta_test_mse(problem, phi, lam, cfg: HyperDistillConfig, seed: int = 0) -> torch.Tensor:
    """Per-task validation loss ``(tasks,)`` (query MSE for ANIL) after T inner SGD steps from ``phi`` with lam
    fixed."""
    gen = torch.Generator().manual_seed(seed)
    batches = sample_batches(cfg.inner_steps, problem.n_examples, cfg.batch, gen)
    w = phi.expand(problem.tasks, -1).clone()
    for idx in batches:
        w = inner_step(problem, w, lam, idx, cfg.inner_lr)
    with torch.no_grad():
        return problem.per_task_val_loss(w, lam)
