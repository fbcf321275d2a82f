"""App. G of HyperDistill at laptop scale: ANIL sinusoid regression with online hyperparameter learning.

    python -m tutor.experiments.hyperdistill --seeds 0 1 2 3 4 --out data/results/hyperdistill.json --overwrite

The feature extractor (tanh 1-40-40-40, ``lam``) is learned online by each hypergradient estimator
(FO, one-step lookahead, HyperDistill gamma = 0.9, DrMAD offline, N.IFT(3, 5)); the linear head's
initialisation by Reptile (``tutor.papers.hyperdistill.meta_train``, the stable configuration of the notes
§6.2).  Tuning: every method's Adam learning rate on lam is chosen from the same grid by the mean
query MSE on 200 **validation** tasks (their own seed), over two training seeds that are not scored;
a choice on the grid's edge widens the grid in that direction (up to four times) and is recorded.  Scoring:
meta-test MSE on 200 fixed **test** tasks, per seed; paired per-seed differences; JVPs per inner-opt;
the cosine of every estimator to exact reverse mode every 5 inner-opts along meta-training; an ablation
over gamma for HyperDistill at its tuned learning rate.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from dataclasses import asdict, replace

import torch

from tutor.data.tasks import SinusoidTasks
from tutor.outputs import add_output_arguments, atomic_write_json, dry_run_report, resolve_output
from tutor.papers.hyperdistill import ANILRegression, HyperDistillConfig, jvps_per_inner_opt, meta_test_mse, meta_train
from tutor.validation import cli_int

__all__ = ["HEADLINE", "fixed_tasks", "score", "tune_hyper_lr", "run", "main"]

HEADLINE = ("fo", "one_step", "hyperdistill", "drmad", "neumann")
LR_GRID = (3e-4, 1e-3, 3e-3)
TEST_SEED, VAL_SEED, TUNING_SEEDS = 12345, 777, (100, 101)


def fixed_tasks(cfg: HyperDistillConfig, n: int, seed: int) -> ANILRegression:
    """``n`` fixed sinusoid tasks (support and query) as one stacked problem."""
    return ANILRegression.from_episode(SinusoidTasks().batch(n, cfg.shots, cfg.queries, seed), cfg.hidden)


def score(cfg: HyperDistillConfig, method: str, seed: int, tasks: ANILRegression, diagnose=None) -> dict:
    """Meta-train once and score on ``tasks``: mean and per-task MSE, curves, theta, JVPs, cosines."""
    start = time.perf_counter()
    r = meta_train(cfg, method, seed, progress=False, diagnose_every=5 if diagnose is not None else 0,
                   diagnose_problem=diagnose)
    per_task = meta_test_mse(tasks, r.phi, r.lam, cfg)
    return {"mse": per_task.mean().item(), "per_task": [round(v, 6) for v in per_task.tolist()],
            "val_loss": r.val_loss, "jvps": r.jvps, "theta": r.theta, "cosines": r.cosines,
            "seconds": time.perf_counter() - start}


def _val_mse(cfg, method, seed, val) -> float:
    try:
        return score(cfg, method, seed, val)["mse"]
    except FloatingPointError:          # a diverged run scores infinitely badly
        return float("inf")


def tune_hyper_lr(cfg: HyperDistillConfig, methods=HEADLINE, grid=LR_GRID, seeds=TUNING_SEEDS,
                  n_val: int = 200, max_widen: int = 4) -> dict:
    """Every method's hyper learning rate from the same grid by mean validation MSE; widen at an edge."""
    val = fixed_tasks(cfg, n_val, VAL_SEED)
    chosen, table, widened, on_edge = {}, {}, {}, {}
    for m in methods:
        scores, lrs = {}, list(grid)
        for _ in range(max_widen + 1):
            for lr in lrs:
                if lr not in scores:
                    scores[lr] = sum(_val_mse(replace(cfg, hyper_lr=lr), m, s, val) for s in seeds) / len(seeds)
            best = min(scores, key=scores.get)
            ordered = sorted(scores)
            if best == ordered[0]:
                lrs = [ordered[0] / 3]
            elif best == ordered[-1]:
                lrs = [ordered[-1] * 3]
            else:
                break
            widened[m] = widened.get(m, 0) + 1
        chosen[m], on_edge[m] = best, best in (min(scores), max(scores))
        table[m] = {f"{k:.2g}": v for k, v in sorted(scores.items())}
        print(f"  {m:13s} validation MSE by hyper lr: " + ", ".join(f"{k}: {v:.4f}" for k, v in table[m].items())
              + f"  -> {best:.2g}", flush=True)
    return {"chosen": chosen, "validation_mse": table, "widened": widened, "still_on_edge": on_edge,
            "seeds": list(seeds), "grid": list(grid)}


def run(cfg: HyperDistillConfig, seeds, lrs: dict, methods=HEADLINE, n_test: int = 200,
        gammas=(0.5, 0.99)) -> dict:
    """Test MSE per method and seed (with the tuned lrs), and the gamma ablation for HyperDistill."""
    test = fixed_tasks(cfg, n_test, TEST_SEED)
    diagnose = fixed_tasks(cfg, cfg.meta_batch, VAL_SEED + 1)
    results = {m: [score(replace(cfg, hyper_lr=lrs[m]), m, s, test, diagnose) for s in seeds] for m in methods}
    ablation = {str(g): [score(replace(cfg, hyper_lr=lrs["hyperdistill"], gamma=g), "hyperdistill", s, test)
                         for s in seeds] for g in gammas}
    return {"results": results, "gamma_ablation": ablation}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=cli_int(0), nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--inner-opts", type=cli_int(1), default=None, help="M (default: the config's)")
    p.add_argument("--meta-batch", type=cli_int(1), default=None)
    p.add_argument("--inner-steps", type=cli_int(1), default=None)
    p.add_argument("--n-tasks", type=cli_int(1), default=200, help="validation and test tasks")
    add_output_arguments(p, "hyperdistill.json")
    args = p.parse_args(argv)
    out_path = resolve_output(args.out, "hyperdistill.json", overwrite=args.overwrite)   # before any work
    if args.dry_run:
        return dry_run_report(args, out_path)
    torch.set_num_threads(1)
    start = time.perf_counter()
    overrides = {k: v for k, v in {"inner_opts": args.inner_opts, "meta_batch": args.meta_batch,
                                   "inner_steps": args.inner_steps}.items() if v is not None}
    if "inner_steps" in overrides:                    # N.IFT runs in the last K <= T steps
        overrides["neumann_last"] = min(HyperDistillConfig.neumann_last, overrides["inner_steps"])
    cfg = HyperDistillConfig(**overrides)
    print("tuning the hyper learning rate on validation tasks:", flush=True)
    tuning = tune_hyper_lr(cfg, n_val=args.n_tasks)
    out = run(cfg, args.seeds, tuning["chosen"], n_test=args.n_tasks)
    for m, rows in out["results"].items():
        print(f"{m:13s} test MSE per seed: " + " ".join(f"{r['mse']:.4f}" for r in rows)
              + f"   JVPs/inner-opt {jvps_per_inner_opt(m, cfg)}", flush=True)
    for g, rows in out["gamma_ablation"].items():
        print(f"hyperdistill gamma={g}: " + " ".join(f"{r['mse']:.4f}" for r in rows))
    record = {"command": "python -m tutor.experiments.hyperdistill " + " ".join(argv or sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "seconds": round(time.perf_counter() - start, 1), "config": asdict(cfg), "seeds": args.seeds,
              "test_seed": TEST_SEED, "val_seed": VAL_SEED, "n_tasks": args.n_tasks,
              "jvps_per_inner_opt": {m: jvps_per_inner_opt(m, cfg) for m in HEADLINE},
              "tuning": tuning, **out}
    atomic_write_json(out_path, record, indent=1)
    print("wrote", out_path)
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
