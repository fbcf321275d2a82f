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
module also gets gradients through L_Q); ``gate_zero`` (the control: the gate fixed at 0, i.e. ProtoNet
plus the separation term that L_V becomes when nothing is transferred); ``query_matching`` (our
non-collapsing objective: L_V trains the embedding with the gate's gradient stopped, and the gate is
trained only by the Gaussian likelihood of the real queries' deviations under the transferred ones,
``tutor.papers.mvt.query_matching_loss``); ``noise``
(the same losses with isotropic feature noise of matched norm); ``naive`` (raw donor deviations).
Test heads: plain prototypes for every method (primary), and for ``protonet`` and the gated models also
option P at test ("augmented", the caveat) and the shared Mahalanobis head from transferred
variation.  Tuning: every method's Adam learning rate from the same grid, on validation episodes
(validation classes, never scored), seed 0; the seed-0 run at the chosen rate is reused.  Sanity
check: ``protonet`` and ``gated`` retrained with the nuisance switched off.  Gate openness
(``|v~| / |v|``, ``MVT.openness``) is recorded for every scored gated model trained in the run.  The
shipped ``gated`` and ``gated_p`` scores come from an earlier run, before openness was logged:
``--add-openness`` retrains those reused models (same seed, rate, steps: training is seeded), checks
that the retrained model reproduces its stored per-episode test scores (``openness_reproduced``: the
largest absolute difference per seed) and records its openness.

``--methods`` trains a subset and ``--reuse FILE`` copies the other methods' tuning and scores from
an earlier results file with the same settings (training and test episodes are seeded, so a rerun
reproduces them; the record names the file).  The regime map comes from the feature-space world of
``tutor.experiments.mvt_world`` (its docstring holds the pre-registered predictions).

Asymmetry we keep (stated in the notebook and in ``tutor.papers.mvt``): the transfer arms embed 4 x 5
donor images per episode that ProtoNet never sees; they are base-class images that ProtoNet's own
training episodes draw from too, but not in the same episode.  No ProtoNet arm that may use them was
run, so a transfer arm's gain over ProtoNet could come from those extra images; ``gate_zero`` embeds
them too but, with the gate at 0, nothing of them reaches a virtual sample.

PRE-REGISTERED PREDICTION for the two new glyph arms (written before their run): the gate of
``query_matching`` stays open (openness > 0.5); if its gain over ProtoNet is not distinguishable from
``gate_zero``'s, the glyph gain is not attributable to transfer.  Glyph nuisances (rotation, shear,
dilation) are not additive in pixel space nor, for a 300-step Conv4, in feature space, so we expect
no clear gain from transfer on glyphs at this budget (interval containing 0).
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
from tutor.train import EvalResult, compare, evaluate, load_checkpoint, mean_ci, meta_train, save_checkpoint
from tutor.validation import cli_float, cli_int

__all__ = ["Setup", "make_setup", "make_learner", "train_method", "score_heads", "METHODS", "LR_GRID", "main"]

METHODS = ("protonet", "gated", "gated_p", "noise", "naive", "gate_zero", "query_matching")
CHECKPOINTED = ("protonet", "gated", "query_matching")
LR_GRID = (3e-3, 1e-2, 3e-2)
WORLD_LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
GATED = ("gated", "gated_p", "gate_zero", "query_matching")


@dataclass
class Setup:
    """Samplers and fixed evaluation episodes of one configuration."""

    train: object
    val_episodes: list
    test_episodes: list
    strength: float


def make_setup(strength: float = 1.0, val_episodes: int = 100, test_episodes: int = 300,
               split_seed: int = 0, bank=None) -> Setup:
    """Base / validation / novel glyph classes, nuisance ``strength``, fixed val and test episodes
    (``bank``: an already loaded glyph bank, so a notebook holds one copy; its images may be uint8,
    converted per episode by :class:`~tutor.papers.mvt.NuisanceEpisodes`)."""
    bank = bank if bank is not None else load_glyphs()
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
    if method == "gate_zero":                   # the control: ProtoNet + the L_V separation term
        return MVT(net, MVTConfig(transfer="gate_zero"))
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


def _reused(path, args) -> dict:
    """The earlier results file of ``--reuse``, checked to have the same settings and seeds."""
    import json

    with open(path) as f:
        old = json.load(f)
    cfg = old.get("config", {})
    for key in ("steps", "hidden", "val_episodes", "test_episodes"):
        if cfg.get(key) != getattr(args, key):
            raise ValueError(f"--reuse {path}: its {key} is {cfg.get(key)!r}, this run's is {getattr(args, key)!r}; "
                             "reuse needs identical settings")
    if sorted(old["tuning"]["grid"]) != sorted(args.lr_grid):
        raise ValueError(f"--reuse {path}: its learning-rate grid {old['tuning']['grid']} differs from --lr-grid")
    missing = [s for s in args.seeds if str(s) not in old["scores"]["nuisance"]]
    if missing:
        raise ValueError(f"--reuse {path} has no scores for seeds {missing}")
    return old


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=cli_int(0), nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=cli_int(1), default=300, help="outer steps (meta-batch 2: twice as many episodes)")
    p.add_argument("--lr-grid", type=cli_float(0, strict=True), nargs="+", default=list(LR_GRID))
    p.add_argument("--val-episodes", type=cli_int(1), default=100)
    p.add_argument("--test-episodes", type=cli_int(2), default=300)
    p.add_argument("--hidden", type=cli_int(1), default=32)
    p.add_argument("--methods", nargs="*", choices=METHODS, default=list(METHODS),
                   help="glyph methods to train (the others come from --reuse; none: only the regime map is rerun)")
    p.add_argument("--reuse", default=None, help="earlier results file (same settings) for the methods not trained")
    p.add_argument("--add-openness", action="store_true",
                   help="with --reuse: retrain the reused gated models that have no recorded openness, check that "
                        "they reproduce their stored test scores, and record their openness")
    p.add_argument("--world-seeds", type=cli_int(0), nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--world-steps", type=cli_int(1), default=100)
    p.add_argument("--world-lr-grid", type=cli_float(0, strict=True), nargs="+", default=list(WORLD_LR_GRID))
    p.add_argument("--world-val-episodes", type=cli_int(1), default=200)
    p.add_argument("--world-test-episodes", type=cli_int(1), default=500)
    add_output_arguments(p, "mvt.json")
    p.add_argument("--checkpoint", default=None, help="save the seed-0 protonet, gated and query_matching "
                   "models here (an existing file is refused unless --overwrite; with --reuse, models not trained "
                   "are kept from it)")
    args = p.parse_args(argv)
    out = resolve_output(args.out, "mvt.json", overwrite=args.overwrite)             # checked before any work
    if args.checkpoint is not None:
        resolve_output(args.checkpoint, "mvt.pt", overwrite=args.overwrite, setting="--checkpoint")
    methods = [m for m in METHODS if m in args.methods]
    if args.reuse is None and len(methods) < len(METHODS):
        p.error(f"--methods without --reuse: the methods {sorted(set(METHODS) - set(methods))} would have no scores")
    if "protonet" not in methods and args.reuse is None:
        p.error("protonet is the baseline: train it or --reuse its scores")
    if args.add_openness and args.reuse is None:
        p.error("--add-openness retrains reused models: it needs --reuse")
    old = _reused(args.reuse, args) if args.reuse is not None else None
    if args.dry_run:
        return dry_run_report(args, *([out] if args.checkpoint is None else [out, args.checkpoint]))
    torch.set_num_threads(1)
    start = time.perf_counter()
    from tutor.experiments.mvt_world import run_world

    world = run_world(args.world_seeds, args.world_steps, args.world_lr_grid, val_episodes=args.world_val_episodes,
                      test_episodes=args.world_test_episodes)
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
        if method not in methods:
            validation[method], chosen[method] = old["tuning"]["validation"][method], old["tuning"]["chosen"][method]
            continue
        validation[method] = {}
        for lr in args.lr_grid:
            learner, meta, _ = get(method, lr, args.seeds[0], on)
            validation[method][str(lr)] = evaluate(learner, meta, on.val_episodes).mean
        chosen[method] = float(max(validation[method], key=validation[method].get))
        print(f"{method}: validation {validation[method]} -> lr {chosen[method]}", flush=True)
    grid = sorted(args.lr_grid)
    on_edge = {m: len(grid) > 1 and chosen[m] in (grid[0], grid[-1]) for m in METHODS}

    all_heads = ("prototype", "augmented", "mahalanobis")
    heads_of = {"protonet": all_heads, "gated": all_heads, "gated_p": all_heads, "gate_zero": all_heads,
                "query_matching": all_heads, "noise": ("prototype",), "naive": ("prototype",)}
    scores = {}           # scores[setting][seed][method/head] = per-episode accuracies
    histories = {}
    openness = {m: dict(v) for m, v in (old or {}).get("openness", {}).items() if m not in methods}
    reproduced = {m: dict(v) for m, v in (old or {}).get("openness_reproduced", {}).items() if m not in methods}
    for seed in args.seeds:
        row = scores.setdefault("nuisance", {}).setdefault(str(seed), {})
        for method in METHODS:
            if method not in methods:
                row.update({k: v for k, v in old["scores"]["nuisance"][str(seed)].items() if k.split("/")[0] == method})
                histories.setdefault(method, {})[seed] = old["train_loss"][method][str(seed)]
                if args.add_openness and method in GATED and str(seed) not in openness.get(method, {}):
                    learner, meta, _ = get(method, chosen[method], seed, on)
                    new = score_heads(learner, meta, on.test_episodes)["prototype"].scores
                    stored = old["scores"]["nuisance"][str(seed)][f"{method}/prototype"]
                    reproduced.setdefault(method, {})[str(seed)] = max(abs(a - b) for a, b in zip(new, stored))
                    openness.setdefault(method, {})[str(seed)] = learner.openness(meta, on.test_episodes[:20])
                    print(f"{method} seed {seed}: openness {openness[method][str(seed)]:.2e}, largest score "
                          f"difference to the stored run {reproduced[method][str(seed)]:.1e}", flush=True)
                continue
            learner, meta, hist = get(method, chosen[method], seed, on)
            histories.setdefault(method, {})[seed] = hist.loss[::10]
            for head, r in score_heads(learner, meta, on.test_episodes, heads_of[method]).items():
                row[f"{method}/{head}"] = r.scores
            if isinstance(learner, MVT) and method in GATED:
                openness.setdefault(method, {})[str(seed)] = learner.openness(meta, on.test_episodes[:20])
            if args.checkpoint and seed == args.seeds[0] and method in CHECKPOINTED:
                trained[("ckpt", method)] = meta
        for method in ("protonet", "gated"):
            if method not in methods:
                if "no_nuisance" in old["scores"]:
                    scores.setdefault("no_nuisance", {}).setdefault(str(seed), {})[f"{method}/prototype"] = \
                        old["scores"]["no_nuisance"][str(seed)][f"{method}/prototype"]
                continue
            off = off or make_setup(0.0, args.val_episodes, args.test_episodes)
            learner, meta, _ = get(method, chosen[method], seed, off)
            r = score_heads(learner, meta, off.test_episodes)["prototype"]
            scores.setdefault("no_nuisance", {}).setdefault(str(seed), {})[f"{method}/prototype"] = r.scores
        print(f"seed {seed} done at {time.perf_counter() - start:.0f}s", flush=True)

    summary = summarise(scores)
    for setting, table in summary.items():
        for name, row in table.items():
            print(setting, name, row)
    command = "python -m tutor.experiments.mvt " + " ".join(argv or sys.argv[1:])
    if args.checkpoint and any(("ckpt", m) in trained for m in CHECKPOINTED):
        from pathlib import Path

        models = {m: trained[("ckpt", m)] for m in CHECKPOINTED if ("ckpt", m) in trained}
        if old is not None and Path(args.checkpoint).is_file():
            kept, _ = load_checkpoint(args.checkpoint)
            models = {**{m: v for m, v in kept.items() if m not in models}, **models}
        save_checkpoint(args.checkpoint, models, overwrite=args.overwrite, info=
                        {"command": command, "date": datetime.date.today().isoformat(), "torch": str(torch.__version__),
                         "hidden": args.hidden, "seed": args.seeds[0], "lr": {m: chosen[m] for m in models}})
    record = {"command": command,
              "date": datetime.date.today().isoformat(), "torch": str(torch.__version__),
              "seconds": round(time.perf_counter() - start, 1),
              "config": {"steps": args.steps, "meta_batch": 2, "hidden": args.hidden, "ways": 5, "shots": 1,
                         "donors": 4, "donor_shots": 5, "virtual": 5, "lambda_v": 0.5, "lambda_m": 1.0, "option": "Q",
                         "test_virtual": 20, "shrinkage": 0.5, "val_episodes": args.val_episodes,
                         "test_episodes": args.test_episodes},
              "trained_here": methods,
              "reused_from": None if old is None else {"file": args.reuse, "command": old["command"],
                                                      "date": old["date"], "methods": [m for m in METHODS
                                                                                       if m not in methods],
                                                      "earlier": old.get("reused_from")},
              "tuning": {"grid": grid, "validation": validation, "chosen": chosen, "on_edge": on_edge},
              "openness": openness, "openness_reproduced": reproduced, "scores": scores, "summary": summary,
              "train_loss": {m: {str(s): list(h) for s, h in v.items()} for m, v in histories.items()},
              "regime": world["regime"], "world": world["world"]}
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
