#!/usr/bin/env python3
"""Set up everything and run tutor -- the only two commands you need:

    python3 run.py lab     # create .venv, install, open the tutorials in JupyterLab
    python3 run.py test    # create .venv, install, run the whole test suite (unit tests + notebooks
                           # + the browser test); `test --device cuda` runs the device tests on a GPU

Also (called by the commands above or by CI, rarely needed by hand):
    python3 run.py settings [PREFIX]   # write JupyterLab's overrides.json into PREFIX (default: .venv)
    python3 run.py binder-check        # rehearse the Binder build in a fresh venv and run notebook 00
    python3 run.py book [--serve]      # build the course book (static offline HTML, every notebook executed)
                                       # into _build/book/; --serve shows it on http://127.0.0.1:8000/

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

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
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


def venv_dir() -> Path:
    """``TUTOR_VENV`` or ``.venv`` next to this file; an empty or blank value counts as unset (it would
    otherwise name the current folder and put a venv into the checkout root)."""
    raw = os.environ.get("TUTOR_VENV", "").strip()
    if not raw:
        return ROOT / ".venv"
    env = Path(raw).expanduser()
    if env.resolve() in (ROOT, Path.cwd().resolve()) or (env.exists() and not env.is_dir()):
        sys.exit(f"TUTOR_VENV={raw!r} names the checkout or the current folder, or a file; it must name a folder "
                 "for the virtual environment (e.g. .venv), or be unset")
    return env


DEVICES = ("cpu", "cuda", "mps", "auto")


def ensure_env(extras: str) -> Path:
    if sys.version_info < (3, 10):  # noqa: UP036 (run.py may be started by an older Python)
        sys.exit(f"tutor needs Python 3.10 or newer; this is {platform.python_version()}")
    env = venv_dir()
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


# JupyterLab settings for a course: .py notebooks open as notebooks (jupytext) by a double-click, and no
# news or update checks (an offline classroom does not want them).  Written as overrides.json into the
# environment's settings folder (JupyterLab's documented place for defaults); users can still change them.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}},
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


def write_lab_settings(prefix: Path) -> Path:
    """Merge LAB_SETTINGS into ``<prefix>/share/jupyter/lab/settings/overrides.json`` (other keys kept)."""
    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    current = {}
    if path.exists():
        try:
            current = json.loads(path.read_text() or "{}")
        except json.JSONDecodeError:
            backup = path.with_suffix(".json.bak")
            shutil.copy2(path, backup)          # never destroy a user's file, even a broken one
            print(f"note: {path} was not valid JSON; kept a copy as {backup}")
    for plugin, values in LAB_SETTINGS.items():
        current[plugin] = {**current.get(plugin, {}), **values}
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path


def env_prefix(py: Path) -> Path:
    return Path(subprocess.check_output([str(py), "-c", "import sys; print(sys.prefix)"], text=True).strip())


def index_reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a package index answers at all (a quick probe before pip retries every package)."""
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=timeout).close()
        return True
    except Exception:
        return False


def binder_check() -> int:
    """Do what Binder's builder does, in a fresh venv: install binder/requirements.txt (the same torch
    version from this machine's pip configuration when PyTorch's CPU index is unreachable), run
    binder/postBuild, then execute notebook 00 headless under binder/start."""
    with tempfile.TemporaryDirectory(prefix="tutor-binder-") as tmp:
        env_dir, home = Path(tmp) / "env", Path(tmp) / "home"
        home.mkdir()
        venv.EnvBuilder(with_pip=True).create(env_dir)
        py = python_in(env_dir)
        bin_dir = str(py.parent)
        env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "HOME": str(home),
               "VIRTUAL_ENV": str(env_dir), "TUTOR_CACHE": str(Path(tmp) / "cache")}
        req = ROOT / "binder" / "requirements.txt"
        if not index_reachable(CPU_INDEX) or \
                sh(py, "-m", "pip", "install", "-q", "--timeout", "30", "--retries", "1", "-r", req, env=env) != 0:
            # offline from PyTorch's index: the pinned version without the +cpu label, from local wheels
            lines = [ln.replace("+cpu", "") for ln in req.read_text().splitlines()
                     if not ln.strip().startswith("--extra-index-url")]
            fallback = Path(tmp) / "requirements-offline.txt"
            fallback.write_text("\n".join(lines) + "\n")
            print("PyTorch's CPU index is unreachable: installing the same torch version from local wheels")
            if sh(py, "-m", "pip", "install", "-q", "-r", fallback, env=env) != 0:
                print("binder-check: could not install binder/requirements.txt")
                return 1
        if sh("bash", ROOT / "binder" / "postBuild", env=env, cwd=ROOT) != 0:
            print("binder-check: binder/postBuild failed")
            return 1
        nb = Path(tmp) / "00_foundations.ipynb"
        if sh(py, "-m", "jupytext", "--to", "ipynb", "-o", nb, ROOT / "notebooks" / "00_foundations.py", env=env) != 0:
            return 1
        run_env = {**env, "TUTOR_HEADLESS": "1", "TUTOR_PROGRESS": "0", "MPLBACKEND": "Agg", "TUTOR_NO_NETWORK": "1"}
        code = sh("bash", ROOT / "binder" / "start", py, "-m", "jupyter", "nbconvert", "--to", "notebook",
                  "--execute", "--ExecutePreprocessor.timeout=900", "--output", Path(tmp) / "executed.ipynb",
                  nb, env=run_env, cwd=ROOT / "notebooks")
        print("binder-check:", "notebook 00 ran under binder/start" if code == 0 else "notebook 00 FAILED")
        return code


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("lab", "test", "settings", "binder-check", "book"):
        print(__doc__)
        return 2
    if argv[0] == "settings":
        if len(argv) > 2:
            sys.exit(f"settings takes at most one argument (PREFIX), got {len(argv) - 1}: {' '.join(argv[1:])}")
        prefix = Path(argv[1]) if len(argv) > 1 else env_prefix(ensure_env(""))
        print("wrote", write_lab_settings(prefix))
        return 0
    if argv[0] == "binder-check":
        if len(argv) > 1:
            sys.exit(f"binder-check takes no arguments, got: {' '.join(argv[1:])}")
        return binder_check()
    if argv[0] == "book":                      # book/build.py checks its own arguments (--serve, --port)
        py = ensure_env("book")
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        return sh(py, ROOT / "book" / "build.py", *argv[1:], env=env, cwd=ROOT)
    if argv[0] == "lab":
        py = ensure_env("")
        write_lab_settings(env_prefix(py))
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        extra = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []   # containers run as root
        return sh(py, "-m", "jupyter", "lab", str(ROOT / "notebooks"), *extra, *argv[1:], env=env, cwd=ROOT)
    args = argv[1:]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}
    if "--device" in args:                     # python3 run.py test --device cuda
        i = args.index("--device")
        if i + 1 >= len(args):
            sys.exit("--device needs a value, e.g. --device cuda")
        name = args[i + 1].strip().lower()
        if name.split(":")[0] not in DEVICES or (":" in name and not (name.startswith("cuda:")
                                                                      and name[5:].isdigit())):
            sys.exit(f"--device must be one of {', '.join(DEVICES)} or cuda:N, got {args[i + 1]!r}")
        env["TUTOR_TEST_DEVICE"] = name
        args = args[:i] + args[i + 2:] or ["tests/test_device.py"]
    py = ensure_env("test")
    write_lab_settings(env_prefix(py))        # the browser test checks that notebooks open as notebooks
    return sh(py, "-m", "pytest", "--nbval-lax", "--nbval-current-env", *args, env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
