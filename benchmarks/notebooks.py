"""Wall time and kernel peak memory of every notebook, executed headless as the test suite runs it.

Usage (from the repository root)::

    python benchmarks/notebooks.py                    # every notebooks/NN_*.py
    python benchmarks/notebooks.py 00 05              # only these
    python benchmarks/notebooks.py --out benchmarks/results/notebooks.txt

Each notebook is converted with jupytext and executed by nbclient in a fresh kernel, with the suite's
environment (``TUTOR_HEADLESS=1``, ``TUTOR_PROGRESS=0``, ``MPLBACKEND=Agg``, no network) but without
the widget sweep (students see the default draw).  The kernel's peak resident set size is read from
``/proc/<pid>/status`` (``VmHWM``) just before it shuts down.  The budgets: 3 min on 2 cores and far
below 1 GB (Binder has 2 GB).  This is a measurement, not a test: it never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S, BUDGET_MB = 180, 1024


def kernel_peak_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_notebook(path: Path) -> tuple[float, float, str]:
    import jupytext
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    km = KernelManager(kernel_name="python3")
    env = {**os.environ, "TUTOR_HEADLESS": "1", "TUTOR_PROGRESS": "0", "MPLBACKEND": "Agg",
           "TUTOR_NO_NETWORK": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("TUTOR_WIDGET_SWEEP", None)
    km.start_kernel(env=env, cwd=str(path.parent))
    client = NotebookClient(nb, km=km, timeout=1800, resources={"metadata": {"path": str(path.parent)}})
    status = "ok"
    t0 = time.perf_counter()
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
            pid = km.provisioner.process.pid
            peak = kernel_peak_mb(pid)
    except Exception as e:   # report and carry on with the next notebook
        status, peak = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:80]}", float("nan")
    finally:
        if km.is_alive():
            km.shutdown_kernel(now=True)
    return time.perf_counter() - t0, peak, status


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("only", nargs="*", help="notebook number prefixes, e.g. 00 05")
    p.add_argument("--out", default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    if args.only:
        paths = [q for q in paths if q.name[:2] in args.only]
    import torch

    lines = [f"{datetime.date.today().isoformat()}, {platform.node() or 'this machine'}: {os.cpu_count()} CPUs, "
             f"torch {torch.__version__}, Python {platform.python_version()}",
             f"{'notebook':36s} {'wall s':>7s} {'peak MB':>8s}  budget (180 s, 1024 MB)"]
    print(lines[0], flush=True)
    print(lines[1], flush=True)
    for path in paths:
        secs, peak, status = run_notebook(path)
        verdict = status if status != "ok" else (
            "within" if secs <= BUDGET_S and peak <= BUDGET_MB else "OVER")
        lines.append(f"{path.stem:36s} {secs:7.0f} {peak:8.0f}  {verdict}")
        print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
