"""MAML, Meta-SGD, Meta-SGD 1/N and (Deterministic / Bayesian) TAML on any-shot Gaussian-class tasks.

    python -m tutor.experiments.bayesian_taml --seeds 0 1 2 --steps 1000 --grid 0.005 0.01 0.02 0.04 0.08 0.16 \\
        --out data/results/bayesian_taml.json --overwrite

Protocol (same for every method): 16-d Gaussian-class vector tasks (notes §7.1), 5-way any-shot
(shots per class in 1..25, half of the tasks class-imbalanced), 10 queries per class; OOD tasks move
the signal plane to dims 2-3 (a hard shift).  Learner MLP 16-32-32-C with a zero, per-task head;
5 second-order inner steps in meta-training, 10 at meta-test; Adam 1e-3, meta-batch 4, gradients
clipped to +-3; the same number of meta-iterations (1000) for every method.  Tuning: the initial
inner learning rate alpha of MAML, Meta-SGD, Meta-SGD 1/N and Bayesian TAML is chosen from the same
grid with the same budget (500 meta-iterations, seed 0) on 100 ID validation tasks (OOD tasks are
never used for selection); the ablations of Bayesian TAML (beta_KL = 1, deterministic) use its rate.
Then each method is trained with its rate for every seed.  All methods are scored on the same 300
ID and 300 OOD test tasks: accuracy, macro accuracy, tail-class recall.  Bayesian TAML is scored
with S = 10 Monte Carlo inner loops and with the posterior mean; beta_KL = 0.1 (a deviation from
the paper's 1) and beta_KL = 1 both run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import shlex
import sys
import time

import torch

from tutor.data import GaussianClassTasks
from tutor.nets import MLP
from tutor.outputs import add_output_arguments, atomic_write_json, dry_run_report, resolve_output
from tutor.papers.bayesian_taml import TAML, evaluate_metrics, preset
from tutor.train import meta_train
from tutor.validation import cli_float, cli_int

__all__ = ["AnyShotVectorTasks", "vector_tasks", "make_learner", "train_method", "METHODS", "readouts", "main"]

# name -> (preset, overrides); the default run (Deterministic TAML is available with --methods)
METHODS = {
    "MAML": ("MAML", {}),
    "Meta-SGD": ("Meta-SGD", {}),
    "Meta-SGD 1/N": ("Meta-SGD 1/N", {}),
    "Deterministic TAML": ("Deterministic TAML", {}),
    "Bayesian TAML (beta 0.1)": ("Bayesian TAML", {"beta_kl": 0.1}),
    "Bayesian TAML (beta 1)": ("Bayesian TAML", {"beta_kl": 1.0}),
}
DEFAULT_METHODS = ["MAML", "Meta-SGD", "Meta-SGD 1/N", "Bayesian TAML (beta 0.1)", "Bayesian TAML (beta 1)"]
# ablations of Bayesian TAML use its tuned rate (as Meta-Dropout's ablations do); every other method is tuned
TUNED_AS = {"Deterministic TAML": "Bayesian TAML (beta 0.1)", "Bayesian TAML (beta 1)": "Bayesian TAML (beta 0.1)"}


class AnyShotVectorTasks:
    """Any-shot Gaussian-class episodes (``GaussianClassTasks.sample_any_shot``) with a per-episode
    seed attached (so Monte Carlo draws do not depend on threading or batching)."""

    def __init__(self, variant: str = "id", ways: int = 5, max_shots: int = 25, queries: int = 10, dim: int = 16,
                 imbalanced_fraction: float = 0.5):
        self.family = GaussianClassTasks(dim, variant)
        self.ways, self.max_shots, self.queries = ways, max_shots, queries
        self.imbalanced_fraction = imbalanced_fraction

    def sample(self, gen=0):
        if not isinstance(gen, torch.Generator):
            gen = torch.Generator().manual_seed(int(gen))
        ep = self.family.sample_any_shot(self.ways, self.max_shots, self.queries, gen, self.imbalanced_fraction)
        return dataclasses.replace(ep, seed=torch.randint(0, 2**62, (), generator=gen))

    def batch(self, tasks: int, gen=0) -> list:
        if not isinstance(gen, torch.Generator):
            gen = torch.Generator().manual_seed(int(gen))
        return [self.sample(gen) for _ in range(tasks)]


def vector_tasks(n_val: int = 100, n_test: int = 300, ways: int = 5, max_shots: int = 25, queries: int = 10):
    """(train sampler, ID validation tasks, ID test tasks, OOD test tasks), all fixed by seeds."""
    train = AnyShotVectorTasks("id", ways, max_shots, queries)
    fixed = lambda variant, n, seed: AnyShotVectorTasks(variant, ways, max_shots, queries).batch(n, seed)  # noqa: E731
    return train, fixed("id", n_val, 777), fixed("id", n_test, 2024), fixed("ood", n_test, 2025)


def make_learner(method: str, inner_lr: float = 0.3, ways: int = 5, max_shots: int = 25, **overrides) -> TAML:
    """A TAML learner for ``method`` (a key of ``METHODS``) on the MLP learner 16-32-32-C."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
    name, extra = METHODS[method]
    cfg = preset(name, inner_lr=inner_lr, k_max=max_shots, **{**extra, **overrides})
    return TAML(MLP(16, (32, 32), ways, head_init="zero"), cfg)


def train_method(method: str, sampler, steps: int, seed: int, inner_lr: float = 0.3, lr: float = 1e-3,
                 meta_batch: int = 4, progress: bool | None = None, **overrides):
    """Meta-train one method from ``seed``: (learner, meta, history, wall seconds, CPU seconds)."""
    learner = make_learner(method, inner_lr, sampler.ways, sampler.max_shots, **overrides)
    torch.manual_seed(seed)
    meta = learner.init(gen=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    history = meta_train(learner, meta, sampler, steps=steps, meta_batch=meta_batch, lr=lr, clip=3.0,
                         mode="threads", workers=2, seed=seed, progress=progress, desc=method)
    return learner, meta, history, time.perf_counter() - t0, time.process_time() - c0


def readouts(learner: TAML, meta: dict, episodes: list) -> dict:
    """Per task: support counts N_c, E[omega_c], E[gamma_l], ||E[z~]|| and mean sigmas (plain lists)."""
    rows = {"counts": [], "omega": [], "gamma": [], "z_norm": [], "sigma": []}
    for ep in episodes:
        r = learner.readouts(meta, ep)
        rows["counts"].append(torch.bincount(ep.support_y, minlength=ep.ways).tolist())
        rows["omega"].append([round(v, 4) for v in r["omega"].tolist()] if "omega" in r else None)
        rows["gamma"].append([round(v, 4) for v in r["gamma"].tolist()] if "gamma" in r else None)
        rows["z_norm"].append(round(float(r["z_norm"]), 4) if "z_norm" in r else None)
        rows["sigma"].append({k: round(float(v.mean()), 4) for k, v in r.items() if k.startswith("sigma")})
    return rows


def _scores(results: dict) -> dict:
    return {m: [round(s, 4) for s in r.scores] for m, r in results.items() if m != "loss"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=cli_int(0), nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=cli_int(1), default=1000)
    p.add_argument("--grid", type=cli_float(0, strict=True), nargs="+",
                   default=[0.005, 0.01, 0.02, 0.04, 0.08, 0.16], help="initial inner lr alpha")
    p.add_argument("--tune-steps", type=cli_int(1), default=500, help="meta-iterations of every tuning run")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS), metavar="METHOD",
                   help=f"any of {list(METHODS)}")
    p.add_argument("--n-val", type=cli_int(1), default=100)
    p.add_argument("--n-test", type=cli_int(1), default=300)
    p.add_argument("--mc", type=cli_int(1), default=10, help="Monte-Carlo samples per prediction (>= 1)")
    add_output_arguments(p, "bayesian_taml.json")
    args = p.parse_args(argv)
    out = resolve_output(args.out, "bayesian_taml.json", overwrite=args.overwrite)   # checked before any work
    if args.dry_run:
        return dry_run_report(args, out)
    torch.set_num_threads(1)
    train, val, test_id, test_ood = vector_tasks(args.n_val, args.n_test)
    cli = argv if argv is not None else sys.argv[1:]  # shlex-quoted: method names contain spaces
    record = {"command": "python -m tutor.experiments.bayesian_taml " + shlex.join(cli),
              "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "python": platform.python_version(), "protocol": __doc__.strip().split("\n\n")[-1],
              "steps": args.steps, "mc_samples": args.mc, "n_test": args.n_test, "tuning": {}, "runs": []}
    # 1) the same inner-lr grid for every method, scored on ID validation tasks (posterior mean), seed 0
    chosen = {}
    for method in dict.fromkeys(TUNED_AS.get(m, m) for m in args.methods):
        grid = {}
        for inner_lr in args.grid:
            try:
                learner, meta, _, _, _ = train_method(method, train, args.tune_steps, seed=0, inner_lr=inner_lr,
                                                      progress=False)
                grid[inner_lr] = evaluate_metrics(learner, meta, val, workers=2, mean=True)["accuracy"].mean
            except FloatingPointError as e:       # a diverged setting is recorded as such, never chosen
                grid[inner_lr] = None
                print(f"tuning {method} alpha={inner_lr}: diverged ({e})", flush=True)
                continue
            print(f"tuning {method} alpha={inner_lr}: val {grid[inner_lr]:.4f}", flush=True)
        finite = {k: v for k, v in grid.items() if v is not None}
        if not finite:
            raise FloatingPointError(f"{method} diverged at every inner lr of the grid {args.grid}")
        chosen[method] = max(finite, key=finite.get)
        edge = chosen[method] in (min(args.grid), max(args.grid))
        record["tuning"][method] = {"grid": grid, "chosen": chosen[method], "on_edge": edge,
                                    "steps": args.tune_steps}
    for m in args.methods:
        chosen[m] = chosen[TUNED_AS.get(m, m)]
    # 2) every method, every seed, on the same ID and OOD test tasks
    for seed in args.seeds:
        for method in args.methods:
            learner, meta, history, wall, cpu = train_method(method, train, args.steps, seed,
                                                             inner_lr=chosen[method], progress=False)
            preds = [("mc", {"samples": args.mc}), ("mean", {"mean": True})] if learner.config.bayesian \
                else [("point", {})]
            for kind, kw in preds:
                rid = evaluate_metrics(learner, meta, test_id, workers=2, **kw)
                rood = evaluate_metrics(learner, meta, test_ood, workers=2, **kw)
                run = {"seed": seed, "method": method, "prediction": kind, "inner_lr": chosen[method],
                       "beta_kl": learner.config.beta_kl, "train_seconds": round(wall, 1),
                       "train_cpu_seconds": round(cpu, 1), "iterations": len(history.step),
                       "id": _scores(rid), "ood": _scores(rood)}
                if kind != "mean" and learner.config.latents:
                    run["readouts_id"] = readouts(learner, meta, test_id)
                    run["readouts_ood"] = readouts(learner, meta, test_ood)
                record["runs"].append(run)
                print(f"seed {seed} {method:26s} {kind:5s} ({wall:.0f} s): ID acc {rid['accuracy'].mean * 100:.1f} "
                      f"tail {rid['tail_recall'].mean * 100:.1f} | OOD acc {rood['accuracy'].mean * 100:.1f} "
                      f"tail {rood['tail_recall'].mean * 100:.1f}", flush=True)
    atomic_write_json(out, record, indent=None, separators=(",", ":"))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
