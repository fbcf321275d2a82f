"""A laptop-scale many-shot experiment for CTS: each task is a whole glyph classification dataset.

    python -m tutor.experiments.cts_glyphs --seeds 0 1 2 --budget 2000

Meta-training tasks: 8 datasets of 20 glyph classes each (in-distribution scripts), all 20 instances
per class (400 examples), each task with its own 20-way head (excluded from the shared
initialisation phi and kept across resets, as in the official code). The shared part is an MLP trunk
196-128-128 on 14x14 glyphs. Inner loop: SGD (lr alpha, minibatch 32), horizon K; outer rule:
Reptile every K steps, or CTS after every step (``tutor.papers.cts.reptile_step`` / ``cts_step``).
Meta-test: held-out scripts (the out-of-distribution glyph bank), 6 datasets of 20 classes;
fine-tune phi plus a fresh zero head on 5 examples per class for 100 full-batch SGD steps, score on
the other 15. Reported: held-out accuracy against cumulative inner steps per task, for the same
budget for every method. Tuning: every method's meta learning rate beta is chosen from the same grid
on validation tasks (held-out classes disjoint from the test tasks) at the full budget, seed 0.
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
from tutor.outputs import add_output_arguments, atomic_write_json, dry_run_report, resolve_output
from tutor.papers.cts import cts_step, reptile_step
from tutor.validation import as_int, cli_int

__all__ = ["GlyphDatasets", "make_datasets", "trunk_init", "forward", "meta_train", "finetune_accuracy", "main"]


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


def meta_train(data: GlyphDatasets, method: str, K: int, budget: int, alpha: float = 0.1, beta: float = 0.1,
               batch: int = 32, seed: int = 0, checkpoints=(0, 250, 500, 1000, 2000)) -> dict:
    """Meta-train phi with ``method`` in {"reptile", "cts"}; return ``{budget: phi}`` at the checkpoints
    plus the training loss per inner step (``"loss"``)."""
    if method not in ("reptile", "cts"):
        raise ValueError(f"method must be 'reptile' or 'cts', got {method!r}")
    K, budget = as_int(K, "K (the horizon)", 1), as_int(budget, "budget", 1)
    if method == "reptile" and budget < K:
        raise ValueError(f"budget={budget} is below the horizon K={K}: Reptile would make no meta-update "
                         f"(its result would be the untrained start); use budget >= {K}")
    guard = DivergenceGuard(setting=f"the inner learning rate (alpha={alpha}) or beta={beta}",
                            what="the inner loss")
    g = torch.Generator().manual_seed(seed)
    tasks, n = data.train_y.shape
    ways = int(data.train_y.max()) + 1
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
        elif step % K == 0:                                     # Reptile: once per K steps
            phi = reptile_step(phi, trunk, beta)
        if step % K == 0:
            trunk = phi.expand(tasks, -1).clone()               # reset the learners to phi
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


METHODS = {"Reptile (K=100)": ("reptile", 100), "Reptile (K=10)": ("reptile", 10), "CTS (K=100)": ("cts", 100)}


MIN_BUDGET = max(K for _, K in METHODS.values())
"""The smallest budget at which every method makes a meta-update (a smaller one would score untrained starts)."""
BETA_GRID = (0.03, 0.1, 0.3, 1.0)


def tune_beta(budget: int, grid=BETA_GRID, seed: int = 0) -> dict:
    """The meta learning rate of every method, chosen from the same grid on validation tasks."""
    data = make_datasets(seed)
    chosen, table = {}, {}
    for name, (method, K) in METHODS.items():
        table[name] = {b: finetune_accuracy(data, meta_train(data, method, K, budget, beta=b, seed=seed,
                                                             checkpoints=(budget,))[budget], split="val")
                       for b in grid}
        chosen[name] = max(table[name], key=table[name].get)
    return {"chosen": chosen, "validation": table}


def run(seeds, budget: int, checkpoints, betas: dict) -> dict:
    """Held-out accuracy per method, seed and checkpoint: ``{method: {checkpoint: [acc per seed]}}``."""
    results = {}
    for seed in seeds:
        data = make_datasets(seed)
        for name, (method, K) in METHODS.items():
            phis = meta_train(data, method, K, budget, beta=betas[name], seed=seed, checkpoints=checkpoints)
            for c in checkpoints:
                results.setdefault(name, {}).setdefault(c, []).append(finetune_accuracy(data, phis[c]))
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=cli_int(0), nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=cli_int(MIN_BUDGET), default=2000,
                   help=f"inner steps per task (>= {MIN_BUDGET}, the largest horizon K: every method must make "
                        "at least one meta-update)")
    add_output_arguments(p, "cts_glyphs.json")
    args = p.parse_args(argv)
    out = resolve_output(args.out, "cts_glyphs.json", overwrite=args.overwrite)      # checked before any work
    if args.dry_run:
        return dry_run_report(args, out)
    torch.set_num_threads(1)
    checkpoints = sorted({0, *[c for c in (250, 500, 1000, 2000, 4000, 8000) if c <= args.budget], args.budget})
    tuning = tune_beta(args.budget)
    print("meta learning rates chosen on validation tasks:", tuning["chosen"])
    results = run(args.seeds, args.budget, checkpoints, tuning["chosen"])
    for name, by_c in results.items():
        print(name, {c: round(sum(v) / len(v) * 100, 2) for c, v in by_c.items()})
    record = {"command": "python -m tutor.experiments.cts_glyphs " + " ".join(argv or sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "tuning": tuning, "checkpoints": checkpoints, "results": results}
    atomic_write_json(out, record, indent=1)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
