"""Meta-training throughput of tutor's core vs `higher`, on Conv4-64 with 1x28x28 inputs.

Usage (from the repository root, after ``pip install -e .[bench]``)::

    python benchmarks/bench_core.py                 # the full grid (~10-15 min on 2 cores)
    python benchmarks/bench_core.py --quick         # 5-way, meta-batch 32, 1 inner step only
    python benchmarks/bench_core.py --threads 2     # intra-op threads for every implementation
    python benchmarks/bench_core.py --device cuda --impls loop,threads,vmap   # on a GPU (MB = peak CUDA memory)

For every configuration (ways, meta-batch, inner steps, first/second order) it first checks in
float64 that tutor's meta-gradient equals higher's (relative error < 1e-8), then times one
MAML meta-gradient (float32) for each implementation in a fresh subprocess and reports
iterations per second, peak resident memory (MB) and the speed ratio to higher:

* ``higher``   -- ``higher.innerloop_ctx`` around an ``nn.Module`` Conv4, backward per task;
* ``loop``     -- tutor, one task at a time (``mode="loop"``);
* ``threads``  -- tutor, tasks split over 2 Python threads (``mode="threads"``);
* ``vmap``     -- tutor, ``torch.func.vmap`` over tasks (5-way configurations only; memory-hungry).

Peak memory is the maximum resident set size of the subprocess (torch itself takes ~300 MB).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tutor.data import EpisodeSampler  # noqa: E402
from tutor.meta import MAML  # noqa: E402
from tutor.nets import Conv4  # noqa: E402

INNER_LR = 0.4


class ModuleConv4(nn.Module):
    """The same Conv4 as tutor.nets.Conv4, as an nn.Module for higher (batch statistics, no running stats)."""

    def __init__(self, ways, hidden=64):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else hidden, hidden, 3, padding=1) for i in range(4))
        self.bn_w = nn.ParameterList(nn.Parameter(torch.ones(hidden)) for _ in range(4))
        self.bn_b = nn.ParameterList(nn.Parameter(torch.zeros(hidden)) for _ in range(4))
        self.head = nn.Linear(hidden, ways)

    def load_from(self, params):
        with torch.no_grad():
            for i in range(4):
                self.convs[i].weight.copy_(params[f"conv{i + 1}.weight"])
                self.convs[i].bias.copy_(params[f"conv{i + 1}.bias"])
                self.bn_w[i].copy_(params[f"bn{i + 1}.weight"])
                self.bn_b[i].copy_(params[f"bn{i + 1}.bias"])
            self.head.weight.copy_(params["head.weight"])
            self.head.bias.copy_(params["head.bias"])

    def grads_as_dict(self):
        out = {}
        for i in range(4):
            out[f"conv{i + 1}.weight"] = self.convs[i].weight.grad
            out[f"conv{i + 1}.bias"] = self.convs[i].bias.grad
            out[f"bn{i + 1}.weight"] = self.bn_w[i].grad
            out[f"bn{i + 1}.bias"] = self.bn_b[i].grad
        out["head.weight"], out["head.bias"] = self.head.weight.grad, self.head.bias.grad
        return out

    def forward(self, x):
        for conv, w, b in zip(self.convs, self.bn_w, self.bn_b):
            x = F.max_pool2d(F.relu(F.batch_norm(conv(x), None, None, w, b, training=True)), 2)
        return self.head(x.flatten(1))


def make(ways, meta_batch, dtype):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 20, 1, 28, 28, generator=g)
    batch = EpisodeSampler(images, range(40), ways, 1, 5).batch(meta_batch, 1).to(dtype=dtype)
    learner_cls = MAML
    return batch, learner_cls


def higher_meta_gradient(model, batch, steps, first_order):
    import higher

    model.zero_grad(set_to_none=True)
    inner_opt = torch.optim.SGD(model.parameters(), lr=INNER_LR)
    for i in range(len(batch)):
        ep = batch[i]
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                  track_higher_grads=not first_order) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(fmodel(ep.support_x), ep.support_y))
            loss = F.cross_entropy(fmodel(ep.query_x), ep.query_y) / len(batch)
            if first_order:  # FOMAML: gradient of the query loss at the adapted weights
                adapted = list(fmodel.parameters())
                grads = torch.autograd.grad(loss, adapted)
                for p, g in zip(model.parameters(), grads):
                    p.grad = g if p.grad is None else p.grad + g
            else:
                loss.backward()
    return model.grads_as_dict()


def check_gradients(ways, meta_batch, steps, first_order) -> float:
    """Relative error between tutor's and higher's meta-gradients in float64."""
    batch, _ = make(ways, min(meta_batch, 4), torch.float64)
    learner = MAML(Conv4(hidden=64, ways=ways), inner_lr=INNER_LR, inner_steps=steps, first_order=first_order)
    meta = learner.init(0, dtype=torch.float64)
    ours, _ = learner.meta_gradient(meta, batch, "loop")
    names = sorted(meta["net"])
    ours = dict(zip(names, ours))
    model = ModuleConv4(ways).double()
    model.load_from(meta["net"])
    theirs = higher_meta_gradient(model, batch, steps, first_order)
    num = sum((ours[k] - theirs[k]).pow(2).sum() for k in names).sqrt()
    den = sum(theirs[k].pow(2).sum() for k in names).sqrt()
    return (num / den).item()


def time_one(impl, ways, meta_batch, steps, first_order, threads, device="cpu", min_seconds=4.0,
             min_iters=2) -> dict:
    torch.set_num_threads(threads)
    dev = torch.device(device)
    batch, _ = make(ways, meta_batch, torch.float32)
    batch = batch.to(dev)
    learner = MAML(Conv4(hidden=64, ways=ways), inner_lr=INNER_LR, inner_steps=steps, first_order=first_order)
    meta = learner.init(0, device=dev)
    model = ModuleConv4(ways).to(dev)
    model.load_from(meta["net"])

    def step():
        if impl == "higher":
            higher_meta_gradient(model, batch, steps, first_order)
        else:
            learner.meta_gradient(meta, batch, impl, workers=2)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    t0, n = time.perf_counter(), 0
    while n < min_iters or time.perf_counter() - t0 < min_seconds:
        step()
        n += 1
    it_s = n / (time.perf_counter() - t0)
    if dev.type == "cuda":
        return {"it_s": it_s, "peak_mb": torch.cuda.max_memory_allocated(dev) / 2**20}
    return {"it_s": it_s, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--impls", default="higher,loop,threads,vmap")
    p.add_argument("--device", default="cpu", help="cpu or cuda (MB is then peak CUDA memory)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        cfg = json.loads(args.child)
        print(json.dumps(time_one(**cfg)))
        return
    if args.quick:
        grid = [(5, 32, 1, False), (5, 32, 1, True)]
    else:
        grid = list(itertools.product((5, 20), (4, 32), (1, 5), (False, True)))
    impls = args.impls.split(",")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda was asked for but no CUDA GPU is present (torch.cuda.is_available() is False)")
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"{os.cpu_count()} CPUs"
    print(f"torch {torch.__version__}, {where}, intra-op threads {args.threads}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    header = f"{'ways':>4} {'batch':>5} {'steps':>5} {'order':>5} | {'grad rel.err':>12} | " + \
             " | ".join(f"{i:>17}" for i in impls) + " | threads/higher (or /loop)"
    print(header)
    print(f"{'':>25} | {'':>12} | " + " | ".join(f"{'it/s':>8} {'MB':>8}" for _ in impls))
    for ways, mb, steps, fo in grid:
        err = check_gradients(ways, mb, steps, fo)
        assert err < 1e-8, f"meta-gradients disagree: relative error {err:.2e}"
        row = {}
        for impl in impls:
            if impl == "vmap" and ways == 20 and args.device == "cpu":
                row[impl] = None
                continue
            cfg = dict(impl=impl, ways=ways, meta_batch=mb, steps=steps, first_order=fo, threads=args.threads,
                       device=args.device)
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)],
                                 capture_output=True, text=True)
            row[impl] = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
        cells = " | ".join(f"{r['it_s']:8.2f} {r['peak_mb']:8.0f}" if r else f"{'n/a':>17}" for r in row.values())
        base = "higher" if row.get("higher") else "loop"
        ratio = (row["threads"]["it_s"] / row[base]["it_s"]) if row.get("threads") and row.get(base) \
            else float("nan")
        print(f"{ways:>4} {mb:>5} {steps:>5} {'1st' if fo else '2nd':>5} | {err:12.1e} | {cells} | {ratio:6.2f}x",
              flush=True)


if __name__ == "__main__":
    main()
