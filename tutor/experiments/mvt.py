"""MVT-style variance transfer on glyphs: ProtoNet vs gated transfer vs controls, 5-way 1-shot.

    python -m tutor.experiments.mvt --seeds 0 1 2 --out data/results/mvt.json \
        --checkpoint data/checkpoints/mvt_glyphs.pt --overwrite

Data: the in-distribution glyph bank split by class (``bank.split``, seed 0): 60% base classes for
meta-training (and the donor pool at every stage), 20% validation classes (tuning), 20% novel test
classes.  Every image of an episode gets a shared nuisance (``tutor.papers.mvt.shared_nuisance``:
rotation, scale, shear, shift, stroke dilation, pixel noise) drawn from the episode's own seed, so all
methods see identical test images.  Episodes: 5-way 1-shot, 10 queries per class in training, 15 at
test; 4 donor classes x 5 images, disjoint from the targets, always base classes.

Methods, each trained from scratch with the core's ``meta_train`` (Conv4 embedding, Adam, the same
number of episodes): ``protonet`` (the core's ProtoNet); ``gated`` (MVT-style gated transfer,
option Q: virtual samples act as pseudo-queries through L_V, prototypes stay means); ``gated_p``
(the same with option P in training: prototypes averaged with the virtual samples, so the transfer
module also gets gradients through L_Q); ``noise``
(the same losses with isotropic feature noise of matched norm); ``naive`` (raw donor deviations).
Test heads: plain prototypes for every method (primary), and for ``protonet`` and the gated models also
option P at test ("augmented", the caveat) and the shared Mahalanobis head from transferred
variation.  Tuning: every method's Adam learning rate from the same grid, on validation episodes
(validation classes, never scored), seed 0; the seed-0 run at the chosen rate is reused.  Sanity
check: ``protonet`` and ``gated`` retrained with the nuisance switched off.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from dataclasses import dataclass

import torch

from tutor.data import load_glyphs
from tutor.data.episodes import fixed_episodes
from tutor.meta import ProtoNet
from tutor.nets import Conv4
from tutor.outputs import add_output_arguments, atomic_write_json, dry_run_report, resolve_output
from tutor.papers.mvt import MVT, MVTConfig, mvt_samplers
from tutor.train import EvalResult, compare, evaluate, mean_ci, meta_train, save_checkpoint
from tutor.validation import cli_float, cli_int

__all__ = ["Setup", "make_setup", "make_learner", "train_method", "score_heads", "METHODS", "LR_GRID", "main"]

METHODS = ("protonet", "gated", "gated_p", "noise", "naive")
LR_GRID = (3e-3, 1e-2, 3e-2)


@dataclass
class Setup:
    """Samplers and fixed evaluation episodes of one configuration."""

    train: object
    val_episodes: list
    test_episodes: list
    strength: float


def make_setup(strength: float = 1.0, val_episodes: int = 100, test_episodes: int = 300,
               split_seed: int = 0) -> Setup:
    """Base / validation / novel glyph classes, nuisance ``strength``, fixed val and test episodes."""
    bank = load_glyphs()
    split = bank.split((0.6, 0.2, 0.2), seed=split_seed)
    train, val = mvt_samplers(bank.images, split["train"], split["val"], strength=strength)
    _, test = mvt_samplers(bank.images, split["train"], split["test"], strength=strength)
    return Setup(train, fixed_episodes(val, val_episodes, seed=777), fixed_episodes(test, test_episodes, seed=12345),
                 strength)


def make_learner(method: str, hidden: int = 32):
    """The learner of ``method`` (one of :data:`METHODS`) on a Conv4 embedding with ``hidden`` channels."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    net = Conv4(hidden=hidden, ways=0)
    if method == "protonet":
        return ProtoNet(net)
    if method == "gated_p":                     # option P in training: phi also gets gradients through L_Q
        return MVT(net, MVTConfig(transfer="gated", option="P"))
    return MVT(net, MVTConfig(transfer=method))


def train_method(method: str, setup: Setup, steps: int, lr: float, seed: int, meta_batch: int = 2,
                 hidden: int = 32, progress: bool | None = None):
    """Meta-train ``method`` from scratch; returns ``(learner, meta, history)``."""
    learner = make_learner(method, hidden)
    meta = learner.init(seed)
    history = meta_train(learner, meta, setup.train, steps, meta_batch=meta_batch, lr=lr, seed=seed,
                         progress=progress, desc=method)
    return learner, meta, history


def _as_mvt(learner, meta):
    """A ProtoNet model seen through the MVT wrapper (naive transfer) for the test-time heads."""
    if isinstance(learner, MVT):
        return learner, meta
    wrapper = MVT(learner.model, MVTConfig(transfer="naive"))
    return wrapper, meta


def score_heads(learner, meta, episodes, heads=("prototype",)) -> dict:
    """``{head: EvalResult}`` on the fixed ``episodes``."""
    mvt_learner, meta = _as_mvt(learner, meta)
    out = {}
    for head in heads:
        mvt_learner.config.head = head
        out[head] = evaluate(mvt_learner, meta, episodes)
    mvt_learner.config.head = "prototype"
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=cli_int(0), nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=cli_int(1), default=300, help="outer steps (meta-batch 2: twice as many episodes)")
    p.add_argument("--lr-grid", type=cli_float(0, strict=True), nargs="+", default=list(LR_GRID))
    p.add_argument("--val-episodes", type=cli_int(1), default=100)
    p.add_argument("--test-episodes", type=cli_int(2), default=300)
    p.add_argument("--hidden", type=cli_int(1), default=32)
    add_output_arguments(p, "mvt.json")
    p.add_argument("--checkpoint", default=None, help="save the seed-0 protonet and gated models here "
                   "(an existing file is refused unless --overwrite)")
    args = p.parse_args(argv)
    out = resolve_output(args.out, "mvt.json", overwrite=args.overwrite)             # checked before any work
    if args.checkpoint is not None:
        resolve_output(args.checkpoint, "mvt.pt", overwrite=args.overwrite, setting="--checkpoint")
    if args.dry_run:
        return dry_run_report(args, *([out] if args.checkpoint is None else [out, args.checkpoint]))
    torch.set_num_threads(1)
    start = time.perf_counter()
    on, off = make_setup(1.0, args.val_episodes, args.test_episodes), None
    trained = {}

    def get(method, lr, seed, setup):
        key = (method, lr, seed, setup.strength)
        if key not in trained:
            trained[key] = train_method(method, setup, args.steps, lr, seed, hidden=args.hidden, progress=False)
        return trained[key]

    # tuning: same grid for every method, validation classes, seed 0
    validation, chosen = {}, {}
    for method in METHODS:
        validation[method] = {}
        for lr in args.lr_grid:
            learner, meta, _ = get(method, lr, args.seeds[0], on)
            validation[method][str(lr)] = evaluate(learner, meta, on.val_episodes).mean
        chosen[method] = float(max(validation[method], key=validation[method].get))
        print(f"{method}: validation {validation[method]} -> lr {chosen[method]}", flush=True)
    grid = sorted(args.lr_grid)
    on_edge = {m: len(grid) > 1 and chosen[m] in (grid[0], grid[-1]) for m in METHODS}

    all_heads = ("prototype", "augmented", "mahalanobis")
    heads_of = {"protonet": all_heads, "gated": all_heads, "gated_p": all_heads, "noise": ("prototype",),
                "naive": ("prototype",)}
    scores = {}           # scores[setting][seed][method/head] = per-episode accuracies
    histories = {}
    for seed in args.seeds:
        for method in METHODS:
            learner, meta, hist = get(method, chosen[method], seed, on)
            histories.setdefault(method, {})[seed] = hist.loss
            for head, r in score_heads(learner, meta, on.test_episodes, heads_of[method]).items():
                scores.setdefault("nuisance", {}).setdefault(str(seed), {})[f"{method}/{head}"] = r.scores
            if args.checkpoint and seed == args.seeds[0] and method in ("protonet", "gated"):
                trained[("ckpt", method)] = meta
        off = off or make_setup(0.0, args.val_episodes, args.test_episodes)
        for method in ("protonet", "gated"):
            learner, meta, _ = get(method, chosen[method], seed, off)
            r = score_heads(learner, meta, off.test_episodes)["prototype"]
            scores.setdefault("no_nuisance", {}).setdefault(str(seed), {})[f"{method}/prototype"] = r.scores
        print(f"seed {seed} done at {time.perf_counter() - start:.0f}s", flush=True)

    summary = summarise(scores)
    for setting, table in summary.items():
        for name, row in table.items():
            print(setting, name, row)
    if args.checkpoint:
        models = {m: trained[("ckpt", m)] for m in ("protonet", "gated")}
        save_checkpoint(args.checkpoint, models, overwrite=args.overwrite, info=
                        {"command": "python -m tutor.experiments.mvt " + " ".join(argv or sys.argv[1:]),
                         "date": datetime.date.today().isoformat(), "torch": str(torch.__version__),
                         "hidden": args.hidden, "seed": args.seeds[0], "lr": {m: chosen[m] for m in models}})
    record = {"command": "python -m tutor.experiments.mvt " + " ".join(argv or sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "torch": str(torch.__version__),
              "seconds": round(time.perf_counter() - start, 1),
              "config": {"steps": args.steps, "meta_batch": 2, "hidden": args.hidden, "ways": 5, "shots": 1,
                         "donors": 4, "donor_shots": 5, "virtual": 5, "lambda_v": 0.5, "option": "Q",
                         "test_virtual": 20, "shrinkage": 0.5, "val_episodes": args.val_episodes,
                         "test_episodes": args.test_episodes},
              "tuning": {"grid": grid, "validation": validation, "chosen": chosen, "on_edge": on_edge},
              "scores": scores, "summary": summary,
              "train_loss": {m: {str(s): h[::10] for s, h in v.items()} for m, v in histories.items()}}
    atomic_write_json(out, record, indent=1)
    print("wrote", out)
    return 0


def summarise(scores: dict) -> dict:
    """Per setting and method/head: mean accuracy per seed, the seed-level mean with its Student-t CI,
    and the paired difference to ``protonet/prototype`` (per seed over episodes, then over seeds)."""
    out = {}
    for setting, by_seed in scores.items():
        seeds = sorted(by_seed)
        table = {}
        for name in by_seed[seeds[0]]:
            per_seed = [sum(by_seed[s][name]) / len(by_seed[s][name]) for s in seeds]
            row = {"per_seed": per_seed}
            if len(seeds) > 1:
                row["mean"], row["ci95"] = mean_ci(per_seed)
            diffs = []
            for s in seeds:
                base = by_seed[s]["protonet/prototype"]
                if len(base) > 1:
                    diffs.append(compare(_as_eval(base), _as_eval(by_seed[s][name])).diff_mean)
            row["diff_per_seed"] = diffs
            if len(diffs) > 1 and name != "protonet/prototype":
                row["diff_mean"], row["diff_ci95"] = mean_ci(diffs)
            table[name] = row
        out[setting] = table
    return out


def _as_eval(scores: list) -> EvalResult:
    return EvalResult(scores, *mean_ci(scores))


if __name__ == "__main__":
    sys.exit(main())
