"""Runtime policy: device choice, seeding and CPU threads.

The models in this package are tiny (a Conv4 with a few thousand activations per example), so the
usual PyTorch defaults are a poor fit for laptops and Binder:

* **Threads.** PyTorch uses one intra-op thread per core. Per-task kernels here are too small to
  split, and on a busy 2-core machine two threads were measured up to ~100x slower than one (thread
  contention).  `configure_threads` therefore defaults to **one** intra-op thread, overridable with
  the environment variable ``TUTOR_THREADS`` or the ``threads`` argument.  The benchmark
  (``benchmarks/bench_core.py``) measures both choices.
* **OpenMP spinning.** With OpenMP's default *active* wait policy, idle worker threads spin and fight
  for the core; ``OMP_WAIT_POLICY=PASSIVE`` must be set *before* torch is imported, which importing
  :mod:`tutor` does (unless the variable is already set).
* **Device.** CPU by default. ``get_device("cuda")``/``"mps"``/``"auto"`` opt in to an accelerator;
  ``TUTOR_DEVICE`` sets the default for a whole session without editing notebooks.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["get_device", "seed_everything", "configure_threads", "generator", "return_freed_memory"]


def get_device(name: str | None = None) -> torch.device:
    """Return the device to compute on.

    ``name`` is ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"`` (the first accelerator
    present, else the CPU).  ``None`` reads ``TUTOR_DEVICE`` and falls back to ``"cpu"``.
    Asking for an accelerator that is not present raises a ``RuntimeError`` rather than silently
    running on the CPU.
    """
    source = "device" if name else "TUTOR_DEVICE"
    name = (name or os.environ.get("TUTOR_DEVICE") or "cpu").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{source} must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got {name!r}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{source} must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False; "
                           "use 'cpu' or 'auto'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' was requested but is not available; use 'cpu' or 'auto'")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's global RNGs; return a fresh seeded CPU generator.

    Library functions that draw random numbers take an explicit ``torch.Generator`` (or a seed), so
    results do not depend on what else ran before; the global seeding is a safety net for code that
    does not.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return generator(seed)


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with ``seed`` (on ``device``)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def configure_threads(threads: int | None = None) -> int:
    """Set PyTorch's intra-op thread count; return the value in force.

    ``threads=None`` reads ``TUTOR_THREADS`` and defaults to 1 (see the module docstring for why).
    """
    if threads is None:
        raw = os.environ.get("TUTOR_THREADS", "").strip() or "1"
        try:
            threads = int(raw)
        except ValueError:
            raise ValueError(f"TUTOR_THREADS must be a whole number >= 1, got {raw!r}") from None
        if threads < 1:
            raise ValueError(f"TUTOR_THREADS must be a whole number >= 1, got {raw!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
    torch.set_num_threads(threads)
    return threads


def return_freed_memory(threshold: int = 1 << 20) -> bool:
    """Make freed large buffers go back to the operating system (glibc only; elsewhere a no-op).

    glibc raises its mmap threshold after a large buffer is freed, so later large tensors come from
    the heap and their memory stays with the process (a notebook's resident memory then only grows).
    Fixing the threshold at ``threshold`` bytes (``mallopt(M_MMAP_THRESHOLD)``) keeps every larger
    allocation in its own mapping, returned on free.  Returns whether the setting was applied."""
    import ctypes
    import ctypes.util
    import platform

    if not isinstance(threshold, int) or not 0 < threshold <= 32 << 20:
        raise ValueError(f"threshold must be an int in (0, 32 MiB], got {threshold!r}")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, threshold))            # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        return False
