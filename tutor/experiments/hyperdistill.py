"""App. G of HyperDistill at laptop scale, with its ceiling, its controls and a regime map.

    python -m tutor.experiments.hyperdistill --seeds 0 1 2 3 4 --out data/results/hyperdistill.json --overwrite

**Headline (ANIL sinusoid regression, inner lr eta = 0.02).**  The feature extractor (tanh 1-40-40-40,
``lam``) is learned online by each hypergradient estimator; the linear heads' initialisation by Reptile
(``tutor.papers.hyperdistill.meta_train``, the stable configuration of the notes §6.2).  Arms:
``exact_online`` (exact reverse mode through w_0..w_t after every inner step, 2t - 1 JVPs: the ceiling any
approximation of it can reach), FO, one-step, ``scaled_one_step`` (gamma = 0 with a fitted theta: a pure
length fix, the control for the distilled direction), HyperDistill, DrMAD (offline) and N.IFT(3, 5).
theta is refit by LinearEstimation every 5 inner-opts (6 fits in M = 30; the paper refits every 50 of
M = 1000, i.e. 20 fits), for HyperDistill and the scaled control alike.  For a seed every arm sees the
same initialisation, tasks and minibatches (separate generators for the task stream, the D* draws and
LinearEstimation).

**Tuning (validation tasks only, never scored).**  Every arm's Adam learning rate on lam from the same grid
(3e-4, 1e-3, 3e-3; widened at an edge) by the mean query MSE on 200 validation tasks over the tuning
seeds; HyperDistill's gamma from {0.3, 0.5, 0.9, 0.99} at its chosen learning rate (coordinate search:
first the lr at gamma = 0.9, then gamma).  ``exact_online`` costs ~20 s a run, so it is tuned on the first
tuning seed only (recorded).  **Scoring:** meta-test MSE on 200 fixed test tasks per seed; paired per-seed
differences; amortised JVPs per inner-opt (LinearEstimation included).  **Diagnostics along training**
(every 5 inner-opts, on 10 fixed validation tasks from the run's current lam and phi, in the one-step,
scaled, HyperDistill and exact runs): the second-order-only cosine to exact and the projection
|.|/|exact SO| of one-step, the Eq. 7 gamma-sum and the distilled JVP (theta = 1, so any theta multiplies
it), the theta the run fitted at that same inner-opt (same lam and phi, its own training meta-batch; the
refit precedes the diagnostic) and a refit on the diagnostic trajectory, and 5 D* draws.

**Regime map (pre-registered before the run).**  The factor that creates short-horizon bias is the length
of the memory of the inner loop, about 1/(eta k) steps for curvature k: a smaller inner learning rate eta
(at fixed T = 30) makes the Jacobian products decay more slowly, so one-step lookahead sees a smaller
part of the second-order term.  Two problems, the arms one-step, HyperDistill and exact online, the first
3 seeds (the headline's 5 at eta = 0.02), every setting chosen on validation tasks (sinusoid eta != 0.02:
one tuning seed; exact online takes one-step's validated learning rate, to save compute):

1. *ANIL sinusoid, eta in {0.005, 0.01, 0.02}* (0.02 = the headline).  Prediction: at eta = 0.02
   (one-step's SO cosine was 0.96-0.99 after 10 inner-opts in the previous run) neither exact online nor
   HyperDistill beats one-step beyond the seed spread; at eta = 0.005 (pilot: one-step's SO cosine 0.21,
   2.2x too short) exact online beats one-step with an interval that excludes 0, and HyperDistill's gain
   lies between 0 and exact online's; both gains shrink as eta grows.
2. *Quadratic tasks with a per-coordinate L2 strength as lam, eta in {0.1, 0.3, 1.0}*: ``L_val`` does not
   depend on lam, so the first-order term is identically zero and the distilled JVP equals the Eq. 7
   gamma-sum exactly (B linear in w and independent of D; not the exact second-order term).  The paper's
   argument predicts gains that grow as eta shrinks.  Our pilot (seed 0, 20 inner-opts)
   found one-step's SO direction 0.88-1.0 aligned with exact and only its length wrong (projection
   0.1-0.7), and Adam on lam rescales every coordinate; so we predict *no* gain beyond the seed spread
   of exact online or HyperDistill over one-step at any eta on this problem.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from dataclasses import asdict, dataclass, replace

import torch

from tutor.data.tasks import SinusoidTasks
from tutor.experiments.regime import regime_map
from tutor.outputs import add_output_arguments, atomic_write_json, dry_run_report, resolve_output
from tutor.papers.hyperdistill import (
    ANILRegression,
    HyperDistillConfig,
    QuadraticTasks,
    jvps_per_inner_opt,
    meta_test_mse,
    meta_train,
)
from tutor.validation import cli_int

__all__ = ["HEADLINE", "REGIME_ARMS", "Setting", "sinusoid_setting", "quadratic_setting", "fixed_tasks", "score",
           "tune", "run_setting", "regime_maps", "main"]

HEADLINE = ("exact_online", "fo", "one_step", "scaled_one_step", "hyperdistill", "drmad", "neumann")
DIAGNOSED = ("one_step", "scaled_one_step", "hyperdistill", "exact_online")
REGIME_ARMS = ("one_step", "hyperdistill", "exact_online")
LR_GRID = (3e-4, 1e-3, 3e-3)
QUAD_LR_GRID = (0.01, 0.03, 0.1)
GAMMA_GRID = (0.3, 0.5, 0.9, 0.99)
SINUSOID_ETAS = (0.005, 0.01, 0.02)
QUADRATIC_ETAS = (0.1, 0.3, 1.0)
HEADLINE_ETA = 0.02
BORROW = {"exact_online": "one_step"}        # regime map: exact online takes one-step's validated lr
TEST_SEED, VAL_SEED, TUNING_SEEDS = 12345, 777, (100, 101)
PREDICTIONS = {
    "sinusoid": ("at eta = 0.02 neither exact online nor HyperDistill beats one-step beyond the seed spread; at "
                 "eta = 0.005 exact online beats one-step (interval excludes 0) and HyperDistill's gain lies "
                 "between 0 and exact online's; both gains shrink as eta grows"),
    "quadratic": ("first-order term identically zero; the paper's argument predicts gains growing as eta "
                  "shrinks, our pilot (one-step's SO direction 0.88-1.0 aligned, only its length wrong, Adam "
                  "on lam) predicts no gain of exact online or HyperDistill over one-step beyond the seed "
                  "spread at any eta"),
}


def fixed_tasks(cfg: HyperDistillConfig, n: int, seed: int) -> ANILRegression:
    """``n`` fixed sinusoid tasks (support and query) as one stacked problem."""
    return ANILRegression.from_episode(SinusoidTasks().batch(n, cfg.shots, cfg.queries, seed), cfg.hidden)


@dataclass
class Setting:
    """One problem at one inner learning rate: its config, task factory, lam init and fixed task sets."""

    name: str
    cfg: HyperDistillConfig
    val: object
    test: object
    diagnose: object
    lr_grid: tuple
    make_problem: object = None      # None: sinusoid tasks (meta_train's default)
    lam0: object = None


def sinusoid_setting(cfg: HyperDistillConfig, n_tasks: int) -> Setting:
    return Setting("sinusoid", cfg, fixed_tasks(cfg, n_tasks, VAL_SEED), fixed_tasks(cfg, n_tasks, TEST_SEED),
                   fixed_tasks(cfg, cfg.meta_batch, VAL_SEED + 1), LR_GRID)


def quadratic_setting(cfg: HyperDistillConfig, n_tasks: int, dim: int = 8) -> Setting:
    """Quadratic tasks (``QuadraticTasks``, first-order term identically zero); lam starts at log 0.1."""
    def sample(n, gen):
        return QuadraticTasks.sample(n, gen, dim=dim, examples=cfg.shots)

    return Setting("quadratic", cfg, sample(n_tasks, torch.Generator().manual_seed(VAL_SEED)),
                   sample(n_tasks, torch.Generator().manual_seed(TEST_SEED)),
                   sample(cfg.meta_batch, torch.Generator().manual_seed(VAL_SEED + 1)), QUAD_LR_GRID,
                   make_problem=lambda gen: sample(cfg.meta_batch, gen), lam0=torch.full((dim,), math.log(0.1)))


def _r(x, nd=5):
    """Round every float in a nested structure (keeps the JSON small)."""
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, dict):
        return {k: _r(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_r(v, nd) for v in x]
    return x


def score(setting: Setting, method: str, seed: int, tasks, lr: float, gamma: float | None = None,
          diagnose: bool = False, per_task: bool = True) -> dict:
    """Meta-train once and score on ``tasks``: mean (and per-task) loss, curves, theta, JVPs, diagnostics."""
    cfg = replace(setting.cfg, hyper_lr=lr, **({"gamma": gamma} if gamma is not None else {}))
    start = time.perf_counter()
    r = meta_train(cfg, method, seed, progress=False, make_problem=setting.make_problem, lam0=setting.lam0,
                   diagnose_every=5 if diagnose else 0, diagnose_problem=setting.diagnose)
    losses = meta_test_mse(tasks, r.phi, r.lam, cfg)
    out = {"mse": losses.mean().item(), "val_loss": _r(r.val_loss), "jvps": r.jvps,
           "amortised_jvps": r.jvps[-1] / cfg.inner_opts, "theta": _r(r.theta), "diagnostics": _r(r.diagnostics),
           "seconds": round(time.perf_counter() - start, 2)}
    if per_task:
        out["per_task"] = [round(v, 6) for v in losses.tolist()]
    return out


def _val(setting, method, seed, lr, gamma=None) -> float:
    try:
        return score(setting, method, seed, setting.val, lr, gamma, per_task=False)["mse"]
    except FloatingPointError:          # a diverged run scores infinitely badly
        return float("inf")


def _tune_lr(setting, method, seeds, gamma=None, max_widen=3):
    scores, lrs, widened = {}, list(setting.lr_grid), 0
    for _ in range(max_widen + 1):
        for lr in lrs:
            if lr not in scores:
                scores[lr] = sum(_val(setting, method, s, lr, gamma) for s in seeds) / len(seeds)
        best, ordered = min(scores, key=scores.get), sorted(scores)
        if best == ordered[0]:
            lrs = [ordered[0] / 3]
        elif best == ordered[-1]:
            lrs = [ordered[-1] * 3]
        else:
            break
        widened += 1
    return best, scores, widened, best in (min(scores), max(scores))


def tune(setting: Setting, methods, seeds, exact_seeds, gammas=GAMMA_GRID, borrow=None) -> dict:
    """Every arm's hyper lr (same grid, widened at an edge) and HyperDistill's gamma, on validation tasks.
    ``borrow={arm: other}``: the arm takes ``other``'s chosen lr instead of its own search (compute)."""
    chosen, table, widened, on_edge, gamma_table = {}, {}, {}, {}, {}
    gamma, borrow = setting.cfg.gamma, borrow or {}
    for m in sorted(methods, key=lambda m: m in borrow):
        if m in borrow:
            chosen[m], table[m], widened[m], on_edge[m] = chosen[borrow[m]], {}, 0, False
            continue
        sd = exact_seeds if m == "exact_online" else seeds
        chosen[m], scores, widened[m], on_edge[m] = _tune_lr(setting, m, sd)
        table[m] = {f"{k:.3g}": v for k, v in sorted(scores.items())}
        if m == "hyperdistill":                      # then gamma at that lr (gamma = cfg.gamma already scored)
            gamma_table = {setting.cfg.gamma: scores[chosen[m]]}
            for g in gammas:
                if g not in gamma_table:
                    gamma_table[g] = sum(_val(setting, m, s, chosen[m], g) for s in sd) / len(sd)
            gamma = min(gamma_table, key=gamma_table.get)
        print(f"  [{setting.name} eta={setting.cfg.inner_lr}] {m:15s} validation loss by hyper lr: "
              + ", ".join(f"{k}: {v:.4f}" for k, v in table[m].items()) + f" -> {chosen[m]:.3g}", flush=True)
    if gamma_table:
        print(f"  [{setting.name} eta={setting.cfg.inner_lr}] hyperdistill gamma: "
              + ", ".join(f"{k}: {v:.4f}" for k, v in sorted(gamma_table.items())) + f" -> {gamma}", flush=True)
    return {"chosen": chosen, "gamma": gamma, "validation": table,
            "gamma_validation": {str(k): v for k, v in sorted(gamma_table.items())}, "widened": widened,
            "still_on_edge": on_edge, "seeds": list(seeds), "exact_online_seeds": list(exact_seeds), "borrowed": borrow,
            "grid": list(setting.lr_grid), "gamma_grid": list(gammas)}


def run_setting(setting: Setting, methods, seeds, tuning_seeds, exact_seeds, diagnose=(), per_task=True,
                borrow=None) -> dict:
    """Tune on validation tasks, then score every arm on the test tasks for every seed."""
    tuning = tune(setting, methods, tuning_seeds, exact_seeds, borrow=borrow)
    cfg = replace(setting.cfg, gamma=tuning["gamma"])
    results = {}
    for m in methods:              # gamma only acts in HyperDistill; the others' diagnostics use it too
        results[m] = [score(setting, m, s, setting.test, tuning["chosen"][m], tuning["gamma"], m in diagnose, per_task)
                      for s in seeds]
        print(f"  [{setting.name} eta={cfg.inner_lr}] {m:15s} test loss per seed: "
              + " ".join(f"{r['mse']:.4f}" for r in results[m]), flush=True)
    return {"inner_lr": cfg.inner_lr, "config": asdict(cfg), "tuning": tuning, "results": results,
            "jvps_per_inner_opt": {m: jvps_per_inner_opt(m, cfg) for m in methods},
            "amortised_jvps_per_inner_opt": {m: jvps_per_inner_opt(m, cfg, amortised=True) for m in methods}}


def regime_maps(runs: dict, etas: dict) -> list:
    """Paired test-loss differences (method - one-step) against eta, for HyperDistill and exact online."""
    maps = []
    for problem, values in etas.items():
        for method in ("hyperdistill", "exact_online"):
            get = {eta: [r["mse"] for r in runs[problem][str(eta)]["results"][method]] for eta in values}
            base = {eta: [r["mse"] for r in runs[problem][str(eta)]["results"]["one_step"]] for eta in values}
            m = regime_map(f"inner learning rate eta ({problem})", list(values), get, base, method=method,
                           baseline="one_step", metric="meta-test loss", higher_is_better=False,
                           prediction=PREDICTIONS[problem])
            m["problem"] = problem
            maps.append(m)
    return maps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=cli_int(0), nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--inner-opts", type=cli_int(1), default=None, help="M (default: the config's)")
    p.add_argument("--meta-batch", type=cli_int(1), default=None)
    p.add_argument("--inner-steps", type=cli_int(1), default=None)
    p.add_argument("--n-tasks", type=cli_int(1), default=200, help="validation and test tasks")
    p.add_argument("--estimation-period", type=cli_int(1), default=None, help="refit theta every P inner-opts")
    p.add_argument("--quadratic-inner-opts", type=cli_int(1), default=None,
                   help="M of the quadratic regime map (default 20, or --inner-opts when given)")
    add_output_arguments(p, "hyperdistill.json")
    args = p.parse_args(argv)
    out_path = resolve_output(args.out, "hyperdistill.json", overwrite=args.overwrite)   # before any work
    if args.dry_run:
        return dry_run_report(args, out_path)
    torch.set_num_threads(1)
    start = time.perf_counter()
    overrides = {k: v for k, v in {"inner_opts": args.inner_opts, "meta_batch": args.meta_batch,
                                   "inner_steps": args.inner_steps,
                                   "estimation_period": args.estimation_period}.items() if v is not None}
    if "inner_steps" in overrides:                    # N.IFT runs in the last K <= T steps
        overrides["neumann_last"] = min(HyperDistillConfig.neumann_last, overrides["inner_steps"])
    cfg = HyperDistillConfig(inner_lr=HEADLINE_ETA, **overrides)
    print("headline (sinusoid, eta = 0.02): tuning on validation tasks, then scoring", flush=True)
    head = run_setting(sinusoid_setting(cfg, args.n_tasks), HEADLINE, args.seeds, TUNING_SEEDS, TUNING_SEEDS[:1],
                       diagnose=DIAGNOSED)
    runs = {"sinusoid": {str(HEADLINE_ETA): head}, "quadratic": {}}
    for eta in SINUSOID_ETAS:
        if eta != HEADLINE_ETA:
            print(f"regime map: sinusoid, eta = {eta}", flush=True)
            runs["sinusoid"][str(eta)] = run_setting(sinusoid_setting(replace(cfg, inner_lr=eta), args.n_tasks),
                                                     REGIME_ARMS, args.seeds[:3], TUNING_SEEDS[:1], (),
                                                     diagnose=("hyperdistill",), per_task=False, borrow=BORROW)
    q_opts = args.quadratic_inner_opts or args.inner_opts or 20
    qcfg = replace(cfg, shots=16, batch=4, inner_opts=q_opts)
    for eta in QUADRATIC_ETAS:
        print(f"regime map: quadratic, eta = {eta}", flush=True)
        runs["quadratic"][str(eta)] = run_setting(quadratic_setting(replace(qcfg, inner_lr=eta), args.n_tasks),
                                                  REGIME_ARMS, args.seeds[:3], TUNING_SEEDS, (),
                                                  diagnose=("hyperdistill",), per_task=False, borrow=BORROW)
    regime = regime_maps(runs, {"sinusoid": SINUSOID_ETAS, "quadratic": QUADRATIC_ETAS})
    runs["sinusoid"][str(HEADLINE_ETA)] = {"inner_lr": HEADLINE_ETA,
                                           "same_as": "the top-level config, tuning and results"}
    record = {"command": "python -m tutor.experiments.hyperdistill " + " ".join(argv or sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "seconds": round(time.perf_counter() - start, 1), "config": head["config"], "seeds": args.seeds,
              "test_seed": TEST_SEED, "val_seed": VAL_SEED, "n_tasks": args.n_tasks,
              "jvps_per_inner_opt": head["jvps_per_inner_opt"],
              "amortised_jvps_per_inner_opt": head["amortised_jvps_per_inner_opt"],
              "tuning": head["tuning"], "results": head["results"], "runs": runs, "regime": regime}
    atomic_write_json(out_path, record, indent=1)
    print("wrote", out_path)
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
