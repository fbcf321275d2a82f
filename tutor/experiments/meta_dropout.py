"""MAML vs Meta-Dropout on glyph 10-way tasks: the live notebook run, the multi-seed table, its controls
and the regime map over shots.

The 1-shot table (shipped 2026-11-26, ~30 min on 2 cores)::

    python -m tutor.experiments.meta_dropout --seeds 0 1 2 --steps 1000 --out data/results/meta_dropout.json

The controls, the shots map, the inner-lr check and the budget check, *added* to that file (its runs are
reused, not rerun; ~30 min on one core)::

    python -m tutor.experiments.meta_dropout --extend data/results/meta_dropout.json \\
        --add controls shots lr budget --out data/results/meta_dropout.json --overwrite

Without ``--extend`` the parts named by ``--add`` run after the table, in one command.  The file is
written after each part, and runs already in the ``--extend`` file are not repeated (a rerun resumes).

Protocol (same for every method): the fast MLP learner (196-128-128-10 with batch norm after the
noisy product) on 14x14 glyphs; 10-way 1-shot, 10 queries per class; 5 second-order inner steps;
Adam 1e-3, meta-batch 4, the same number of meta-training steps; all methods scored on the *same*
fixed test episodes from held-out classes.  Tuning: the inner learning rate of MAML and of
Meta-Dropout is chosen from the same grid on validation episodes (seed 0), then every variant is
trained with that rate for each seed.

The added parts (``--add``), same protocol unless stated:

* ``controls`` (10-way 1-shot, every seed, the shipped test episodes): **MAML (wide)**, MAML on an MLP
  with 205 hidden units per layer (85,495 weights: as many as gate-only's learner plus generator,
  85,387), at MAML's rate -- is the gate's gain extra capacity?  **gate + input-independent noise**:
  Meta-Dropout's input-dependent gate softplus(mu(x)) times a learned input-*independent* noise
  softplus(nu + eps), at Meta-Dropout's rate -- does the *noise* need to depend on the input, or is it the
  gate that lifts Meta-Dropout above the input-independent variant?
* ``shots`` (10-way 5-shot, every seed, 300 fixed 5-shot test episodes): MAML, Meta-Dropout, gate
  only, at the rates chosen at 1 shot; the trained Meta-Dropout model is also scored with the noise
  switched off at test time (kappa = 0).  The tuning seed's MAML and Meta-Dropout are also scored on
  5-shot validation episodes (the centre of the inner-lr check).
* ``lr`` (5-shot, tuning seed, validation episodes): MAML and Meta-Dropout at the other inner rates of
  ``--lr-check`` (default 0.5): is the 1-shot rate still right at 5 shots?
* ``budget`` (1-shot, tuning seed): MAML and Meta-Dropout trained for ``--budget-steps`` (3000) steps
  in chunks of ``--steps``, scored on the shipped test episodes after every chunk (the first chunk
  repeats the shipped run).

Predictions, written before the added runs (2026-12-02; stored in the results' ``regime`` maps):

* PREDICTION_SHOTS_MD: the paper's gain is not monotone in shots (Omniglot +1.40 at 1 shot -> +0.35 at
  5, near the ceiling; miniImageNet +2.35 -> +2.87).  Glyph 10-way 5-shot is an easy, near-ceiling
  task like Omniglot 5-shot, so we predict that Meta-Dropout (S = 10) - MAML stays without a reliable
  gain at 5 shots: its Student-t interval over 3 seeds includes zero, with a point estimate within
  +-1.5 points (at 1 shot it is +0.75 +- 1.3).
* PREDICTION_SHOTS_GATE: gate only - MAML stays positive at 5 shots (interval above zero) but is smaller
  than at 1 shot (+5.1): with five examples per class the support set pins the classes down better and
  leaves less for the learned modulation to add.
* PREDICTION_CONTROLS: MAML (wide) does not close the gap: gate only - MAML (wide) > 0 in every seed;
  gate + input-independent noise scores within 2 points of Meta-Dropout (S = 10), i.e. the input-
  dependent gate, not the input dependence of the noise, lifts Meta-Dropout above input-independent
  noise.
* PREDICTION_BUDGET: at 3000 steps (seed 0) Meta-Dropout (S = 10) - MAML stays within +-2 points of its
  1000-step value (+0.55): a longer budget does not turn the shots comparison into a budget effect.
* PREDICTION_LR: at 5 shots neither method gains more than 1 point of validation accuracy from lr 0.5
  over 0.3.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
import time
from pathlib import Path

import torch

from tutor.data import EpisodeSampler, fixed_episodes, load_glyphs
from tutor.experiments.regime import regime_map
from tutor.meta import leaves
from tutor.nets import MLP
from tutor.outputs import add_output_arguments, atomic_write_json, dry_run_report, resolve_output
from tutor.papers.meta_dropout import MetaDropout, MetaDropoutConfig
from tutor.train import EvalResult, compare, evaluate, meta_train
from tutor.validation import cli_float, cli_int

__all__ = ["glyph_tasks", "make_learner", "train_variant", "VARIANTS", "BASE_VARIANTS", "PARTS", "PREDICTIONS",
           "WIDE_HIDDEN", "shots_regime", "main"]

WIDE_HIDDEN = 205
"""Hidden units per layer of "MAML (wide)": 85,495 weights, as many as gate-only's 43,530 + 41,857."""

# name -> MetaDropoutConfig overrides (``hidden``: the MLP's hidden width, default 128)
VARIANTS = {
    "MAML": dict(noise="off"),
    "fixed noise": dict(noise="fixed"),
    "input-independent": dict(noise="input_independent"),
    "Meta-Dropout": dict(noise="input_dependent"),
    "gate only": dict(noise="input_dependent", noise_scale=0.0),
    "gate + input-independent noise": dict(noise="gated_independent"),
    "MAML (wide)": dict(noise="off", hidden=WIDE_HIDDEN),
}
BASE_VARIANTS = ["MAML", "fixed noise", "input-independent", "Meta-Dropout", "gate only"]
CONTROL_VARIANTS = ["MAML (wide)", "gate + input-independent noise"]
SHOT_VARIANTS = ["MAML", "Meta-Dropout", "gate only"]
KAPPA0 = "Meta-Dropout, noise off at test"
PARTS = ("controls", "shots", "lr", "budget")


def _predictions() -> dict:
    """The pre-registered sentences of the module docstring, by name (PREDICTION_SHOTS_MD, ...)."""
    out = {}
    for m in re.finditer(r"\* (PREDICTION_\w+): (.*?)(?=\n\* |\n\n|\Z)", __doc__, re.S):
        out[m.group(1)] = " ".join(m.group(2).split())
    return out


PREDICTIONS = _predictions()


def glyph_tasks(ways: int = 10, shots: int = 1, queries: int = 10, size: int = 14, n_val: int = 200,
                n_test: int = 300, split_seed: int = 0):
    """(train sampler, validation episodes, test episodes) on disjoint glyph classes."""
    bank = load_glyphs(size=size)
    split = bank.split((0.6, 0.1, 0.3), seed=split_seed)
    train = EpisodeSampler(bank.images, split["train"], ways, shots, queries)
    val = fixed_episodes(EpisodeSampler(bank.images, split["val"], ways, shots, queries), n_val, seed=777)
    test = fixed_episodes(EpisodeSampler(bank.images, split["test"], ways, shots, queries), n_test, seed=2024)
    return train, val, test


def make_learner(variant: str, ways: int = 10, size: int = 14, conv: bool = False, **overrides) -> MetaDropout:
    """A MetaDropout learner for ``variant`` (a key of ``VARIANTS``) on the MLP (or Conv4) learner."""
    from tutor.nets import Conv4

    spec = {**VARIANTS[variant], **overrides}
    hidden = spec.pop("hidden", 128)
    cfg = MetaDropoutConfig(**spec)
    net = Conv4(image_size=size, hidden=32, ways=ways) if conv else MLP(size * size, (hidden, hidden), ways, bn=True)
    return MetaDropout(net, cfg)


def train_variant(variant: str, train_sampler, steps: int, seed: int, lr: float = 1e-3, meta_batch: int = 4,
                  progress: bool | None = None, **overrides):
    """Meta-train one variant from seed ``seed``; returns (learner, meta, history, seconds)."""
    learner = make_learner(variant, ways=train_sampler.ways,
                           size=train_sampler.images.shape[-1], **overrides)
    torch.manual_seed(seed)
    meta = learner.init(gen=seed)
    t0 = time.perf_counter()
    history = meta_train(learner, meta, train_sampler, steps=steps, meta_batch=meta_batch, lr=lr,
                         mode="threads", workers=2, seed=seed, progress=progress, desc=variant)
    return learner, meta, history, time.perf_counter() - t0


def _is_noisy(variant: str) -> bool:
    spec = VARIANTS[variant]
    return spec["noise"] != "off" and spec.get("noise_scale", 1.0) != 0


def _score(learner, meta, variant, episodes, common: dict, kappa0: bool = False) -> list[dict]:
    """Run records of one trained model on ``episodes``: S = 1 (and S = 10 when noisy), optionally kappa = 0."""
    out = []
    for S in ([1, 10] if _is_noisy(variant) else [1]):
        learner.config.mc_test = S
        r = evaluate(learner, meta, episodes, workers=2)
        out.append({**common, "variant": variant, "S": S, "mean": r.mean, "ci95": r.ci95,
                    "scores": [round(s, 4) for s in r.scores]})
        print(f"{common} {variant:30s} S={S:2d}: {r}", flush=True)
    if kappa0:                                   # the same trained model, adapted and scored without noise
        learner.config.noise_scale, learner.config.mc_test = 0.0, 1
        r = evaluate(learner, meta, episodes, workers=2)
        learner.config.noise_scale = VARIANTS[variant].get("noise_scale", 1.0)
        out.append({**common, "variant": KAPPA0, "S": 1, "mean": r.mean, "ci95": r.ci95,
                    "scores": [round(s, 4) for s in r.scores]})
        print(f"{common} {KAPPA0:30s} S= 1: {r}", flush=True)
    return out


def _rate(record: dict, variant: str) -> float:
    """The inner rate chosen at 1 shot: MAML's for the noise-free MAMLs, Meta-Dropout's for the rest."""
    return record["tuning"]["MAML" if VARIANTS[variant]["noise"] == "off" else "Meta-Dropout"]["chosen"]


def _mean(scores) -> float:
    return float(sum(scores) / len(scores))


def shots_regime(record: dict) -> list[dict]:
    """The regime maps over shots: Meta-Dropout (S = 10) - MAML and gate only - MAML, per seed."""
    runs = [r for r in record["runs"] if r.get("steps", record["steps"]) == record["steps"]]
    shots = sorted({r.get("shots", 1) for r in runs})
    seeds = sorted({r["seed"] for r in runs if r.get("shots", 1) == shots[-1]})

    def per_seed(variant, S):
        return {k: [_mean(next(r for r in runs if r["variant"] == variant and r["S"] == S and r["seed"] == s
                                and r.get("shots", 1) == k)["scores"]) for s in seeds] for k in shots}

    base = per_seed("MAML", 1)
    maps = []
    for variant, S, key in (("Meta-Dropout", 10, "PREDICTION_SHOTS_MD"), ("gate only", 1, "PREDICTION_SHOTS_GATE")):
        maps.append(regime_map("shots", shots, per_seed(variant, S), base, method=f"{variant} (S={S})" if S > 1
                               else variant, baseline="MAML", metric="test accuracy (10-way)", higher_is_better=True,
                               prediction=PREDICTIONS[key]))
    return maps


def _protocol() -> str:
    return "Protocol" + __doc__.split("Protocol", 1)[1].split("\n\n")[0]


def _write(out, record):
    if any(r.get("shots", 1) > 1 for r in record["runs"]):
        record["regime"] = shots_regime(record)
    atomic_write_json(out, record, indent=1)
    print("wrote", out, flush=True)


def _base(args, record, train, val, test):
    """The 1-shot table: tune the inner rate of MAML and Meta-Dropout, then every variant for every seed."""
    chosen = {}
    for variant in ("MAML", "Meta-Dropout"):
        scores = {}
        for inner_lr in args.lr_grid:
            learner, meta, _, _ = train_variant(variant, train, args.steps, seed=0, inner_lr=inner_lr)
            scores[inner_lr] = evaluate(learner, meta, val, workers=2).mean
            print(f"tuning {variant} inner_lr={inner_lr}: val {scores[inner_lr]:.4f}", flush=True)
        chosen[variant] = max(scores, key=scores.get)
        record["tuning"][variant] = {"grid": scores, "chosen": chosen[variant]}
    # the ablations use Meta-Dropout's rate (they are Meta-Dropout with parts switched off)
    for seed in args.seeds:
        for variant in args.variants:
            inner_lr = _rate(record, variant)
            learner, meta, history, secs = train_variant(variant, train, args.steps, seed, inner_lr=inner_lr)
            common = {"seed": seed, "inner_lr": inner_lr, "shots": 1, "steps": args.steps,
                      "train_seconds": round(secs, 1)}
            record["runs"] += _score(learner, meta, variant, test, common)
    for seed in args.seeds:
        base = next((r for r in record["runs"] if r["seed"] == seed and r["variant"] == "MAML"), None)
        md = next((r for r in record["runs"] if r["seed"] == seed and r["variant"] == "Meta-Dropout" and r["S"] == 10),
                  None)
        if base and md:
            c = compare(EvalResult(base["scores"], base["mean"], base["ci95"]),
                        EvalResult(md["scores"], md["mean"], md["ci95"]))
            print(f"seed {seed}: Meta-Dropout (S=10) - MAML = {c}")


def _has(record, **match) -> bool:
    """Whether ``record`` already holds a run with these fields (a rerun resumes instead of repeating)."""
    return any(all(r.get(k) == v for k, v in match.items()) for r in record["runs"])


def _controls(args, record, train, test):
    for seed in args.seeds:
        for variant in CONTROL_VARIANTS:
            if _has(record, variant=variant, seed=seed, shots=1, steps=args.steps):
                continue
            inner_lr = _rate(record, variant)
            learner, meta, _, secs = train_variant(variant, train, args.steps, seed, inner_lr=inner_lr)
            common = {"seed": seed, "inner_lr": inner_lr, "shots": 1, "steps": args.steps,
                      "train_seconds": round(secs, 1), "part": "controls"}
            record["runs"] += _score(learner, meta, variant, test, common)


def _val_check(record, shots, variant, inner_lr, score):
    grid = record.setdefault("lr_check", {}).setdefault(str(shots), {}).setdefault(variant, {})
    grid[str(inner_lr)] = score
    print(f"lr check {shots}-shot {variant} inner_lr={inner_lr}: val {score:.4f}", flush=True)


def _shots(args, record, tuning_seed):
    for shots in args.shots:
        train, val, test = glyph_tasks(shots=shots, n_val=args.val_episodes, n_test=args.test_episodes)
        for seed in args.seeds:
            for variant in SHOT_VARIANTS:
                if _has(record, variant=variant, seed=seed, shots=shots, steps=args.steps):
                    continue
                inner_lr = _rate(record, variant)
                learner, meta, _, secs = train_variant(variant, train, args.steps, seed, inner_lr=inner_lr)
                record["runs"] += _score(learner, meta, variant, test,
                                         {"seed": seed, "inner_lr": inner_lr, "shots": shots, "steps": args.steps,
                                          "train_seconds": round(secs, 1), "part": "shots"},
                                         kappa0=variant == "Meta-Dropout")
                if seed == tuning_seed and variant in ("MAML", "Meta-Dropout"):
                    learner.config.mc_test = 10           # as in the 1-shot tuning
                    _val_check(record, shots, variant, inner_lr, evaluate(learner, meta, val, workers=2).mean)


def _lr(args, record, tuning_seed):
    for shots in args.shots:
        train, val, _ = glyph_tasks(shots=shots, n_val=args.val_episodes, n_test=2)
        for variant in ("MAML", "Meta-Dropout"):
            done = record.get("lr_check", {}).get(str(shots), {}).get(variant, {})
            for inner_lr in sorted(set(args.lr_check) | {_rate(record, variant)}):
                if str(inner_lr) in done:
                    continue
                learner, meta, _, _ = train_variant(variant, train, args.steps, tuning_seed, inner_lr=inner_lr)
                learner.config.mc_test = 10
                _val_check(record, shots, variant, inner_lr, evaluate(learner, meta, val, workers=2).mean)


def _budget(args, record, train, test, tuning_seed):
    """MAML and Meta-Dropout for ``budget_steps``, in chunks of ``steps`` with one Adam state, scored per chunk."""
    for variant in ("MAML", "Meta-Dropout"):
        if _has(record, variant=variant, part="budget", steps=args.budget_steps):
            continue
        inner_lr = _rate(record, variant)
        learner = make_learner(variant, ways=train.ways, size=train.images.shape[-1], inner_lr=inner_lr)
        torch.manual_seed(tuning_seed)
        meta = learner.init(gen=tuning_seed)
        optimizer = torch.optim.Adam(leaves(meta), lr=1e-3)
        t0 = time.perf_counter()
        for chunk in range(args.budget_steps // args.steps):
            # chunk 0 is the shipped run exactly; later chunks draw fresh training tasks
            meta_train(learner, meta, train, steps=args.steps, optimizer=optimizer, mode="threads", workers=2,
                       seed=tuning_seed + 100_000 * chunk, desc=f"{variant} chunk {chunk + 1}")
            common = {"seed": tuning_seed, "inner_lr": inner_lr, "shots": 1, "steps": args.steps * (chunk + 1),
                      "train_seconds": round(time.perf_counter() - t0, 1), "part": "budget"}
            record["runs"] += _score(learner, meta, variant, test, common, kappa0=variant == "Meta-Dropout")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=cli_int(0), nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=cli_int(1), default=1000)
    p.add_argument("--lr-grid", type=cli_float(0, strict=True), nargs="+", default=[0.1, 0.3, 0.5])
    p.add_argument("--variants", nargs="+", default=BASE_VARIANTS, choices=list(VARIANTS), metavar="VARIANT",
                   help=f"variants of the 1-shot table, any of {list(VARIANTS)}")
    p.add_argument("--val-episodes", type=cli_int(1), default=200)
    p.add_argument("--test-episodes", type=cli_int(2), default=300)
    p.add_argument("--add", nargs="*", default=[], choices=PARTS, metavar="PART",
                   help=f"parts to run after the table (or on the --extend file), in this order, any of {list(PARTS)}; "
                        "runs already in the file are kept, not repeated")
    p.add_argument("--extend", type=Path, default=None, metavar="RESULTS",
                   help="reuse this results file's tuning and runs (no retraining) and add the --add parts to it")
    p.add_argument("--shots", type=cli_int(2), nargs="+", default=[5], help="shot counts of the shots part (>= 2)")
    p.add_argument("--lr-check", type=cli_float(0, strict=True), nargs="+", default=[0.5],
                   help="inner rates of the lr part, besides the 1-shot choice")
    p.add_argument("--budget-steps", type=cli_int(1), default=3000,
                   help="meta-training steps of the budget part (a multiple of --steps)")
    add_output_arguments(p, "meta_dropout.json")
    args = p.parse_args(argv)
    if args.budget_steps % args.steps:
        p.error(f"argument --budget-steps: must be a multiple of --steps ({args.steps}), got {args.budget_steps}")
    if args.extend is not None and not args.extend.is_file():
        p.error(f"argument --extend: no results file at {args.extend}")
    if args.extend is not None and not args.add:
        p.error("argument --add: name at least one part to add to the --extend file")
    out = resolve_output(args.out, "meta_dropout.json", overwrite=args.overwrite)   # checked before any work
    if args.dry_run:
        return dry_run_report(args, out)
    torch.set_num_threads(1)
    command = "python -m tutor.experiments.meta_dropout " + " ".join(argv if argv is not None else sys.argv[1:])
    train, val, test = glyph_tasks(n_val=args.val_episodes, n_test=args.test_episodes)
    if args.extend is not None:
        record = json.loads(args.extend.read_text())
        if record.get("steps") != args.steps or not record.get("tuning") or not record.get("runs"):
            raise ValueError(f"--extend {args.extend}: need a meta_dropout results file with tuning and runs at "
                             f"--steps {args.steps} (it has steps={record.get('steps')})")
        n_scored = {len(r["scores"]) for r in record["runs"] if r.get("shots", 1) == 1}
        if n_scored != {args.test_episodes}:
            raise ValueError(f"--extend {args.extend}: its runs are scored on {sorted(n_scored)} test episodes; "
                             f"pass --test-episodes to match")
        for r in record["runs"]:               # the shipped table predates these fields
            r.setdefault("shots", 1)
            r.setdefault("steps", record["steps"])
        record.setdefault("added", []).append({"command": command, "date": datetime.date.today().isoformat(),
                                               "parts": args.add, "torch": torch.__version__})
    else:
        record = {"command": command, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                  "python": platform.python_version(), "protocol": _protocol(),
                  "steps": args.steps, "tuning": {}, "runs": []}
        _base(args, record, train, val, test)
        if args.add:
            record["added"] = [{"command": command, "date": record["date"], "parts": args.add}]
        _write(out, record)
    tuning_seed = 0                             # the 1-shot rates were chosen on seed 0
    for part in dict.fromkeys(args.add):       # in the order given, writing after each part
        if part == "controls":
            _controls(args, record, train, test)
        elif part == "shots":
            _shots(args, record, tuning_seed)
        elif part == "lr":
            _lr(args, record, tuning_seed)
        else:
            _budget(args, record, train, test, tuning_seed)
        _write(out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
