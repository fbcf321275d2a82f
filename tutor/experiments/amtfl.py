"""Deep-AMTFL experiments: the synthetic comparison (live in notebook 01) and the deep glyph run.

    python -m tutor.experiments.amtfl --seeds 0 1 2 3 4 --out data/results/amtfl_deep.json --overwrite

Synthetic (notes §6.1): 12 regression tasks, 6 easy (noise 0.5) and 6 hard (noise 4.0), 25
training points each; STL, GO-MTL, AMTL and AMTFL (and AMTFL with the loss weighting off) on the
same data per seed; test RMSE per task.

Deep (mechanism demo; notes §6.2): 20 one-vs-rest glyph tasks whose classes get 14 down to 2
training images; the symmetric multi-task MLP against Deep-AMTFL with the official hyper-parameters
(alpha 0.1, gamma 0.01, kappa 1e-3) and with a stronger size term (kappa 0.1, a remedy our notes
suggest); test error per class against its number of training images.
"""

from __future__ import annotations

import argparse
import datetime
import sys

import torch

from tutor.data.multitask import imbalanced_glyphs, synthetic_regression
from tutor.outputs import add_output_arguments, atomic_write_json, dry_run_report, resolve_output
from tutor.papers.amtfl import (
    AMTFLConfig,
    DeepConfig,
    fit_amtfl,
    fit_amtl,
    fit_deep,
    fit_gomtl,
    fit_stl,
    rmse,
    task_losses,
)
from tutor.validation import cli_int

__all__ = ["TUNING_GRIDS", "tune_synthetic", "fit_synthetic", "synthetic_comparison", "deep_comparison",
           "DEEP_COUNTS", "DEEP_METHODS", "main"]

DEEP_COUNTS = (14, 14, 13, 12, 11, 10, 9, 8, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 2)
DEEP_METHODS = {"symmetric MT-net": DeepConfig(symmetric=True),
                "Deep-AMTFL (official)": DeepConfig(),
                "Deep-AMTFL (kappa=0.1)": DeepConfig(kappa=0.1)}


TUNING_GRIDS = {
    "STL": {"ridge": [0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0]},
    "GO-MTL": {"mu": [0.01, 0.1, 1.0], "lam": [1.0, 10.0, 100.0]},
    "AMTL": {"mu": [0.1, 1.0, 10.0], "lam": [0.01, 0.1, 1.0]},
    "AMTFL": {"alpha": [10.0, 30.0, 100.0], "gamma": [30.0, 100.0, 300.0]},
}
"""Nine settings per method (the same budget for every method), searched on validation draws."""
VALIDATION_SEEDS = (1000,)
"""Seeds of the task draws used for tuning only (the scored seeds are 0, 1, 2, ...)."""


def _grid(spec: dict) -> list[dict]:
    keys = list(spec)
    out = [{}]
    for k in keys:
        out = [{**o, k: v} for o in out for v in spec[k]]
    return out


def fit_synthetic(method: str, data, setting: dict, config: AMTFLConfig, seed: int = 0) -> torch.Tensor:
    """Fit one shallow method with one hyper-parameter ``setting``; returns its weights ``W (d, T)``."""
    if method == "STL":
        return fit_stl(data, **setting)
    cfg = AMTFLConfig(**{**config.__dict__, **setting})
    if method == "GO-MTL":
        return fit_gomtl(data, cfg, seed=seed)["W"]
    if method == "AMTL":
        return fit_amtl(data, cfg)["W"]
    if method == "AMTFL":
        return fit_amtfl(data, cfg, seed=seed)["W"]
    raise ValueError(f"method must be one of {list(TUNING_GRIDS)}, got {method!r}")


def tune_synthetic(config: AMTFLConfig | None = None, seeds=VALIDATION_SEEDS, grids: dict | None = None,
                   **data_kwargs) -> dict:
    """Choose every method's hyper-parameters on validation draws (never the scored seeds).

    Returns ``{method: {"chosen": setting, "grid": [(setting, mean RMSE over tasks and draws)],
    "on_edge": [names of hyper-parameters chosen at the edge of their range]}}``.
    """
    cfg = config or AMTFLConfig()
    grids = grids or TUNING_GRIDS
    draws = [synthetic_regression(s, **data_kwargs) for s in seeds]
    out = {}
    for method, spec in grids.items():
        scored = []
        for setting in _grid(spec):
            err = sum(rmse(fit_synthetic(method, d, setting, cfg, seed=s), d).mean().item()
                      for s, d in zip(seeds, draws)) / len(draws)
            scored.append((setting, err))
        chosen = min(scored, key=lambda t: t[1])[0]
        edge = [k for k, v in chosen.items() if len(spec[k]) > 1 and v in (spec[k][0], spec[k][-1])]
        out[method] = {"chosen": chosen, "grid": scored, "on_edge": edge}
    return out


def synthetic_comparison(seeds, config: AMTFLConfig | None = None, tuned: dict | None = None,
                         **data_kwargs) -> dict:
    """Per-task test RMSE of every shallow method for every seed: ``{method: [(T,) per seed]}``,
    plus AMTFL's outgoing feedback norms, training losses and AMTL's graph of the last seed.

    ``tuned`` (from :func:`tune_synthetic`) gives each method its own chosen setting; the
    "loss weighting off" ablation uses AMTFL's.
    """
    cfg = config or AMTFLConfig()
    chosen = {m: (tuned[m]["chosen"] if tuned else {}) for m in TUNING_GRIDS}
    amtfl_cfg = AMTFLConfig(**{**cfg.__dict__, **chosen["AMTFL"]})
    off_cfg = AMTFLConfig(**{**amtfl_cfg.__dict__, "loss_weighting": False})
    out = {"STL": [], "GO-MTL": [], "AMTL": [], "AMTFL": [], "AMTFL, loss weighting off": [],
           "outgoing": [], "outgoing_off": [], "train_rmse": [], "hard": None, "last": {}}
    for seed in seeds:
        data = synthetic_regression(seed, **data_kwargs)
        amtfl = fit_amtfl(data, amtfl_cfg, seed=seed)
        off = fit_amtfl(data, off_cfg, seed=seed)
        amtl = fit_amtl(data, AMTFLConfig(**{**cfg.__dict__, **chosen["AMTL"]}))
        out["STL"].append(rmse(fit_stl(data, **chosen["STL"]), data))
        out["GO-MTL"].append(rmse(fit_synthetic("GO-MTL", data, chosen["GO-MTL"], cfg, seed), data))
        out["AMTL"].append(rmse(amtl["W"], data))
        out["AMTFL"].append(rmse(amtfl["W"], data))
        out["AMTFL, loss weighting off"].append(rmse(off["W"], data))
        out["outgoing"].append(amtfl["outgoing"])
        out["outgoing_off"].append(off["outgoing"])
        out["train_rmse"].append(task_losses(amtfl["W"], data.x_train, data.y_train).sqrt())
        out["hard"] = data.hard
        out["last"] = {"A": amtfl["A"], "A_off": off["A"], "B": amtl["B"], "data": data}
    return out


def per_class_error(trunk, params, data) -> torch.Tensor:
    """Test error of every class (argmax over the one-vs-rest logits)."""
    with torch.no_grad():
        logits = trunk.embed(params["trunk"], data.x_test) @ params["S"] + params["b_S"]
    pred = logits.argmax(1)
    return torch.stack([(pred[data.y_test == c] != c).float().mean() for c in range(len(data.counts))])


def deep_comparison(seeds, steps: int = 1500, methods: dict | None = None) -> dict:
    """``{method: [per-class error (C,) per seed]}`` and ``"outgoing"`` norms of A per method/seed."""
    methods = methods or DEEP_METHODS
    out = {name: [] for name in methods}
    out["outgoing"] = {name: [] for name in methods if not methods[name].symmetric}
    for seed in seeds:
        data = imbalanced_glyphs(seed, classes=len(DEEP_COUNTS), counts=DEEP_COUNTS)
        for name, cfg in methods.items():
            trunk, params = fit_deep(data.x_train, data.y_train, data.counts,
                                     DeepConfig(**{**cfg.__dict__, "steps": steps}), seed=seed)
            out[name].append(per_class_error(trunk, params, data))
            if not cfg.symmetric:
                out["outgoing"][name].append(params["A"].detach().abs().sum(1))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=cli_int(0), nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=cli_int(1), default=1500)
    add_output_arguments(p, "amtfl_deep.json")
    args = p.parse_args(argv)
    out = resolve_output(args.out, "amtfl_deep.json", overwrite=args.overwrite)     # checked before any work
    if args.dry_run:
        return dry_run_report(args, out)
    torch.set_num_threads(1)
    res = deep_comparison(args.seeds, args.steps)
    record = {"command": "python -m tutor.experiments.amtfl " + " ".join(argv or sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "torch": torch.__version__, "counts": list(DEEP_COUNTS),
              "errors": {k: [e.tolist() for e in v] for k, v in res.items() if k != "outgoing"},
              "outgoing": {k: [e.tolist() for e in v] for k, v in res["outgoing"].items()}}
    for name, errs in record["errors"].items():
        e = torch.tensor(errs)
        print(f"{name:24s} mean {e.mean():.3f}  frequent (>= 9 images) {e[:, :7].mean():.3f}  "
              f"rare (<= 3) {e[:, 15:].mean():.3f}")
    atomic_write_json(out, record, indent=1)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
