"""Regime maps: where a paper's method helps and where it does not (DESIGN §9).

A regime map is the gain of a method over its baseline as a function of the one factor the paper's
argument names (class imbalance, shared nuisance, inner horizon, gradient conflict, shots, ...), from
per-seed scores, with a Student-t interval over seeds at each value of the factor.  Every driver
stores its map in its results JSON under the top-level key ``regime`` -- one map, or a list of maps
when the argument names two factors::

    {"factor": "imbalance ratio", "values": [1, 5, 25], "method": "TAML", "baseline": "Meta-SGD",
     "metric": "accuracy", "higher_is_better": true,
     "per_seed": {"1": [d_seed0, d_seed1, ...], "5": [...], "25": [...]},
     "prediction": "the sentence the driver's docstring wrote before the run"}

``per_seed[v]`` holds the paired differences ``method - baseline`` (same seed, same test tasks), one
per seed.  :func:`regime_map` builds that dict from raw scores; :func:`summarise_regime` reads it back
into means, intervals and seed counts (what the notebook asserts on and ``tutor.viz.regime_plot``
draws); :func:`check_regime` validates the shape (``load_results`` calls it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tutor.train import mean_ci

__all__ = ["RegimePoint", "REGIME_KEYS", "check_regime", "paired_differences", "regime_map", "summarise_regime"]

REGIME_KEYS = ("factor", "values", "method", "baseline", "metric", "higher_is_better", "per_seed", "prediction")


@dataclass
class RegimePoint:
    """The gain at one value of the factor: paired differences over seeds, their mean and 95% CI."""

    value: object
    diffs: list[float]
    mean: float
    ci95: float            # Student-t half-width over seeds (nan with one seed)
    n_seeds: int
    gain: float            # mean signed so that > 0 always means "the method is better"

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95

    @property
    def excludes_zero(self) -> bool:
        """The interval lies entirely on one side of zero (needs >= 2 seeds)."""
        return self.n_seeds >= 2 and (self.low > 0 or self.high < 0)


def paired_differences(method: list, baseline: list) -> list[float]:
    """``method[s] - baseline[s]`` per seed ``s`` (same length, both finite)."""
    if len(method) != len(baseline):
        raise ValueError(f"method and baseline need one score per seed each, got {len(method)} and {len(baseline)}")
    if not method:
        raise ValueError("paired_differences needs at least one seed")
    diffs = [float(m) - float(b) for m, b in zip(method, baseline)]
    if not all(math.isfinite(d) for d in diffs):
        raise ValueError(f"non-finite scores in the paired differences: {diffs}")
    return diffs


def regime_map(factor: str, values: list, method_scores: dict, baseline_scores: dict, *, method: str,
               baseline: str, metric: str, higher_is_better: bool, prediction: str) -> dict:
    """The ``regime`` dict from per-seed scores ``{value: [score per seed]}`` of the method and its baseline.

    ``prediction`` is the sentence the driver's docstring states *before* the run (pre-registration).
    """
    if not prediction or not prediction.strip():
        raise ValueError("prediction must be the sentence the driver's docstring wrote before the run")
    per_seed = {}
    for v in values:
        if v not in method_scores or v not in baseline_scores:
            raise KeyError(f"no scores at {factor} = {v!r} (method has {list(method_scores)}, "
                           f"baseline has {list(baseline_scores)})")
        per_seed[str(v)] = paired_differences(method_scores[v], baseline_scores[v])
    out = {"factor": factor, "values": list(values), "method": method, "baseline": baseline, "metric": metric,
           "higher_is_better": bool(higher_is_better), "per_seed": per_seed, "prediction": prediction.strip()}
    check_regime(out)
    return out


def check_regime(regime) -> None:
    """Raise ``ValueError`` naming what is wrong unless ``regime`` is one map or a non-empty list of maps."""
    maps = regime if isinstance(regime, list) else [regime]
    if not maps:
        raise ValueError("regime must be a map or a non-empty list of maps")
    for i, m in enumerate(maps):
        where = f"regime[{i}]" if isinstance(regime, list) else "regime"
        if not isinstance(m, dict):
            raise ValueError(f"{where} must be a dict with keys {REGIME_KEYS}, got {type(m).__name__}")
        missing = [k for k in REGIME_KEYS if k not in m]
        if missing:
            raise ValueError(f"{where} lacks the keys {missing} (a regime map has {REGIME_KEYS})")
        if not isinstance(m["higher_is_better"], bool):
            raise ValueError(f"{where}['higher_is_better'] must be true or false")
        if not isinstance(m["prediction"], str) or not m["prediction"].strip():
            raise ValueError(f"{where}['prediction'] must be the pre-registered sentence")
        keys = [str(v) for v in m["values"]]
        if not keys or sorted(keys) != sorted(m["per_seed"]):
            raise ValueError(f"{where}: per_seed keys {sorted(m['per_seed'])} must be the values {keys}")
        for k, diffs in m["per_seed"].items():
            if not diffs or not all(isinstance(d, (int, float)) and math.isfinite(d) for d in diffs):
                raise ValueError(f"{where}['per_seed'][{k!r}] must be a non-empty list of finite differences")


def summarise_regime(regime: dict) -> list[RegimePoint]:
    """One :class:`RegimePoint` per value of the factor, in the map's order."""
    check_regime(regime)
    sign = 1.0 if regime["higher_is_better"] else -1.0
    points = []
    for v in regime["values"]:
        diffs = regime["per_seed"][str(v)]
        mean, ci = mean_ci(diffs) if len(diffs) > 1 else (float(diffs[0]), float("nan"))
        points.append(RegimePoint(v, list(diffs), mean, ci, len(diffs), sign * mean))
    return points
