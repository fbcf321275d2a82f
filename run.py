#!/usr/bin/env python3
"""Set up everything and run tutor -- the only two commands you need:

    python3 run.py lab     # create .venv, install, open the tutorials in JupyterLab
    python3 run.py test    # create .venv, install, run the whole test suite (unit tests + notebooks)

Needs only Python 3.10+.  The first run creates ``.venv/`` next to this file and installs PyTorch
(the CPU-only build unless you ask otherwise, see below) and the package; later runs reuse it.

Environment variables:
    TUTOR_TORCH_INDEX   pip index for PyTorch (default: PyTorch's CPU-only wheel index on Linux and
                        Windows, PyPI on macOS).  Set it to https://download.pytorch.org/whl/cu124
                        (or another CUDA index) for a GPU build.
    TUTOR_VENV          where to create the virtual environment (default: .venv).
Extra arguments after ``test`` go to pytest (e.g. ``python3 run.py test tests/test_meta.py -x``).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TORCH = "torch>=2.3,<2.15"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def sh(*cmd, **kw) -> int:
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.call([str(c) for c in cmd], **kw)


def python_in(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_env(extras: str) -> Path:
    if sys.version_info < (3, 10):  # noqa: UP036 (run.py may be started by an older Python)
        sys.exit(f"tutor needs Python 3.10 or newer; this is {platform.python_version()}")
    env = Path(os.environ.get("TUTOR_VENV", ROOT / ".venv"))
    py = python_in(env)
    if not py.exists():
        venv.EnvBuilder(with_pip=True).create(env)
    has_torch = subprocess.call([str(py), "-c", "import torch"], stderr=subprocess.DEVNULL) == 0
    if not has_torch:
        # 1) a wheel that pip is already configured to find offline (e.g. PIP_FIND_LINKS), no deps yet
        ok = sh(py, "-m", "pip", "install", "--no-index", "--no-deps", TORCH,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0
        if not ok:
            # 2) the CPU-only build (about 200 MB instead of several GB of CUDA libraries)
            index = os.environ.get("TUTOR_TORCH_INDEX") or (None if sys.platform == "darwin" else CPU_INDEX)
            extra = ["--index-url", index, "--extra-index-url", "https://pypi.org/simple"] if index else []
            if sh(py, "-m", "pip", "install", "--timeout", "60", "--retries", "2", TORCH, *extra) != 0:
                sys.exit("could not install PyTorch; see README.md (Installing PyTorch)")
    # the package itself (torch's own dependencies are installed here too)
    if sh(py, "-m", "pip", "install", "-q", "-e", f"{ROOT}[{extras}]" if extras else str(ROOT)) != 0:
        sys.exit("pip install failed")
    return py


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("lab", "test"):
        print(__doc__)
        return 2
    if argv[0] == "lab":
        py = ensure_env("")
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        extra = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []   # containers run as root
        return sh(py, "-m", "jupyter", "lab", str(ROOT / "notebooks"), *extra, *argv[1:], env=env, cwd=ROOT)
    py = ensure_env("test")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}
    return sh(py, "-m", "pytest", "--nbval-lax", "--nbval-current-env", *argv[1:], env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
