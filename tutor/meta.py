"""The shared meta-learning core: a functional inner loop and MAML, FOMAML, Meta-SGD, Reptile, ProtoNet.

Everything is a pure function of explicit parameter dicts (see :mod:`tutor.nets`).  The equations:

* **Inner update** (MAML, Finn et al. 2017, Eq. 1), ``k = 1..K``::

      theta_k = theta_{k-1} - alpha (.) grad_theta L_support(theta_{k-1})            -> inner_update

  ``alpha`` is a scalar (MAML), one scalar per layer, or one tensor per parameter (Meta-SGD,
  Li et al. 2017, where ``alpha`` is meta-learned: :func:`meta_sgd`); the support loss may weight each example
  (``weights``), as Bayesian TAML's class-balanced inner loss does.           -> inner_loop
* **MAML meta-objective** (Eq. 3): ``min_theta  sum_tasks L_query(theta_K(theta))``, differentiated
  through the inner loop (second order).  **FOMAML** treats ``d theta_K / d theta`` as the identity
  (the inner gradients are constants).                                     -> MAML.task_loss
* **Reptile** (Nichol et al. 2018): ``theta <- theta + epsilon (mean_tasks theta_K - theta)``; we pass
  ``theta - mean theta_K`` to the optimiser as the gradient (plain SGD with lr ``epsilon`` is exactly
  Reptile; Adam is the common variant).                                         -> Reptile.outer_step
* **ProtoNet** (Snell et al. 2017): ``p(y = c | x) ~ exp(-||f(x) - c_c||^2)`` with prototypes
  ``c_c = mean of f(support of class c)``.                                     -> prototype_logits

**Batching over the tasks of a meta-batch** (:meth:`MetaLearner.outer_step`, ``mode=``):

* ``"loop"`` -- one task at a time, ``backward()`` per task, so each task's second-order graph is
  freed before the next (the least memory; the reference).
* ``"threads"`` -- the tasks run concurrently in ``workers`` Python threads (torch kernels release
  the GIL).  On a CPU the per-task kernels are too small to use two cores, so this is where CPU
  speed-up lies (see ``benchmarks/bench_core.py``).  Per-task gradients are summed in task order,
  so the result is bit-identical to ``"loop"`` (it keeps one gradient per task until the sum).
* ``"vmap"`` -- ``torch.func.vmap`` over stacked tasks: one big kernel per layer, what pays off on a
  GPU; on a CPU it is usually slower and keeps every task's graph alive.  Needs same-shaped tasks.

The inner loop differentiates with ``torch.func.grad``, which gives the same numbers as
``torch.autograd.grad(create_graph=True)`` and also works inside ``vmap``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from tutor.data.episodes import Episode, stack_episodes
from tutor.nets import in_vmap, layer_of
from tutor.validation import as_float, as_int, check_inputs, check_labels, check_targets

__all__ = ["inner_update", "inner_loop", "InnerResult", "task_loss_fn", "prototype_logits",
           "accuracy", "MetaLearner", "MAML", "meta_sgd", "Reptile", "ProtoNet", "leaves", "detach_params"]

Params = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def leaves(meta: dict, trainable: bool = True) -> list[torch.Tensor]:
    """The tensors of a (nested) dict of meta-parameters in a fixed order (give these to an
    optimiser); ``trainable=True`` keeps only those with ``requires_grad``."""
    out = []
    for k in sorted(meta):
        v = meta[k]
        out += leaves(v, trainable) if isinstance(v, dict) else [v]
    return [t for t in out if t.requires_grad] if trainable else out


def detach_params(params: Params, requires_grad: bool = False) -> Params:
    """A detached copy of ``params`` (optionally a fresh leaf that requires grad)."""
    if not requires_grad:
        return {k: v.detach() for k, v in params.items()}
    return {k: v.detach().requires_grad_() for k, v in params.items()}


def task_loss_fn(kind: str) -> Callable:
    """Per-example loss ``(outputs, targets) -> (n,)``: ``"ce"`` (classification) or ``"mse"``."""
    if kind == "ce":
        return lambda out, y: F.cross_entropy(out, y, reduction="none")
    if kind == "mse":
        return lambda out, y: (out - y).pow(2).flatten(1).mean(1)
    raise ValueError(f"loss must be 'ce' or 'mse', got {kind!r}")


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of correct argmax predictions."""
    return (logits.argmax(-1) == y).float().mean()


def _lr_for(lr, name: str):
    """Resolve a learning rate spec for parameter ``name``: float, per-layer or per-parameter dict."""
    if not isinstance(lr, dict):
        return lr
    if name in lr:
        return lr[name]
    layer = layer_of(name)
    if layer in lr:
        return lr[layer]
    raise KeyError(f"no inner learning rate for parameter {name!r} (layer {layer!r}); the lr dict "
                   f"has keys {sorted(lr)}")


# --------------------------------------------------------------------------------------------
# the inner loop
# --------------------------------------------------------------------------------------------
def inner_update(params: Params, grads: Params, lr) -> Params:
    """One gradient step ``theta - alpha (.) g`` on the parameters that have a gradient (Eq. 1)."""
    return {k: (v - _lr_for(lr, k) * grads[k]) if k in grads else v for k, v in params.items()}


@dataclass
class InnerResult:
    """What the inner loop returns: adapted parameters and the support loss before each step."""

    params: Params
    losses: list[torch.Tensor] = field(default_factory=list)
    trajectory: list[Params] | None = None


def _check_finite(loss: torch.Tensor, what: str, params: Params | None = None, lr=None) -> None:
    """Stop on a non-finite loss, naming the likeliest cause: parameters that are already non-finite
    (an earlier meta-step diverged) before the inner learning rate."""
    if torch.isfinite(loss).all():
        return
    value = loss.detach().cpu().tolist()
    if params is not None:
        bad = [k for k, v in params.items() if not torch.isfinite(v).all()]
        if bad:
            raise FloatingPointError(f"non-finite {what} ({value}): the parameters {bad[:3]} already contain NaN/inf "
                                     "(an earlier meta-update diverged): lower the meta learning rate (lr) or "
                                     "set clip, e.g. clip=3.0")
    shown = f"={float(lr):g}" if isinstance(lr, (int, float)) else ""
    extra = (", or the meta learning rate (lr=) / set clip if the meta-updates were large"
             if what == "query loss" else "")
    raise FloatingPointError(f"non-finite {what} ({value}); lower the inner learning rate (inner_lr{shown}) "
                             f"or the number of inner steps{extra}")


def inner_loop(model, params: Params, x: torch.Tensor, y: torch.Tensor, steps: int, lr, *,
               first_order: bool = False, weights: torch.Tensor | None = None, hook=None,
               loss: str = "ce", adapt: Callable[[str], bool] | None = None,
               keep_trajectory: bool = False, mc_samples: int = 1) -> InnerResult:
    """Adapt ``params`` to the support set ``(x, y)`` with ``steps`` gradient steps.

    Args:
        model: a network from :mod:`tutor.nets` (``model(params, x, hook) -> outputs``).
        params: the initialisation ``theta_0`` (leaves of the outer graph, or detached).
        x, y: support examples ``(n, *X)`` and targets ``(n,)`` (or ``(n, 1)`` for regression).
        steps: number of inner steps ``K`` (0 returns ``params`` unchanged).
        lr: float, ``{layer: scalar}`` (per layer) or ``{name: tensor}`` (Meta-SGD).
        first_order: treat the inner gradients as constants (FOMAML); no second-order graph.
        weights: per-example weights ``(n,)``; the loss is ``mean_i(w_i * l_i)`` (``None``: all 1).
        hook: forwarded to the network (e.g. Meta-Dropout's noise on support features).
        loss: ``"ce"`` or ``"mse"``.
        adapt: predicate on parameter names; parameters for which it is false stay fixed.
        keep_trajectory: also return the parameters after every step (for plots).
        mc_samples: average the support loss over this many forward passes (for a stochastic
            ``hook``, e.g. Meta-Dropout's noise: one smoother step, not an ensemble).
    """
    steps = as_int(steps, "steps", 0)
    mc_samples = as_int(mc_samples, "mc_samples", 1)
    if isinstance(lr, (int, float)):
        as_float(lr, "inner learning rate (inner_lr)", 0.0)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"support inputs and targets disagree: {x.shape[0]} vs {y.shape[0]} examples")
    if weights is not None and weights.shape != (x.shape[0],):
        raise ValueError(f"weights must have shape ({x.shape[0]},), got {tuple(weights.shape)}")
    per_example = task_loss_fn(loss)
    if not in_vmap():
        if x.shape[0] == 0 and steps > 0:
            raise ValueError("the support set is empty: every task needs at least one support example")
        check_inputs(x, "support inputs (support_x)")
        first = next(iter(params.values()), None)
        if first is not None and (x.device != first.device or y.device != first.device):
            raise ValueError(f"the support set is on {x.device} but the parameters are on {first.device}: move the "
                             "episode with episode.to(device) (or create the parameters with init(device=...))")
        head = params.get("head.weight")
        ways = head.shape[0] if head is not None else (getattr(model, "ways", None) or None)
        if ways is not None:
            check_targets(torch.empty(x.shape[0], ways, dtype=x.dtype), y, loss, "support targets (support_y)")
        elif loss == "ce":
            check_labels(y, None, "support targets (support_y)")
        if weights is not None and not torch.isfinite(weights).all():
            raise ValueError("weights contain NaN or inf values")
    names = [k for k in params if adapt is None or adapt(k)]

    def support_loss(adapted: Params, fixed: Params) -> torch.Tensor:
        total = 0.0
        for _ in range(mc_samples):   # each forward draws its own noise (and its own BN statistics)
            l = per_example(model({**fixed, **adapted}, x, hook), y)
            total = total + ((l * weights).mean() if weights is not None else l.mean())
        return total / mc_samples

    result = InnerResult(params, [], [params] if keep_trajectory else None)
    for _ in range(steps):
        current = result.params
        adapted = {k: current[k] for k in names}
        fixed = {k: v for k, v in current.items() if k not in adapted}
        if first_order:  # FOMAML: gradients of detached copies are constants for the outer loop
            adapted, fixed = detach_params(adapted), detach_params(fixed)
        grads, value = grad(lambda a, f: (support_loss(a, f),) * 2, has_aux=True)(adapted, fixed)
        value = value.detach()
        if not in_vmap():
            _check_finite(value, "support loss", current, lr)
        result.losses.append(value)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        result.params = inner_update(current, grads, lr)
        if keep_trajectory:
            result.trajectory.append(result.params)
    return result


# --------------------------------------------------------------------------------------------
# learners
# --------------------------------------------------------------------------------------------
class MetaLearner:
    """Base class: a meta-learner owns a network and knows how to score a task.

    Subclasses implement :meth:`init`, :meth:`task_loss` and :meth:`evaluate`; the default
    :meth:`outer_step` averages ``task_loss`` over the meta-batch and hands the gradient to a torch
    optimiser.  Meta-parameters are a nested dict, e.g. ``{"net": {...}, "lr": {...}}``.
    """

    loss = "ce"
    _pool: ThreadPoolExecutor | None = None
    _pool_lock = threading.Lock()

    def init(self, gen=0, device=None, dtype=torch.float32) -> dict:
        raise NotImplementedError

    def task_loss(self, meta: dict, episode: Episode) -> tuple[torch.Tensor, dict]:
        """Differentiable meta-loss of one task and a dict of plain metrics."""
        raise NotImplementedError

    def evaluate(self, meta: dict, episode: Episode) -> dict:
        """Adapt to the support set and score the query set: ``{"loss", "accuracy"}`` floats."""
        raise NotImplementedError

    # -- batching over tasks -------------------------------------------------------------------
    def meta_gradient(self, meta: dict, episodes: Episode | list[Episode], mode: str = "loop",
                      workers: int = 2) -> tuple[list[torch.Tensor], dict]:
        """Gradient of the mean task loss w.r.t. ``leaves(meta)``, and mean metrics."""
        tasks = _as_task_list(episodes)
        if not tasks:
            raise ValueError("the meta-batch is empty: pass at least one episode")
        workers = as_int(workers, "workers", 1)
        params = leaves(meta)

        def task_gradient(ep):  # one task's graph at a time: each is freed after its gradient
            loss, m = self.task_loss(meta, ep)
            _check_finite(loss, "query loss", meta.get("net"), getattr(self, "inner_lr", None))
            grads = torch.autograd.grad(loss / len(tasks), params, allow_unused=True)
            return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)], m

        if mode in ("loop", "threads"):
            # threads: tasks run concurrently, but the gradients are summed in task order, as in
            # "loop", so both modes give bit-identical results
            per_task = (list(self._executor(workers).map(task_gradient, tasks)) if mode == "threads"
                        else [task_gradient(ep) for ep in tasks])
            grads = [torch.zeros_like(p) for p in params]
            for task_grads, _ in per_task:
                for a, g in zip(grads, task_grads):
                    a += g
            metrics = [m for _, m in per_task]
        elif mode == "vmap":
            batch = episodes if isinstance(episodes, Episode) and episodes.classes.dim() == 2 \
                else stack_episodes(tasks)
            def one(sx, sy, qx, qy, classes):
                return self.task_loss(meta, Episode(sx, sy, qx, qy, classes))

            losses, ms = vmap(one, randomness="different")(batch.support_x, batch.support_y,
                                                          batch.query_x, batch.query_y, batch.classes)
            _check_finite(losses.detach(), "query loss")
            grads = list(torch.autograd.grad(losses.mean(), params, allow_unused=True))
            grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
            metrics = [{k: v[i] for k, v in ms.items()} for i in range(len(losses))]
        else:
            raise ValueError(f"mode must be 'loop', 'threads' or 'vmap', got {mode!r}")
        return grads, _mean_metrics(metrics)

    def outer_step(self, meta: dict, optimizer: torch.optim.Optimizer,
                   episodes: Episode | list[Episode], mode: str = "loop", workers: int = 2,
                   clip: float | None = None) -> dict:
        """One meta-update on a meta-batch: average task gradient, optional clipping by value."""
        if clip is not None:
            clip = as_float(clip, "clip", 0.0, strict=True)
        grads, metrics = self.meta_gradient(meta, episodes, mode, workers)
        optimizer.zero_grad(set_to_none=True)
        for p, g in zip(leaves(meta), grads):
            p.grad = g.clamp(-clip, clip) if clip is not None else g
        optimizer.step()
        return metrics

    def _executor(self, workers: int) -> ThreadPoolExecutor:
        with MetaLearner._pool_lock:
            pool = MetaLearner._pool
            if pool is None or pool._max_workers != workers:
                if pool is not None:
                    pool.shutdown(wait=False)
                MetaLearner._pool = ThreadPoolExecutor(max_workers=workers,
                                                       thread_name_prefix="tutor-task")
            return MetaLearner._pool


def _as_task_list(episodes) -> list[Episode]:
    if isinstance(episodes, Episode):
        return [episodes[i] for i in range(len(episodes))] if episodes.classes.dim() == 2 \
            else [episodes]
    return list(episodes)


def _mean_metrics(metrics: list[dict]) -> dict:
    if not metrics:
        return {}
    return {k: float(sum(float(m[k]) for m in metrics) / len(metrics)) for k in metrics[0]}


def _query_metrics(logits, y, per_example, loss_kind) -> tuple[torch.Tensor, dict]:
    if not in_vmap():
        if y.shape[0] == 0:
            raise ValueError("the query set is empty: every task needs at least one query example")
        check_targets(logits, y, loss_kind, "query targets (query_y)")
    loss = per_example(logits, y).mean()
    metrics = {"loss": loss.detach()}
    if loss_kind == "ce":
        metrics["accuracy"] = accuracy(logits.detach(), y)
    return loss, metrics


class MAML(MetaLearner):
    """MAML (second order), FOMAML (``first_order=True``) and Meta-SGD (:func:`meta_sgd`, i.e.
    ``lr_mode="per_parameter", learn_lr=True``: a per-parameter alpha that is meta-learned).

    **Batch-norm parameters and the inner loop.**  ``adapt_bn=True`` (our default) adapts the BN
    scale and offset in the inner loop together with the weights.  The reference code of MAML
    (Finn et al.) and of Meta-Dropout meta-learns them but never adapts them: that is
    ``adapt_bn=False``.  Our default is a deliberate deviation, kept because every shipped result
    and notebook run was produced with it; the choice affects only networks with batch norm.

    Args:
        model: a network from :mod:`tutor.nets`.
        inner_lr: initial inner learning rate alpha.
        inner_steps: inner steps K during meta-training.
        eval_steps: inner steps at evaluation (default ``inner_steps``).
        first_order: FOMAML.
        lr_mode: ``"scalar"`` (one alpha), ``"per_layer"`` (one alpha per layer) or
            ``"per_parameter"`` (a tensor alpha like each parameter, Meta-SGD).
        learn_lr: meta-learn alpha (Meta-SGD learns a per-parameter alpha).
        loss: ``"ce"`` or ``"mse"``.
        adapt_bn: adapt the batch-norm scale and offset in the inner loop (see above).
    """

    def __init__(self, model, inner_lr: float = 0.4, inner_steps: int = 1,
                 eval_steps: int | None = None, first_order: bool = False,
                 lr_mode: str = "scalar", learn_lr: bool = False, loss: str = "ce",
                 adapt_bn: bool = True):
        if lr_mode not in ("scalar", "per_layer", "per_parameter"):
            raise ValueError(f"lr_mode must be 'scalar', 'per_layer' or 'per_parameter', got {lr_mode!r}")
        inner_steps = as_int(inner_steps, "inner_steps", 0)
        eval_steps = None if eval_steps is None else as_int(eval_steps, "eval_steps", 0)
        inner_lr = as_float(inner_lr, "inner_lr", 0.0)
        task_loss_fn(loss)
        self.model, self.inner_lr, self.inner_steps = model, inner_lr, inner_steps
        self.eval_steps = inner_steps if eval_steps is None else eval_steps
        self.first_order, self.lr_mode, self.learn_lr, self.loss = first_order, lr_mode, learn_lr, loss
        self.adapt_bn = bool(adapt_bn)

    def adapts(self, name: str) -> bool:
        """Whether the inner loop adapts parameter ``name`` (all but BN ones when ``adapt_bn=False``)."""
        return self.adapt_bn or not name.startswith("bn")

    def init(self, gen=0, device=None, dtype=torch.float32) -> dict:
        net = self.model.init(gen, device, dtype)
        if self.lr_mode == "scalar":
            lr = {"all": torch.tensor(self.inner_lr, device=device, dtype=dtype)}
        elif self.lr_mode == "per_layer":
            lr = {layer: torch.tensor(self.inner_lr, device=device, dtype=dtype)
                  for layer in dict.fromkeys(layer_of(k) for k in net)}
        else:
            lr = {k: torch.full_like(v, self.inner_lr) for k, v in net.items()}
        lr = {k: v.detach().requires_grad_(self.learn_lr) for k, v in lr.items()}
        return {"net": net, "lr": lr} if self.learn_lr else {"net": net, "fixed_lr": lr}

    def inner_lr_spec(self, meta: dict):
        """The learning-rate argument for :func:`inner_loop`."""
        lr = meta.get("lr", meta.get("fixed_lr"))
        return lr["all"] if self.lr_mode == "scalar" else lr

    def check_ways(self, episode: Episode) -> None:
        """The network's head must have as many outputs as the episode has classes."""
        head = getattr(self.model, "ways", 0)
        ways = episode.classes.shape[-1]
        if self.loss == "ce" and head and episode.classes.numel() and ways != head:
            raise ValueError(f"the network's head has {head} outputs but the episode is {ways}-way: "
                             f"build the network with ways={ways}")

    def adapt(self, meta: dict, episode: Episode, steps: int | None = None,
              first_order: bool | None = None, **kwargs) -> InnerResult:
        """Run the inner loop on the episode's support set.

        The inner learning rate comes from ``meta`` (``meta["lr"]`` or ``meta["fixed_lr"]``, set by
        :meth:`init` from ``inner_lr``): meta-parameters made by another learner keep *their* rate.
        """
        if not in_vmap():
            self.check_ways(episode)
        return inner_loop(self.model, meta["net"], episode.support_x, episode.support_y,
                          self.inner_steps if steps is None else steps, self.inner_lr_spec(meta),
                          first_order=self.first_order if first_order is None else first_order,
                          loss=self.loss, adapt=None if self.adapt_bn else self.adapts, **kwargs)

    def task_loss(self, meta, episode):
        adapted = self.adapt(meta, episode).params
        return _query_metrics(self.model(adapted, episode.query_x), episode.query_y,
                              task_loss_fn(self.loss), self.loss)

    def evaluate(self, meta, episode) -> dict:
        start = {"net": detach_params(meta["net"]),
                 **{k: {n: t.detach() for n, t in v.items()} for k, v in meta.items() if k != "net"}}
        adapted = self.adapt(start, episode, steps=self.eval_steps, first_order=True).params
        with torch.no_grad():
            _, m = _query_metrics(self.model(adapted, episode.query_x), episode.query_y,
                                  task_loss_fn(self.loss), self.loss)
        return {k: float(v) for k, v in m.items()}


def meta_sgd(model, inner_lr: float = 0.4, inner_steps: int = 1, **kwargs) -> MAML:
    """Meta-SGD (Li et al. 2017): MAML with a meta-learned alpha of the same shape as every parameter
    (``theta_k = theta_{k-1} - alpha (.) grad``; alpha starts at ``inner_lr``)."""
    return MAML(model, inner_lr, inner_steps, lr_mode="per_parameter", learn_lr=True, **kwargs)


class Reptile(MAML):
    """Reptile: SGD on each task, then move the initialisation towards the adapted weights.

    During meta-training the inner loop runs on the task's whole data (support and query) for
    ``inner_steps`` full-batch steps; at evaluation it adapts on the support set only.
    """

    def __init__(self, model, inner_lr: float = 0.4, inner_steps: int = 5,
                 eval_steps: int | None = None, loss: str = "ce"):
        super().__init__(model, inner_lr, inner_steps, eval_steps, first_order=True, loss=loss)

    def task_loss(self, meta, episode):
        raise TypeError("Reptile has no differentiable task loss; use outer_step")

    def reptile_direction(self, meta: dict, episode: Episode) -> tuple[Params, dict]:
        """``theta - theta_K`` for one task (the pseudo-gradient) and the task's metrics."""
        x = torch.cat([episode.support_x, episode.query_x])
        y = torch.cat([episode.support_y, episode.query_y])
        start = detach_params(meta["net"])
        res = inner_loop(self.model, start, x, y, self.inner_steps, self.inner_lr_spec(meta),
                         first_order=True, loss=self.loss)
        with torch.no_grad():
            _, m = _query_metrics(self.model(res.params, episode.query_x), episode.query_y,
                                  task_loss_fn(self.loss), self.loss)
        return {k: start[k] - res.params[k].detach() for k in start}, m

    def meta_gradient(self, meta, episodes, mode="loop", workers=2):
        tasks = _as_task_list(episodes)
        if mode == "threads":
            results = list(self._executor(workers).map(lambda ep: self.reptile_direction(meta, ep), tasks))
        elif mode in ("loop", "vmap"):
            results = [self.reptile_direction(meta, ep) for ep in tasks]
        else:
            raise ValueError(f"mode must be 'loop', 'threads' or 'vmap', got {mode!r}")
        net = meta["net"]
        direction = {id(net[k]): sum(r[0][k] for r in results) / len(tasks) for k in net}
        grads = [direction.get(id(p), torch.zeros_like(p)) for p in leaves(meta)]
        return grads, _mean_metrics([r[1] for r in results])


def prototype_logits(support_emb: torch.Tensor, support_y: torch.Tensor, query_emb: torch.Tensor,
                     ways: int) -> torch.Tensor:
    """Negative squared distances to class means: ``(queries, ways)`` (ProtoNet, Eq. 1-2)."""
    onehot = F.one_hot(support_y, ways).to(support_emb.dtype)                    # (S, ways)
    counts = onehot.sum(0)                                                       # (ways,)
    if not in_vmap() and (counts == 0).any():
        raise ValueError(f"every class needs at least one support example; counts {counts.tolist()}")
    prototypes = onehot.T @ support_emb / counts[:, None]                        # (ways, D)
    return -torch.cdist(query_emb, prototypes).pow(2)


class ProtoNet(MetaLearner):
    """Prototypical networks: an embedding and a nearest-class-mean classifier (no inner loop)."""

    def __init__(self, model):
        if getattr(model, "ways", 0):
            raise ValueError("ProtoNet needs an embedding network without a head: build it with ways=0")
        self.model = model

    def init(self, gen=0, device=None, dtype=torch.float32) -> dict:
        return {"net": self.model.init(gen, device, dtype)}

    def logits(self, meta, episode) -> torch.Tensor:
        ways = episode.classes.shape[-1]
        emb = self.model.embed(meta["net"], torch.cat([episode.support_x, episode.query_x]))
        n = episode.support_x.shape[0]
        return prototype_logits(emb[:n], episode.support_y, emb[n:], ways)

    def task_loss(self, meta, episode):
        return _query_metrics(self.logits(meta, episode), episode.query_y, task_loss_fn("ce"), "ce")

    def evaluate(self, meta, episode) -> dict:
        with torch.no_grad():
            _, m = self.task_loss(meta, episode)
        return {k: float(v) for k, v in m.items()}
