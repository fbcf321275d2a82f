"""A generic meta-training loop, evaluation with confidence intervals, paired comparisons, checkpoints.

The loop knows nothing about any particular paper: it asks a :class:`~tutor.meta.MetaLearner` for an
``outer_step`` on each meta-batch and records plain numbers in a :class:`History` that plots read.
"""

from __future__ import annotations

import functools
import io
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tutor.divergence import DivergenceGuard
from tutor.meta import MetaLearner, leaves
from tutor.validation import as_float, as_int


def progress_enabled() -> bool:
    """Progress bars on unless ``TUTOR_PROGRESS`` is 0 / false / no / off (case-insensitive)."""
    value = os.environ.get("TUTOR_PROGRESS", "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on", ""):
        return True
    raise ValueError(f"TUTOR_PROGRESS must be 0/1 (or false/true, no/yes, off/on), got {value!r}")

__all__ = ["History", "meta_train", "EvalResult", "evaluate", "PairedResult", "compare",
           "mean_ci", "t_quantile", "save_checkpoint", "load_checkpoint"]


@dataclass
class History:
    """What :func:`meta_train` records (plain lists, ready to plot)."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def meta_train(learner: MetaLearner, meta: dict, sampler, steps: int, *, meta_batch: int = 4,
               lr: float = 1e-3, optimizer: torch.optim.Optimizer | None = None, mode: str = "loop",
               workers: int = 2, clip: float | None = None, seed: int = 0,
               eval_episodes: list | None = None, eval_every: int = 0,
               time_budget: float | None = None, progress: bool | None = None,
               desc: str = "meta-train") -> History:
    """Meta-train ``meta`` in place for ``steps`` outer steps (or until ``time_budget`` seconds).

    Args:
        sampler: anything with ``.batch(tasks, gen)`` returning a meta-batch (e.g.
            :class:`~tutor.data.episodes.EpisodeSampler`); drawn from a generator seeded by ``seed``.
        meta_batch: tasks per outer step.
        lr, optimizer: Adam with ``lr`` unless an optimiser over ``leaves(meta)`` is given.
        mode, workers: how tasks of a meta-batch are batched (see :mod:`tutor.meta`).
        clip: clip meta-gradients by value (the papers' ``+-3``), or ``None``.
        eval_episodes, eval_every: score on fixed episodes every ``eval_every`` steps.
        time_budget: stop after this many seconds even if ``steps`` are not done.
        progress: show a progress bar; ``None`` shows one unless ``TUTOR_PROGRESS=0`` (the test
            suite sets it: thousands of progress updates can overflow a kernel's output channel).

    A diverged loss (non-finite, above 1e10, or a million times its first value: the package's one rule,
    :mod:`tutor.divergence`) stops the run with a ``FloatingPointError`` naming the settings to change.
    """
    steps = as_int(steps, "steps", 1)
    meta_batch = as_int(meta_batch, "meta_batch", 1)
    eval_every = as_int(eval_every, "eval_every", 0)
    lr = as_float(lr, "lr (the meta learning rate)", 0.0, strict=True)
    if clip is not None:
        clip = as_float(clip, "clip", 0.0, strict=True)
    if time_budget is not None:
        time_budget = as_float(time_budget, "time_budget", 0.0, strict=True)
    if not leaves(meta):
        raise ValueError("meta has no trainable tensors (requires_grad=True): nothing to meta-train")
    if optimizer is None:
        optimizer = torch.optim.Adam(leaves(meta), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    device = leaves(meta)[0].device
    dtype = leaves(meta)[0].dtype
    history = History()
    start = time.perf_counter()
    if progress is None:
        progress = progress_enabled()
    inner = getattr(learner, "inner_lr", None)
    settings = f"lr={lr:g}" + (f", inner_lr={inner:g}" if isinstance(inner, (int, float)) else "")
    guard = DivergenceGuard(setting=f"the learning rates ({settings}) or set clip (e.g. clip=3.0)",
                            what="the meta-training loss")
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False, mininterval=0.5)
    for step in bar:
        batch = sampler.batch(meta_batch, gen)
        batch = [ep.to(device, dtype) for ep in batch] if isinstance(batch, list) else batch.to(device, dtype)
        metrics = learner.outer_step(meta, optimizer, batch, mode=mode, workers=workers, clip=clip)
        loss = guard(metrics.get("loss", float("nan")), where=f"at step {step}")
        history.step.append(step)
        history.loss.append(loss)
        history.accuracy.append(metrics.get("accuracy", float("nan")))
        history.seconds.append(time.perf_counter() - start)
        if eval_episodes and eval_every and (step % eval_every == 0 or step == steps):
            history.eval_step.append(step)
            history.eval_accuracy.append(evaluate(learner, meta, eval_episodes).mean)
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if time_budget is not None and history.seconds[-1] >= time_budget:
            break
    bar.close()
    return history


def _t_two_sided_mass(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df`` (closed form, Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 0:                     # sin(theta) (1 + c^2/2 + 1*3 c^4/(2*4) + ... up to c^(df-2))
        term, total = 1.0, 1.0
        for k in range(2, df, 2):
            term *= c * c * (k - 1) / k
            total += term
        return s * total
    if df == 1:
        return 2 * theta / math.pi
    term, total = c, c                  # (2/pi)(theta + sin(theta)(c + 2/3 c^3 + ... up to c^(df-2)))
    for k in range(3, df - 1, 2):
        term *= c * c * (k - 1) / k
        total += term
    return 2 / math.pi * (theta + s * total)


@functools.lru_cache(maxsize=256)
def t_quantile(level: float, df: int) -> float:
    """Two-sided Student-t critical value: ``t`` with ``P(|T| <= t) = level`` for ``df`` degrees of
    freedom (``t_quantile(0.95, 2) = 4.303``; it tends to the normal 1.960 as ``df`` grows)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if int(df) != df or df < 1:
        raise ValueError(f"df must be a positive integer, got {df}")
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, int(df)) < level:
        hi *= 2
    for _ in range(200):                # bisection to machine precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided_mass(mid, int(df)) < level else (lo, mid)
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


def mean_ci(values, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (``level``, default 95%).

    The half-width is ``t_{n-1} * s / sqrt(n)`` with the sample standard deviation ``s``.  Student-t
    is used for every sample size: over a handful of seeds it is what the interval must be (with 3
    seeds ``t_2 = 4.30``, 2.2x the normal 1.96), and over hundreds of episodes it equals the normal
    interval to within 0.5%.
    """
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError(f"mean_ci got non-finite values: {t[~torch.isfinite(t)].tolist()[:5]}")
    n = t.numel()
    return t.mean().item(), (t_quantile(level, n - 1) * t.std(unbiased=True) / math.sqrt(n)).item()


@dataclass
class EvalResult:
    """Per-episode scores on fixed test episodes, with their mean and 95% CI half-width (Student-t)."""

    scores: list[float]
    mean: float
    ci95: float
    metric: str = "accuracy"

    def __str__(self) -> str:
        scale = 100 if self.metric == "accuracy" else 1
        unit = "%" if self.metric == "accuracy" else ""
        return f"{self.mean * scale:.2f} +- {self.ci95 * scale:.2f}{unit} ({len(self.scores)} episodes)"


def evaluate(learner: MetaLearner, meta: dict, episodes: list, metric: str = "accuracy",
             progress: bool = False, workers: int = 1) -> EvalResult:
    """Score ``learner`` on the given fixed episodes (same episodes for every method).

    ``workers > 1`` scores episodes in that many threads (same numbers, less wall time on a
    multi-core CPU).
    """
    if not episodes:
        raise ValueError("evaluate needs at least one episode")
    workers = as_int(workers, "workers", 1)
    p = leaves(meta, trainable=False)[0]

    def score(ep):
        return learner.evaluate(meta, ep.to(p.device, p.dtype))[metric]

    if workers > 1:
        scores = list(learner._executor(workers).map(score, episodes))
    else:
        scores = [score(ep) for ep in tqdm(episodes, desc="evaluate", disable=not progress, leave=False)]
    if len(scores) == 1:
        return EvalResult(scores, scores[0], float("nan"), metric)
    m, ci = mean_ci(scores)
    return EvalResult(scores, m, ci, metric)


@dataclass
class PairedResult:
    """A paired comparison of two methods on the same episodes: ``b - a`` per episode."""

    a: EvalResult
    b: EvalResult
    diff_mean: float
    diff_ci95: float

    @property
    def significant(self) -> bool:
        """True when the 95% CI of the paired difference excludes 0."""
        return abs(self.diff_mean) > self.diff_ci95

    def __str__(self) -> str:
        scale = 100 if self.a.metric == "accuracy" else 1
        return f"difference {self.diff_mean * scale:+.2f} +- {self.diff_ci95 * scale:.2f}"


def compare(a: EvalResult, b: EvalResult) -> PairedResult:
    """Paired difference ``b - a`` of two evaluations on the *same* episodes, with its 95% CI (Student-t)."""
    if a.metric != b.metric:
        raise ValueError(f"compare needs two results of the same metric, got {a.metric!r} and {b.metric!r}")
    if len(a.scores) != len(b.scores):
        raise ValueError(f"paired comparison needs the same episodes: {len(a.scores)} vs {len(b.scores)}")
    diffs = [y - x for x, y in zip(a.scores, b.scores)]
    m, ci = mean_ci(diffs)
    return PairedResult(a, b, m, ci)


def save_checkpoint(path, meta: dict, info: dict | None = None, *, overwrite: bool = False) -> Path:
    """Save meta-parameters (detached, on the CPU) and a dict of plain info with ``torch.save``.

    An existing file is replaced only with ``overwrite=True`` (a checkpoint you made is never lost by
    accident); the write is atomic (temporary file, then rename), so an interruption leaves the old file.
    """
    from tutor.outputs import atomic_write_bytes, check_output_path

    def plain(d):
        return {k: plain(v) if isinstance(v, dict) else v.detach().cpu() for k, v in d.items()}
    _check_plain(info or {}, "info")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_output_path(path, overwrite=overwrite, setting="checkpoint path")
    def flags(d):
        return {k: flags(v) if isinstance(v, dict) else bool(v.requires_grad) for k, v in d.items()}
    buf = io.BytesIO()
    torch.save({"meta": plain(meta), "trainable": flags(meta), "info": info or {}}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _check_plain(value, name: str) -> None:
    """``info`` must survive ``torch.load(weights_only=True)``: plain numbers, strings, lists, dicts."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{name} keys must be strings, got {k!r}")
            _check_plain(v, f"{name}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{name}[{i}]")
    elif not (value is None or isinstance(value, (str, int, float, bool, torch.Tensor))):
        raise TypeError(f"{name} must hold plain values (str, int, float, bool, None, lists, dicts, tensors) so "
                        f"that the checkpoint loads safely; got {type(value).__name__}")


def load_checkpoint(path, device=None) -> tuple[dict, dict]:
    """Load ``(meta, info)`` saved by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    Tensors that were trainable when saved come back as leaves with ``requires_grad=True``."""
    from tutor.runtime import get_device

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    # the device first: a missing accelerator is the device's fault, never reported as a corrupted file
    device = get_device(str(device)) if device is not None else torch.device("cpu")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:     # never suggest weights_only=False for a file we cannot vouch for
        raise ValueError(f"{path} is not a tutor checkpoint or is corrupted ({type(e).__name__}); "
                         "re-create it with tutor.train.save_checkpoint") from None
    if not isinstance(blob, dict) or not {"meta", "trainable", "info"} <= set(blob):
        raise ValueError(f"{path} is not a tutor checkpoint (expected the keys meta, trainable, info)")

    def leafy(d, f):
        return {k: leafy(v, f[k]) if isinstance(v, dict) else v.requires_grad_(f[k])
                for k, v in d.items()}
    return leafy(blob["meta"], blob["trainable"]), blob["info"]
