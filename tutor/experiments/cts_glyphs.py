"""A laptop-scale many-shot experiment for CTS: each task is a whole glyph classification dataset.

    python -m tutor.experiments.cts_glyphs --out data/results/cts_glyphs.json --overwrite

Meta-training tasks: 8 datasets of 20 glyph classes each (in-distribution scripts), all 20 instances
per class (400 examples), each task with its own 20-way head (excluded from the shared
initialisation phi and kept across resets, as in the official code). The shared part is an MLP trunk
196-128-128 on 14x14 glyphs. Inner loop: SGD (lr alpha, minibatch 32), horizon K; outer rule:
Reptile every K steps, or CTS after every step (``tutor.papers.cts.reptile_step`` / ``cts_step``).
Meta-test: held-out scripts (the out-of-distribution glyph bank), 6 datasets of 20 classes;
fine-tune phi plus a fresh zero head on 5 examples per class for 100 full-batch SGD steps, score on
the other 15. Reported: held-out accuracy against cumulative inner steps per task, for the same
budget for every method.

Methods, each at inner horizons K in {10, 30, 100, 300}: Reptile (one meta-update per K steps), CTS
(a meta-update and a shift after every step, reset every K), and a *horizon-curriculum* Reptile
(our control: plain Reptile whose horizon grows linearly from max(1, round(K/20)) to K over the
first 2,000 inner steps, ``tutor.papers.cts.horizon_schedule``; no per-step update, no shift).

Tuning: the meta learning rate beta of every (method, K) is chosen on validation tasks (held-out
classes disjoint from the test tasks) of the tuning seed (0, never scored), at 2,000 inner steps,
from one ladder of values (``BETA_LADDER``): a three-value window is evaluated, and the window is
extended along the ladder while the best value sits on its edge, so no choice is on an edge of what
was searched (unless the ladder ends). Scored seeds: 1, 2, 3. Checkpoints: 250, 500, 1000, 2000 inner
steps for every K, plus the budget 20 K (20 Reptile meta-updates; K = 300 runs go to 6,000 steps).

Pre-registered predictions (written before the run; stored in the ``regime`` maps):

1. CTS - Reptile at 2,000 inner steps grows with K: the Student-t interval over seeds includes 0 at
   K = 10 (Reptile already makes 200 meta-updates) and excludes 0 in CTS's favour at K = 300
   (Reptile makes 6).
2. At the budget 20 K (Reptile's 20th meta-update at every K) CTS is ahead on the mean at every K.
3. The horizon-curriculum Reptile does not carry the glyph gain: CTS - curriculum Reptile at 2,000
   steps is above 0 on the mean at K = 100 and 300 (on the toy of notebook 05 the curriculum does
   carry it).
4. (The premise.) Reptile alone does not profit from a long horizon here: Reptile K = 100 - Reptile
   K = 10 at 2,000 steps has an interval that includes 0.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tutor.data import load_glyphs
from tutor.divergence import DivergenceGuard
from tutor.experiments.regime import regime_map
from tutor.outputs import add_output_arguments, atomic_write_json, dry_run_report, resolve_output
from tutor.papers.cts import cts_step, horizon_schedule, reptile_step
from tutor.validation import as_int, cli_int

__all__ = ["GlyphDatasets", "make_datasets", "trunk_init", "forward", "meta_train", "finetune_accuracy",
           "method_name", "curriculum_start", "tune_beta", "run", "regime_maps", "main"]


@dataclass
class GlyphDatasets:
    """``train_x (tasks, n, 196)``, ``train_y (tasks, n)``; held-out (support, query) splits."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_support: tuple[torch.Tensor, torch.Tensor]   # (tasks, ways*shots, 196), (tasks, ways*shots)
    test_query: tuple[torch.Tensor, torch.Tensor]
    val_support: tuple[torch.Tensor, torch.Tensor]    # held-out tasks for tuning, disjoint from test
    val_query: tuple[torch.Tensor, torch.Tensor]


def make_datasets(seed: int = 0, tasks: int = 8, test_tasks: int = 6, val_tasks: int = 4, ways: int = 20,
                  shots: int = 5, size: int = 14) -> GlyphDatasets:
    """Group glyph classes into whole datasets: ID scripts for training, OOD scripts for validation
    and testing (disjoint classes)."""
    g = torch.Generator().manual_seed(seed)
    bank, ood = load_glyphs("id", size=size), load_glyphs("ood", size=size)
    if tasks * ways > bank.num_classes or (test_tasks + val_tasks) * ways > ood.num_classes:
        raise ValueError("not enough classes for that many tasks of that many ways")

    def group(classes, images):
        x = images[classes.view(-1, ways)].flatten(-3)               # (tasks, ways, instances, 196)
        y = torch.arange(ways)[None, :, None].expand(x.shape[0], ways, x.shape[2])
        return x, y

    x, y = group(torch.randperm(bank.num_classes, generator=g)[:tasks * ways], bank.images)
    train_x, train_y = x.flatten(1, 2), y.flatten(1, 2)
    held_out = torch.randperm(ood.num_classes, generator=g)[:(test_tasks + val_tasks) * ways]
    perm = torch.randperm(ood.num_instances, generator=g)
    sup, qry = perm[:shots], perm[shots:]
    splits = []
    for classes in (held_out[:test_tasks * ways], held_out[test_tasks * ways:]):
        x, y = group(classes, ood.images)
        splits += [(x[:, :, sup].flatten(1, 2), y[:, :, sup].flatten(1, 2)),
                   (x[:, :, qry].flatten(1, 2), y[:, :, qry].flatten(1, 2))]
    return GlyphDatasets(train_x, train_y, *splits)


def trunk_init(gen: torch.Generator, d_in: int = 196, hidden: int = 128) -> torch.Tensor:
    """phi: the trunk's parameters as one flat vector (He-initialised weights, zero biases)."""
    w1 = torch.randn(hidden, d_in, generator=gen) * (2 / d_in) ** 0.5
    w2 = torch.randn(hidden, hidden, generator=gen) * (2 / hidden) ** 0.5
    return torch.cat([w1.flatten(), torch.zeros(hidden), w2.flatten(), torch.zeros(hidden)])


def forward(trunk: torch.Tensor, head: torch.Tensor, x: torch.Tensor, d_in: int = 196, hidden: int = 128):
    """Logits of every task's model: trunk ``(tasks, P)``, head ``(tasks, ways, hidden + 1)``,
    x ``(tasks, n, d_in)`` -> ``(tasks, n, ways)``."""
    sizes = [hidden * d_in, hidden, hidden * hidden, hidden]
    w1, b1, w2, b2 = torch.split(trunk, sizes, dim=-1)
    h = F.relu(torch.einsum("tnd,thd->tnh", x, w1.view(-1, hidden, d_in)) + b1[:, None])
    h = F.relu(torch.einsum("tnd,thd->tnh", h, w2.view(-1, hidden, hidden)) + b2[:, None])
    return torch.einsum("tnh,tch->tnc", h, head[..., :-1]) + head[:, None, :, -1]


def _sgd_step(trunk, head, x, y, lr):
    trunk, head = trunk.detach().requires_grad_(), head.detach().requires_grad_()
    logits = forward(trunk, head, x)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum") / y.shape[1]  # sum over tasks
    g_trunk, g_head = torch.autograd.grad(loss, (trunk, head))
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the inner loss diverged; lower the inner learning rate (alpha={lr})")
    return (trunk - lr * g_trunk).detach(), (head - lr * g_head).detach(), loss.item() / x.shape[0]


def curriculum_start(K: int) -> int:
    """The first horizon of the horizon-curriculum Reptile at final horizon K: ``max(1, round(K / 20))``
    (K = 100 starts at 5, as the toy of notebook 05)."""
    return max(1, int(round(K / 20)))


def meta_train(data: GlyphDatasets, method: str, K: int, budget: int, alpha: float = 0.1, beta: float = 0.1,
               batch: int = 32, seed: int = 0, checkpoints=(0, 250, 500, 1000, 2000), ramp: int = 2000) -> dict:
    """Meta-train phi with ``method`` in {"reptile", "cts", "curriculum"}; return ``{budget: phi}`` at
    the checkpoints plus the training loss per inner step (``"loss"``).

    "curriculum": Reptile whose episodes follow ``horizon_schedule(curriculum_start(K), K, budget, ramp)``
    (one meta-update and a reset at the end of each episode). The minibatch stream depends on the seed
    only, so a run with a longer budget starts exactly as a shorter one.
    """
    if method not in ("reptile", "cts", "curriculum"):
        raise ValueError(f"method must be 'reptile', 'cts' or 'curriculum', got {method!r}")
    K, budget = as_int(K, "K (the horizon)", 1), as_int(budget, "budget", 1)
    first = curriculum_start(K) if method == "curriculum" else K
    if method != "cts" and budget < first:
        raise ValueError(f"budget={budget} is below the first horizon {first}: {method} would make no meta-update "
                         f"(its result would be the untrained start); use budget >= {first}")
    guard = DivergenceGuard(setting=f"the inner learning rate (alpha={alpha}) or beta={beta}",
                            what="the inner loss")
    g = torch.Generator().manual_seed(seed)
    tasks, n = data.train_y.shape
    ways = int(data.train_y.max()) + 1
    if method == "curriculum":
        ends, total = set(), 0
        for k in horizon_schedule(curriculum_start(K), K, budget, ramp):
            total += k
            ends.add(total)
    else:
        ends = set(range(K, budget + 1, K))                     # Reptile and CTS: reset every K steps
    phi = trunk_init(g)
    head = torch.zeros(tasks, ways, 129)                        # per task, persists across resets
    trunk = phi.expand(tasks, -1).clone()
    out, losses = {0: phi.clone()}, []
    for step in range(1, budget + 1):
        idx = torch.randint(0, n, (tasks, batch), generator=g)
        x = torch.gather(data.train_x, 1, idx[..., None].expand(-1, -1, data.train_x.shape[-1]))
        y = torch.gather(data.train_y, 1, idx)
        trunk, head, loss = _sgd_step(trunk, head, x, y, alpha)
        losses.append(guard(loss, where=f"at inner step {step}"))
        if method == "cts":                                     # meta-update every step + shift
            phi, trunk = cts_step(phi, trunk, beta)
        elif step in ends:                                      # Reptile: once per episode
            phi = reptile_step(phi, trunk, beta)
        if step in ends:
            trunk = phi.expand(tasks, -1).clone()               # reset the learners to phi
        if not torch.isfinite(phi).all():
            raise FloatingPointError(f"the meta-update diverged; lower the meta learning rate (beta={beta})")
        if step in checkpoints:
            out[step] = phi.clone()
    out["loss"] = losses
    return out


def finetune_accuracy(data: GlyphDatasets, phi: torch.Tensor, steps: int = 100, lr: float = 0.1,
                      split: str = "test") -> float:
    """Fine-tune phi + a zero head on each held-out task's support set; mean query accuracy
    (``split`` "test" or "val")."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    (sx, sy), (qx, qy) = getattr(data, f"{split}_support"), getattr(data, f"{split}_query")
    tasks, ways = sx.shape[0], int(sy.max()) + 1
    trunk, head = phi.expand(tasks, -1).clone(), torch.zeros(tasks, ways, 129)
    for _ in range(steps):
        trunk, head, _ = _sgd_step(trunk, head, sx, sy, lr)
    with torch.no_grad():
        return (forward(trunk, head, qx).argmax(-1) == qy).float().mean().item()


HORIZONS = (10, 30, 100, 300)
"""The inner horizons of the regime map (the headline comparison is K = 100)."""
BETA_LADDER = (0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
"""Every meta learning rate any method may get; the search walks along it (see :func:`tune_beta`)."""
START_WINDOW = {"reptile": (1.0, 1.5, 2.0), "curriculum": (1.0, 1.5, 2.0), "cts": (0.2, 0.3, 0.5)}
"""The three ladder values evaluated first per method (from the first run's grids); extended while the
best sits on an edge."""
METHODS = {"reptile": "Reptile", "cts": "CTS", "curriculum": "Reptile curriculum"}


def method_name(method: str, K: int) -> str:
    """The results key of a (method, K) pair, e.g. ``"CTS (K=100)"``, ``"Reptile curriculum (K=5->100)"``."""
    if method == "curriculum":
        return f"Reptile curriculum (K={curriculum_start(K)}->{K})"
    return f"{METHODS[method]} (K={K})"


def _val_score(data, method, K, budget, beta, seed):
    try:
        phi = meta_train(data, method, K, budget, beta=beta, seed=seed, checkpoints=(budget,))[budget]
    except FloatingPointError:
        return None                                            # diverged: never chosen
    return finetune_accuracy(data, phi, split="val")


def tune_beta(budget: int, horizons=HORIZONS, seed: int = 0, ladder=BETA_LADDER, windows=None) -> dict:
    """Choose beta for every (method, K) on the validation tasks of ``seed`` (never a scored seed).

    Evaluates the method's start window, then extends it one ladder value at a time on whichever side
    the best value sits, until the best is interior or the ladder ends. Returns ``{"chosen": {name:
    beta}, "validation": {name: {beta: accuracy or None if it diverged}}, "on_edge": [names whose
    choice is an end of the ladder]}``.
    """
    windows = windows or START_WINDOW
    data = make_datasets(seed)
    chosen, table, on_edge = {}, {}, []
    for K in horizons:
        for method in METHODS:
            name = method_name(method, K)
            idx = sorted(ladder.index(b) for b in windows[method] if b in ladder) or [len(ladder) // 2]
            scores = {ladder[i]: _val_score(data, method, K, budget, ladder[i], seed) for i in idx}
            while True:
                ok = {b: a for b, a in scores.items() if a is not None}
                if not ok:
                    lo = min(ladder.index(b) for b in scores)
                    if lo == 0:
                        raise FloatingPointError(f"{name}: every beta of the ladder diverged")
                    scores[ladder[lo - 1]] = _val_score(data, method, K, budget, ladder[lo - 1], seed)
                    continue
                best = max(ok, key=ok.get)
                searched = [ladder.index(b) for b in scores]
                i, lo, hi = ladder.index(best), min(searched), max(searched)
                if i == lo and lo > 0:
                    scores[ladder[lo - 1]] = _val_score(data, method, K, budget, ladder[lo - 1], seed)
                elif i == hi and hi < len(ladder) - 1 and scores.get(ladder[hi]) is not None:
                    scores[ladder[hi + 1]] = _val_score(data, method, K, budget, ladder[hi + 1], seed)
                else:
                    break
            chosen[name] = best
            table[name] = {b: scores[b] for b in sorted(scores)}
            if ladder.index(best) in (0, len(ladder) - 1):
                on_edge.append(name)
            print(f"  tuned {name}: beta={best}  " + "  ".join(
                f"{b}: {'div' if a is None else f'{a:.3f}'}" for b, a in table[name].items()), flush=True)
    return {"chosen": chosen, "validation": table, "on_edge": on_edge}


def checkpoints_for(K: int, budget: int) -> list[int]:
    """Checkpoints of every run at horizon K: 250, 500, 1000, 2000 (those <= budget), the budget, and 20 K."""
    return sorted({0, *[c for c in (250, 500, 1000, 2000) if c <= budget], budget, 20 * K})


def run(seeds, budget: int, betas: dict, horizons=HORIZONS) -> dict:
    """Held-out test accuracy per method, seed and checkpoint: ``{name: {checkpoint: [acc per seed]}}``.
    Runs at horizon K go to ``max(budget, 20 K)`` inner steps."""
    results = {}
    for seed in seeds:
        data = make_datasets(seed)
        for K in horizons:
            cps = checkpoints_for(K, budget)
            for method in METHODS:
                name = method_name(method, K)
                phis = meta_train(data, method, K, max(cps), beta=betas[name], seed=seed, checkpoints=cps)
                for c in cps:
                    results.setdefault(name, {}).setdefault(c, []).append(finetune_accuracy(data, phis[c]))
            print(f"  seed {seed} K={K}: " + "  ".join(
                f"{method_name(m, K)} {results[method_name(m, K)][budget][-1]:.3f}" for m in METHODS), flush=True)
    return results


PREDICTIONS = {
    "budget": "CTS - Reptile at 2,000 inner steps grows with K: the interval includes 0 at K = 10 and excludes 0 "
              "in CTS's favour at K = 300.",
    "slice": "At the budget 20 K (Reptile's 20th meta-update) CTS is ahead of Reptile on the mean at every K.",
    "curriculum": "The horizon-curriculum Reptile does not carry the glyph gain: CTS - curriculum Reptile at "
                  "2,000 steps is above 0 on the mean at K = 100 and 300.",
}
"""The docstring's predictions 1-3, word for word in substance, stored with each map."""


def regime_maps(results: dict, budget: int, horizons=HORIZONS) -> list:
    """Three maps over the inner horizon K: CTS - Reptile at ``budget`` steps, CTS - Reptile at 20 K
    steps, CTS - curriculum Reptile at ``budget`` steps (held-out accuracy, paired by seed)."""
    ks = list(horizons)

    def at(method, cp):
        return {K: results[method_name(method, K)][cp(K)] for K in ks}

    common = dict(factor="inner horizon K", method="CTS", metric="held-out accuracy", higher_is_better=True)
    full, slice_ = (lambda K: budget), (lambda K: 20 * K)
    return [
        regime_map(values=ks, method_scores=at("cts", full), baseline_scores=at("reptile", full),
                   baseline="Reptile", prediction=PREDICTIONS["budget"], **common),
        regime_map(values=ks, method_scores=at("cts", slice_), baseline_scores=at("reptile", slice_),
                   baseline="Reptile (at 20 K inner steps)", prediction=PREDICTIONS["slice"], **common),
        regime_map(values=ks, method_scores=at("cts", full),
                   baseline_scores=at("curriculum", lambda K: budget), baseline="Reptile curriculum",
                   prediction=PREDICTIONS["curriculum"], **common),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=cli_int(0), nargs="+", default=[1, 2, 3], help="scored seeds")
    p.add_argument("--tune-seed", type=cli_int(0), default=0, help="the seed whose validation tasks choose beta")
    p.add_argument("--budget", type=cli_int(1), default=2000,
                   help="inner steps per task (>= the largest horizon K: every method must make a meta-update)")
    p.add_argument("--horizons", type=cli_int(1), nargs="+", default=list(HORIZONS), help="inner horizons K")
    add_output_arguments(p, "cts_glyphs.json")
    args = p.parse_args(argv)
    if args.tune_seed in args.seeds:
        p.error(f"argument --tune-seed: {args.tune_seed} is also a scored seed (--seeds {args.seeds}); "
                "tune on a seed that is not scored")
    if args.budget < max(args.horizons):
        p.error(f"argument --budget: must be >= the largest horizon ({max(args.horizons)}) so that every method "
                f"makes a meta-update, got {args.budget}")
    out = resolve_output(args.out, "cts_glyphs.json", overwrite=args.overwrite)      # checked before any work
    if args.dry_run:
        return dry_run_report(args, out)
    torch.set_num_threads(1)
    horizons = sorted(set(args.horizons))
    tuning = tune_beta(args.budget, horizons, seed=args.tune_seed)
    print("meta learning rates chosen on validation tasks:", tuning["chosen"])
    results = run(args.seeds, args.budget, tuning["chosen"], horizons)
    for name, by_c in results.items():
        print(name, {c: round(sum(v) / len(v) * 100, 2) for c, v in by_c.items()})
    record = {"command": "python -m tutor.experiments.cts_glyphs " + " ".join(argv or sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "seeds": list(args.seeds), "tune_seed": args.tune_seed, "budget": args.budget, "horizons": horizons,
              "tuning": tuning, "checkpoints": {str(K): checkpoints_for(K, args.budget) for K in horizons},
              "results": results, "regime": regime_maps(results, args.budget, horizons)}
    atomic_write_json(out, record, indent=1)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
