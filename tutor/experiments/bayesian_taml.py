"""MAML, Meta-SGD, two 1/N weightings, omega-TAML and (Deterministic / Bayesian) TAML on any-shot vector tasks.

    python -m tutor.experiments.bayesian_taml --seeds 0 1 2 3 4 --ablation-seeds 0 1 2 \\
        --out data/results/bayesian_taml.json --overwrite

Pre-registered predictions (written before the run that produced data/results/bayesian_taml.json).
The paper's argument is that balancing pays more the more imbalanced and the more out-of-distribution
a task is.  On our tasks it predicts:
(P1) class imbalance: the accuracy gain of Bayesian TAML and of omega-TAML over Meta-SGD grows with the
     class-imbalance ratio of the test tasks (largest / smallest class, 1 -> 25 at a fixed support size
     of 50): near 0 on balanced tasks (ratio 1), positive and largest at ratio 25.
(P2) distribution shift: the gain of Bayesian TAML over Meta-SGD grows with the OOD shift strength s
     (signal plane rotated by s * 90 degrees from the training plane, 0 -> 1); the gain of omega-TAML
     (class weights only) does not depend on s, because class weights do not address a shift.
(P3) the fixed 1/N_c weighting at the uniform weighting's total scale is at least as good as the
     usual 1/N_c (which sums to 1 and so also shrinks the inner step) on imbalanced tasks.
(P4) with batch norm in the learner (the paper's Conv4 semantics: z is largely cancelled in the forward
     pass) Bayesian TAML loses less to Meta-SGD on balanced tasks than without batch norm.

Outcome (added after the runs; see notebook 03 §7, §7.1 and its regime map).  The first run was stopped
after three seeds of the batch-norm arm; a second run (--reuse of the first's file: its tuning scores and
its finished runs at unchanged rates) widened the grids until every choice was interior (MAML 0.64 with
1.28 worse; beta_KL = 1's 0.005 with 0.0025 worse), tuned the no-batch-norm arm on its own learner, and
added batch-norm seeds 3-4 and no-batch-norm seeds 0-2.  P1 held for omega-TAML, not for Bayesian TAML
(flat, 2.9-3.9 points below Meta-SGD at every ratio).  P2 held for Bayesian TAML, not for omega-TAML
(its gain is 1.1-4.7 points lower at s = 1 than at s = 0 in every seed).  P3 did not hold
in-distribution (the uniform-scale 1/N_c is below the usual 1/N_c on imbalanced ID tasks).  P4 was not
confirmed: on balanced ID tasks Bayesian TAML - Meta-SGD is -4.7 +- 4.9 with batch norm and -5.4 +- 2.5
without (paired difference +0.7 +- 5.9, 3 seeds); its OOD gain over Meta-SGD appears only with batch norm
(+27.7 +- 6.0 vs +3.5 +- 9.3 on the same 3 seeds).  Adding no-bn seeds 3-4 (--ablation-seeds 0 1 2 3 4
--reuse of the shipped file) stopped with a FloatingPointError: Deterministic TAML, no-bn seed 3, alpha 0.02,
meta-training loss 1.8e15 at step 70 (the driver does not record diverged runs; not shipped).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from tutor.data import GaussianClassTasks
from tutor.experiments.regime import regime_map
from tutor.nets import MLP
from tutor.outputs import RUNS_DIR, add_output_arguments, atomic_write_json, dry_run_report, resolve_output
from tutor.papers.bayesian_taml import TAML, evaluate_metrics, evaluate_steps, preset
from tutor.train import meta_train
from tutor.validation import cli_int

__all__ = ["AnyShotVectorTasks", "vector_tasks", "imbalance_tasks", "shift_tasks", "imbalance_shots",
           "make_learner", "train_method", "arms_present", "METHODS", "ARMS", "GRIDS", "PROTOCOL", "PREDICTIONS",
           "readouts", "task_groups", "main"]

PROTOCOL = """Protocol (same for every method): 16-d Gaussian-class vector tasks (notes 7.1), 5-way any-shot
(shots per class in 1..25, half of the tasks class-imbalanced), 10 queries per class; OOD test tasks move
the signal plane to dims 2-3 (a hard shift).  Learner MLP 16-32-32-C with a zero, per-task head, with
batch norm after each hidden layer (arm "bn", the default: the paper's Conv4 semantics) or without
(arm "no-bn"); 5 second-order inner steps in meta-training, scored after 5 and after 10 inner steps at
meta-test; Adam 1e-3, meta-batch 4, gradients clipped to +-3; the same number of meta-iterations for
every method (CPU seconds recorded).  Selection uses ID validation tasks only (OOD tasks and test tasks
are never used): the initial inner learning rate alpha of every tuned method comes from a 3-point grid
around its earlier choice (x0.5, x1, x2), widened by one point whenever the best value sits on an edge
(up to 6 times; a diverged rate counts as a worse neighbour), with the same budget (tune-steps
meta-iterations, seed 0) on n-val ID validation tasks
(posterior mean, 10 steps); beta_KL (0.1 or 1, each with its own alpha) is chosen the same way.
Deterministic TAML uses the chosen Bayesian TAML's alpha (an ablation).  The other arm's rates are
tuned the same way on its own learner (same grids, budget and validation tasks; the default arm's
beta_KL choice).  All methods are scored on the same n-test ID and n-test OOD test tasks (per-task
accuracy, macro accuracy, tail-class recall on imbalanced tasks only); Bayesian TAML with S Monte Carlo
inner loops ("mc") and with the posterior mean ("mean").  Regime maps (default arm, test time): one
trained model per seed and method, scored on n-regime test tasks at each class-imbalance ratio (shots
geometric from the largest to the smallest class, 50 support examples) and at each OOD shift strength."""

PREDICTIONS = {
    "imbalance": "The accuracy gain over Meta-SGD grows with the class-imbalance ratio of the test tasks: near 0 at "
                 "ratio 1, positive and largest at ratio 25 (P1).",
    "shift_bayes": "The accuracy gain of Bayesian TAML over Meta-SGD grows with the OOD shift strength (P2).",
    "shift_omega": "The accuracy gain of omega-TAML over Meta-SGD does not depend on the OOD shift strength: class "
                   "weights do not address a shift (P2).",
}

# name -> (preset, overrides)
METHODS = {
    "MAML": ("MAML", {}),
    "Meta-SGD": ("Meta-SGD", {}),
    "Meta-SGD 1/N": ("Meta-SGD 1/N", {}),
    "Meta-SGD 1/N (uniform scale)": ("Meta-SGD 1/N (uniform scale)", {}),
    "omega-TAML": ("omega-TAML", {}),
    "Deterministic TAML": ("Deterministic TAML", {}),
    "Bayesian TAML (beta 0.1)": ("Bayesian TAML", {"beta_kl": 0.1}),
    "Bayesian TAML (beta 1)": ("Bayesian TAML", {"beta_kl": 1.0}),
}
DEFAULT_METHODS = list(METHODS)
BAYES = ("Bayesian TAML (beta 0.1)", "Bayesian TAML (beta 1)")
# every tuned method's 3-point grid, centred on its earlier (validation-chosen) rate
GRIDS = {"MAML": (0.04, 0.08, 0.16), "Meta-SGD": (0.01, 0.02, 0.04), "Meta-SGD 1/N": (0.005, 0.01, 0.02),
         "Meta-SGD 1/N (uniform scale)": (0.01, 0.02, 0.04), "omega-TAML": (0.01, 0.02, 0.04),
         "Bayesian TAML (beta 0.1)": (0.02, 0.04, 0.08), "Bayesian TAML (beta 1)": (0.02, 0.04, 0.08)}
ARMS = {"bn": True, "no-bn": False}
IMBALANCE_RATIOS = (1, 2, 5, 10, 25)
SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0)
REGIME_METHODS = ("Meta-SGD", "omega-TAML")      # + the validation-chosen Bayesian TAML


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


def imbalance_shots(ratio: float, ways: int = 5, total: int = 50) -> list[int]:
    """Shot counts geometric from the largest to the smallest class with largest/smallest ~ ``ratio``,
    summing to ~``total`` (at least 1 each): ratio 1 gives ``total // ways`` per class."""
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio >= 1):
        raise ValueError(f"the imbalance ratio must be a finite number >= 1, got {ratio!r}")
    w = [ratio ** (-i / (ways - 1)) for i in range(ways)]
    return [max(1, round(total * v / sum(w))) for v in w]


def imbalance_tasks(ratio: float, n: int, seed: int, ways: int = 5, total: int = 50, queries: int = 10) -> list:
    """``n`` ID test tasks whose class sizes follow :func:`imbalance_shots` (class order shuffled)."""
    family, gen = GaussianClassTasks(16, "id"), torch.Generator().manual_seed(seed)
    shots, out = imbalance_shots(ratio, ways, total), []
    for _ in range(n):
        perm = torch.randperm(ways, generator=gen).tolist()
        ep = family.sample(ways, [shots[p] for p in perm], queries, gen)
        out.append(dataclasses.replace(ep, seed=torch.randint(0, 2**62, (), generator=gen)))
    return out


def _rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate the pairs of dims (0, 2) and (1, 3) by ``angle``: the ID signal plane (dims 0-1) moves
    towards dims 2-3 and the nuisance there moves into its place (distributions otherwise unchanged)."""
    c, s = math.cos(angle), math.sin(angle)
    out = x.clone()
    out[:, 0:2] = c * x[:, 0:2] - s * x[:, 2:4]
    out[:, 2:4] = s * x[:, 0:2] + c * x[:, 2:4]
    return out


def shift_tasks(strength: float, n: int, seed: int, ways: int = 5, max_shots: int = 25, queries: int = 10) -> list:
    """``n`` any-shot test tasks whose signal plane is rotated by ``strength * 90`` degrees (0: ID, 1: the
    signal in dims 2-3, as the hard OOD variant)."""
    if not (isinstance(strength, (int, float)) and 0 <= strength <= 1):
        raise ValueError(f"the shift strength must be a number in [0, 1], got {strength!r}")
    angle = strength * math.pi / 2
    return [dataclasses.replace(ep, support_x=_rotate(ep.support_x, angle), query_x=_rotate(ep.query_x, angle))
            for ep in AnyShotVectorTasks("id", ways, max_shots, queries).batch(n, seed)]


def make_learner(method: str, inner_lr: float = 0.3, ways: int = 5, max_shots: int = 25, bn: bool = True,
                 **overrides) -> TAML:
    """A TAML learner for ``method`` (a key of ``METHODS``) on the MLP learner 16-32-32-C (``bn``: batch norm)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
    name, extra = METHODS[method]
    cfg = preset(name, inner_lr=inner_lr, k_max=max_shots, **{**extra, **overrides})
    return TAML(MLP(16, (32, 32), ways, bn=bn, head_init="zero"), cfg)


def train_method(method: str, sampler, steps: int, seed: int, inner_lr: float = 0.3, lr: float = 1e-3,
                 meta_batch: int = 4, progress: bool | None = None, bn: bool = True, **overrides):
    """Meta-train one method from ``seed``: (learner, meta, history, wall seconds, CPU seconds)."""
    learner = make_learner(method, inner_lr, sampler.ways, sampler.max_shots, bn=bn, **overrides)
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


def task_groups(counts: list, split: int = 50) -> list[str]:
    """"balanced/small", "imbalanced/large", ... per task from its support counts (small: N <= ``split``)."""
    return [("balanced" if min(c) == max(c) else "imbalanced") + ("/small" if sum(c) <= split else "/large")
            for c in counts]


def _counts(episodes: list) -> list:
    return [torch.bincount(ep.support_y, minlength=ep.ways).tolist() for ep in episodes]


def _per_task(scores: dict, counts: list) -> dict:
    """Rounded per-task lists; tail-class recall is ``None`` on balanced tasks (every class ties there)."""
    out = {m: [round(v, 4) for v in vals] for m, vals in scores.items() if m != "loss"}
    out["tail_recall"] = [v if min(c) < max(c) else None for v, c in zip(out["tail_recall"], counts)]
    return out


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def _tune(method, arm_bn, train, val, steps, grid, widen=6, cached=None):
    """Validation accuracy per alpha on a grid that is widened (x2 / x0.5) while the best value sits on an edge
    (at most ``widen`` times).  ``cached``: an earlier tuning record of the same setting (``_tune``'s output, same
    ``steps``, validation tasks and arm) whose scores are reused instead of retrained; its grid joins this one."""
    scores, post, grid = {}, {}, sorted(grid)
    if cached:
        scores = {float(k): v for k, v in cached["grid"].items()}
        post = {float(k): v for k, v in cached.get("posterior", {}).items()}
        grid = sorted(set(grid) | set(scores))
    for _ in range(widen + 1):
        for alpha in grid:
            if alpha in scores:
                continue
            try:
                learner, meta, _, _, _ = train_method(method, train, steps, seed=0, inner_lr=alpha, progress=False,
                                                      bn=arm_bn)
                scores[alpha] = evaluate_metrics(learner, meta, val, workers=2, mean=True)["accuracy"].mean
                if learner.config.latents:      # posterior read-outs on the validation tasks (for beta_KL)
                    ro = readouts(learner, meta, val)
                    post[alpha] = {k: round(_mean([d[k] for d in ro["sigma"]]), 4) for k in ro["sigma"][0]}
                    post[alpha]["z_norm"] = round(_mean(ro["z_norm"]), 4) if ro["z_norm"][0] is not None else None
                print(f"tuning {method} alpha={alpha}: val {scores[alpha]:.4f}", flush=True)
            except FloatingPointError as e:       # a diverged setting is recorded as such, never chosen
                scores[alpha] = None
                print(f"tuning {method} alpha={alpha}: diverged ({e})", flush=True)
        finite = {k: v for k, v in scores.items() if v is not None}
        if not finite:
            raise FloatingPointError(f"{method} diverged at every inner lr of the grid {grid}")
        best = max(finite, key=finite.get)      # a diverged neighbour (None) bounds the grid like a worse score
        if best == max(grid):
            grid = grid + [round(best * 2, 6)]
        elif best == min(grid):
            grid = [round(best / 2, 6)] + grid
        else:
            break
    edge = best in (min(scores), max(scores))
    out = {"grid": {str(k): v for k, v in sorted(scores.items())}, "chosen": best, "on_edge": edge, "steps": steps}
    if post:
        out["posterior"] = {str(k): v for k, v in sorted(post.items())}
    return out


REUSE_SETTINGS = ("steps", "tune_steps", "n_val", "n_test", "n_regime", "mc", "default_arm")


def _reusable(path, parser, args, counts) -> dict:
    """The record at ``path`` (a results file or a stopped run's partial record) after checking that it was made
    with the same settings as this run (its command line is re-parsed) and on the same test tasks."""
    try:
        old = json.loads(Path(path).read_text())
        old_args = parser.parse_args(shlex.split(old["command"])[3:])
    except (OSError, ValueError, KeyError, SystemExit) as e:
        raise ValueError(f"--reuse {path}: not a readable bayesian_taml record with its command line ({e!r})") from e
    diff = [f"{k}: {getattr(old_args, k)!r} there, {getattr(args, k)!r} here" for k in REUSE_SETTINGS
            if getattr(old_args, k) != getattr(args, k)]
    if old.get("tasks", {}).get("id", {}).get("counts") != counts["id"] or \
            old.get("tasks", {}).get("ood", {}).get("counts") != counts["ood"]:
        diff.append("the ID/OOD test tasks differ")
    if diff:
        raise ValueError(f"--reuse {path}: made with other settings, nothing can be reused ({'; '.join(diff)})")
    return old


def _reused_runs(old: dict, arm: str, seed: int, method: str, inner_lr: float, want_regime: bool) -> list:
    """The finished runs (every prediction kind) of ``method`` at ``arm``/``seed`` and rate ``inner_lr`` in the
    reused record ``old``, or [] when any is missing (then the method is trained again)."""
    runs = [r for r in old.get("runs", []) if (r["arm"], r["seed"], r["method"]) == (arm, seed, method)]
    kinds = {r["prediction"] for r in runs}
    if not runs or kinds not in ({"point"}, {"mc", "mean"}) or any(r["inner_lr"] != inner_lr for r in runs):
        return []
    if want_regime and not any("regime" in r for r in runs):
        return []
    return [dict(r, reused=True) for r in runs]


def arms_present(record: dict) -> dict:
    """{arm: seeds at which every method of the record's runs has a finished run} (what the file really holds)."""
    methods = {r["method"] for r in record["runs"]}
    have = {}
    for r in record["runs"]:
        have.setdefault(r["arm"], {}).setdefault(r["seed"], set()).add(r["method"])
    return {a: sorted(s for s, m in seeds.items() if m == methods) for a, seeds in sorted(have.items())}


def regime_maps(record: dict) -> list:
    """The regime maps of a (possibly partial) record: gain of each regime method over Meta-SGD per seed."""
    methods = record.get("regime_methods", [])
    if "Meta-SGD" not in methods or len(methods) < 2:
        return []
    maps = []
    for factor, label in (("imbalance", "class-imbalance ratio (largest / smallest class)"),
                          ("shift", "OOD shift strength (signal plane rotated by s x 90 deg)")):
        values = record["regime_values"][factor]
        for method in methods[1:]:
            pred = PREDICTIONS["imbalance"] if factor == "imbalance" else \
                PREDICTIONS["shift_omega" if method == "omega-TAML" else "shift_bayes"]
            runs = {m: {r["seed"]: r for r in record["runs"] if r["method"] == m and "regime" in r}
                    for m in (method, "Meta-SGD")}
            seeds = sorted(set(runs[method]) & set(runs["Meta-SGD"]))      # paired: the same seeds
            if not seeds:
                continue
            score = {m: {v: [runs[m][s]["regime"][factor][str(v)]["10"]["accuracy"] for s in seeds] for v in values}
                     for m in (method, "Meta-SGD")}
            maps.append(regime_map(label, list(values), score[method], score["Meta-SGD"], method=method,
                                   baseline="Meta-SGD", metric="accuracy (10 test steps)", higher_is_better=True,
                                   prediction=pred))
    return maps


def test_methods_of(methods, bayes) -> list:
    """The scored methods: every requested one, of the Bayesian TAML betas only the validation-chosen one."""
    return [m for m in methods if m not in BAYES or m == bayes]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=cli_int(0), nargs="+", default=[0, 1, 2, 3, 4], help="seeds of the default arm")
    p.add_argument("--ablation-seeds", type=cli_int(0), nargs="*", default=[0, 1, 2],
                   help="seeds of the other arm (batch norm on/off); none: skip it")
    p.add_argument("--default-arm", choices=list(ARMS), default="bn",
                   help="learner with batch norm ('bn', the paper's semantics) or without ('no-bn')")
    p.add_argument("--steps", type=cli_int(1), default=500, help="meta-iterations of every method")
    p.add_argument("--tune-steps", type=cli_int(1), default=300, help="meta-iterations of every tuning run")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS), metavar="METHOD",
                   help=f"any of {list(METHODS)}")
    p.add_argument("--n-val", type=cli_int(1), default=100)
    p.add_argument("--n-test", type=cli_int(1), default=150)
    p.add_argument("--n-regime", type=cli_int(0), default=40, help="test tasks per regime-map value (0: no map)")
    p.add_argument("--mc", type=cli_int(1), default=5, help="Monte-Carlo samples per prediction (>= 1)")
    add_output_arguments(p, "bayesian_taml.json")
    p.add_argument("--reuse", metavar="RECORD",
                   help="a results file or partial record made with the same settings (checked): its tuning scores "
                        "and its finished runs at the same rates are reused instead of retrained")
    p.add_argument("--finish", metavar="PARTIAL",
                   help="no training: write the results (with regime maps) from a partial record that a stopped "
                        "run left in runs/ (its finished runs only)")
    args = p.parse_args(argv)
    if args.finish and not Path(args.finish).is_file():
        p.error(f"argument --finish: no partial record at {args.finish}")
    if args.reuse and not Path(args.reuse).is_file():
        p.error(f"argument --reuse: no record at {args.reuse}")
    out = resolve_output(args.out, "bayesian_taml.json", overwrite=args.overwrite)   # checked before any work
    if args.dry_run:
        return dry_run_report(args, out)
    if args.finish:
        record = json.loads(Path(args.finish).read_text())
        record["finished_from_partial"] = True
        record["arms"] = arms_present(record)
        record["regime"] = regime_maps(record)
        atomic_write_json(out, record, indent=None, separators=(",", ":"))
        print("wrote", out, "from", args.finish)
        return 0
    torch.set_num_threads(1)
    train, val, test_id, test_ood = vector_tasks(args.n_val, args.n_test)
    counts = {"id": _counts(test_id), "ood": _counts(test_ood)}
    regime_sets = {}
    if args.n_regime:
        regime_sets = {"imbalance": {r: imbalance_tasks(r, args.n_regime, 3000 + i) for i, r in
                                     enumerate(IMBALANCE_RATIOS)},
                       "shift": {s: shift_tasks(s, args.n_regime, 4000 + i) for i, s in enumerate(SHIFTS)}}
    old = _reusable(args.reuse, p, args, counts) if args.reuse else {}
    cli = argv if argv is not None else sys.argv[1:]  # shlex-quoted: method names contain spaces
    other = [a for a in ARMS if a != args.default_arm][0]
    arms = [(args.default_arm, args.seeds)] + ([(other, args.ablation_seeds)] if args.ablation_seeds else [])
    record = {"command": "python -m tutor.experiments.bayesian_taml " + shlex.join(cli),
              "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "python": platform.python_version(), "protocol": PROTOCOL, "predictions": PREDICTIONS,
              "default_arm": args.default_arm, "arms_planned": {a: s for a, s in arms}, "steps": args.steps,
              "tune_steps": args.tune_steps, "n_val": args.n_val,
              "eval_steps": [5, 10], "mc_samples": args.mc, "n_test": args.n_test, "n_regime": args.n_regime,
              "tasks": {"id": {"counts": counts["id"]}, "ood": {"counts": counts["ood"]}},
              "regime_values": {"imbalance": list(IMBALANCE_RATIOS), "shift": list(SHIFTS)},
              "imbalance_shots": {str(r): imbalance_shots(r) for r in IMBALANCE_RATIOS},
              "tuning": {}, "runs": []}
    # 1) tuning on ID validation tasks only (default arm, seed 0)
    chosen = {}
    tuned = [m for m in args.methods if m in GRIDS]
    if "Deterministic TAML" in args.methods:
        tuned += [b for b in BAYES if b not in tuned]
    for method in tuned:
        record["tuning"][method] = _tune(method, ARMS[args.default_arm], train, val, args.tune_steps, GRIDS[method],
                                         cached=old.get("tuning", {}).get(method))
        chosen[method] = record["tuning"][method]["chosen"]
    bayes_val = {b: max(v for v in record["tuning"][b]["grid"].values() if v is not None)
                 for b in BAYES if b in record["tuning"]}
    bayes = max(bayes_val, key=bayes_val.get) if bayes_val else None
    record["bayesian_choice"] = {"method": bayes, "validation": bayes_val}
    if bayes:
        chosen["Deterministic TAML"] = chosen[bayes]
    # the other arm's rates: tuned the same way on its own learner (the default arm's beta_KL choice)
    rates = {args.default_arm: chosen}
    if args.ablation_seeds:
        record["arm_tuning"] = {other: {}}
        rates[other] = {}
        for method in [m for m in tuned if m not in BAYES or m == bayes]:
            record["arm_tuning"][other][method] = t = _tune(
                method, ARMS[other], train, val, args.tune_steps, GRIDS[method],
                cached=old.get("arm_tuning", {}).get(other, {}).get(method))
            rates[other][method] = t["chosen"]
        if bayes:
            rates[other]["Deterministic TAML"] = rates[other][bayes]
        for m in test_methods_of(args.methods, bayes):
            rates[other].setdefault(m, chosen[m])
    # 2) every method, every seed and arm, on the same ID and OOD test tasks (+ regime tasks, default arm)
    regime_methods = [m for m in (*REGIME_METHODS, bayes) if m in args.methods]
    test_methods = test_methods_of(args.methods, bayes)   # the validation-chosen beta only
    partial = RUNS_DIR / (out.stem + ".partial.json")
    partial.parent.mkdir(parents=True, exist_ok=True)
    record["regime_methods"] = regime_methods
    # three default-arm seeds, then the other arm, then the remaining seeds (a stopped run keeps both arms)
    schedule = [(args.default_arm, s) for s in args.seeds[:3]] + \
        [(other, s) for s in (args.ablation_seeds or [])] + [(args.default_arm, s) for s in args.seeds[3:]]
    for arm, seed in schedule:
        for method in test_methods:
            lr_m = rates[arm][method]
            reused = _reused_runs(old, arm, seed, method, lr_m, arm == args.default_arm and
                                  method in regime_methods and bool(regime_sets)) if old else []
            if reused:
                record["runs"] += reused
                atomic_write_json(partial, record, indent=None, separators=(",", ":"))
                print(f"{arm:5s} seed {seed} {method:28s} reused from {args.reuse}", flush=True)
                continue
            learner, meta, history, wall, cpu = train_method(method, train, args.steps, seed,
                                                             inner_lr=lr_m, progress=False, bn=ARMS[arm])
            preds = [("mc", {"samples": args.mc}), ("mean", {"mean": True})] if learner.config.bayesian \
                else [("point", {})]
            for kind, kw in preds:
                c0 = time.process_time()
                scores = {s: evaluate_steps(learner, meta, tasks, (5, 10), workers=2, **kw)
                          for s, tasks in (("id", test_id), ("ood", test_ood))}
                run = {"seed": seed, "arm": arm, "method": method, "prediction": kind,
                       "inner_lr": lr_m, "beta_kl": learner.config.beta_kl,
                       "train_seconds": round(wall, 1), "train_cpu_seconds": round(cpu, 1),
                       "iterations": len(history.step),
                       **{s: {str(k): _per_task(v, counts[s]) for k, v in sc.items()} for s, sc in scores.items()}}
                if kind != "mean" and arm == args.default_arm and method in regime_methods and regime_sets:
                    run["regime"] = {}
                    for factor, sets in regime_sets.items():
                        run["regime"][factor] = {}
                        for value, tasks in sets.items():
                            sc = evaluate_steps(learner, meta, tasks, (5, 10), workers=2, **kw)
                            cts = _counts(tasks)
                            run["regime"][factor][str(value)] = {
                                str(k): {"accuracy": round(_mean(v["accuracy"]), 5),
                                         "tail_recall": round(_mean(_per_task(v, cts)["tail_recall"]), 5)
                                         if any(min(c) < max(c) for c in cts) else None}
                                for k, v in sc.items()}
                run["eval_cpu_seconds"] = round(time.process_time() - c0, 1)
                if kind != "mean" and learner.config.latents:
                    run["readouts_id"] = readouts(learner, meta, test_id)
                    run["readouts_ood"] = readouts(learner, meta, test_ood)
                record["runs"].append(run)
                atomic_write_json(partial, record, indent=None, separators=(",", ":"))   # survives a kill
                i, o, i5 = run["id"]["10"], run["ood"]["10"], run["id"]["5"]
                print(f"{arm:5s} seed {seed} {method:28s} {kind:5s} ({cpu:.0f}+{run['eval_cpu_seconds']:.0f} "
                      f"CPU s): ID acc {_mean(i['accuracy']) * 100:.1f} tail(imb) "
                      f"{_mean(i['tail_recall']) * 100:.1f} | OOD acc {_mean(o['accuracy']) * 100:.1f} "
                      f"(5 steps: ID {_mean(i5['accuracy']) * 100:.1f})", flush=True)
    # 3) regime maps: paired gain over Meta-SGD per seed (default arm, 10 test steps, MC prediction)
    regime = regime_maps(record)
    if regime:
        record["regime"] = regime
    record["arms"] = arms_present(record)
    if old:
        record["reused"] = {"from": str(args.reuse), "command": old["command"], "date": old.get("date"),
                            "runs": sum(bool(r.get("reused")) for r in record["runs"])}
    atomic_write_json(out, record, indent=None, separators=(",", ":"))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
