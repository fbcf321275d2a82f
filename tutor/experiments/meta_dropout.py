"""MAML vs Meta-Dropout on glyph 10-way 1-shot: the live notebook run and the multi-seed script.

    python -m tutor.experiments.meta_dropout --seeds 0 1 2 --steps 1000 \\
        --out data/results/meta_dropout.json --overwrite

Protocol (same for every method): the fast MLP learner (196-128-128-10 with batch norm after the
noisy product) on 14x14 glyphs; 10-way 1-shot, 10 queries per class; 5 second-order inner steps;
Adam 1e-3, meta-batch 4, the same number of meta-training steps; all methods scored on the *same*
fixed test episodes from held-out classes.  Tuning: the inner learning rate of MAML and of
Meta-Dropout is chosen from the same grid on validation episodes (seed 0), then every variant is
trained with that rate for each seed.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

import torch

from tutor.data import EpisodeSampler, fixed_episodes, load_glyphs
from tutor.nets import MLP
from tutor.outputs import add_output_arguments, atomic_write_json, dry_run_report, resolve_output
from tutor.papers.meta_dropout import MetaDropout, MetaDropoutConfig
from tutor.train import compare, evaluate, meta_train
from tutor.validation import cli_float, cli_int

__all__ = ["glyph_tasks", "make_learner", "train_variant", "VARIANTS", "main"]

# name -> MetaDropoutConfig overrides
VARIANTS = {
    "MAML": dict(noise="off"),
    "fixed noise": dict(noise="fixed"),
    "input-independent": dict(noise="input_independent"),
    "Meta-Dropout": dict(noise="input_dependent"),
    "gate only": dict(noise="input_dependent", noise_scale=0.0),
}


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

    cfg = MetaDropoutConfig(**{**VARIANTS[variant], **overrides})
    net = Conv4(image_size=size, hidden=32, ways=ways) if conv else MLP(size * size, (128, 128), ways, bn=True)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=cli_int(0), nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=cli_int(1), default=1000)
    p.add_argument("--lr-grid", type=cli_float(0, strict=True), nargs="+", default=[0.1, 0.3, 0.5])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                   help=f"any of {list(VARIANTS)}")
    p.add_argument("--val-episodes", type=cli_int(1), default=200)
    p.add_argument("--test-episodes", type=cli_int(2), default=300)
    add_output_arguments(p, "meta_dropout.json")
    args = p.parse_args(argv)
    out = resolve_output(args.out, "meta_dropout.json", overwrite=args.overwrite)   # checked before any work
    if args.dry_run:
        return dry_run_report(args, out)
    torch.set_num_threads(1)
    train, val, test = glyph_tasks(n_val=args.val_episodes, n_test=args.test_episodes)
    record = {"command": "python -m tutor.experiments.meta_dropout " + " ".join(argv or sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "python": platform.python_version(), "protocol": __doc__.strip().split("\n\n")[-1],
              "steps": args.steps, "tuning": {}, "runs": []}
    # 1) the same inner-lr grid for MAML and Meta-Dropout, on validation episodes, seed 0
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
    # 2) every variant, every seed, on the same test episodes; S = 1 and S = 10 for noisy variants
    for seed in args.seeds:
        for variant in args.variants:
            inner_lr = chosen["MAML"] if variant == "MAML" else chosen["Meta-Dropout"]
            learner, meta, history, secs = train_variant(variant, train, args.steps, seed, inner_lr=inner_lr)
            for S in ([1] if variant in ("MAML", "gate only") else [1, 10]):
                learner.config.mc_test = S
                r = evaluate(learner, meta, test, workers=2)
                record["runs"].append({"seed": seed, "variant": variant, "S": S, "inner_lr": inner_lr,
                                       "train_seconds": round(secs, 1), "mean": r.mean, "ci95": r.ci95,
                                       "scores": [round(s, 4) for s in r.scores]})
                print(f"seed {seed} {variant:18s} S={S:2d}: {r}", flush=True)
    for seed in args.seeds:
        base = next(r for r in record["runs"] if r["seed"] == seed and r["variant"] == "MAML")
        md = next(r for r in record["runs"] if r["seed"] == seed and r["variant"] == "Meta-Dropout" and r["S"] == 10)
        from tutor.train import EvalResult
        c = compare(EvalResult(base["scores"], base["mean"], base["ci95"]),
                    EvalResult(md["scores"], md["mean"], md["ci95"]))
        print(f"seed {seed}: Meta-Dropout (S=10) - MAML = {c}")
    atomic_write_json(out, record, indent=1)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

