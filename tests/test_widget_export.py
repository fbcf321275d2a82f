"""A static export never hangs on a widget cell, with no environment flag set (issue 22 §5).

``jupytext --to ipynb --execute`` (nbconvert's executor, the same nbclient that papermill and the course
book's build use) runs ``tests/fixtures/widget_export.py`` -- a small notebook built with
``tutor.widgets`` -- ten times in a row, each under a short timeout, with ``TUTOR_*``, ``MPLBACKEND`` and
``JPY_SESSION_NAME`` removed from the environment.  Live ipywidgets executed with no front end make
nbclient wait for good in most runs; ``tutor.widgets`` must see that no widget front end is attached and
draw its static figure instead.  One more export inherits ``JPY_SESSION_NAME`` (as when an export is
started from a notebook cell in JupyterLab) and must also stay static.  Every real notebook is exported
the same way by the book's build (``python3 run.py book``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "widget_export.py"
RUNS = 10
TIMEOUT = 60            # seconds per export; one export takes a few seconds


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TUTOR_") and k not in ("MPLBACKEND", "JPY_SESSION_NAME", "JPY_PARENT_PID")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **extra}


def _export(tmp_path: Path, i: int, env: dict) -> dict:
    out = tmp_path / f"export{i}.ipynb"
    cmd = [sys.executable, "-m", "jupytext", "--to", "ipynb", "--execute", "-o", str(out), str(FIXTURE)]
    try:
        proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"export {i + 1} of {FIXTURE.name} hung (> {TIMEOUT} s) on a widget cell with no front end")
    assert proc.returncode == 0, f"export {i + 1} failed:\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text())


def _check_static(nb: dict, i: int) -> None:
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for cell in code[1:]:
        kinds = {k for o in cell["outputs"] for k in o.get("data", {})}
        assert "image/png" in kinds, f"export {i + 1}: a widget cell shows no static figure ({sorted(kinds)})"
        assert "application/vnd.jupyter.widget-view+json" not in kinds, \
            f"export {i + 1}: a live widget was built although no front end is attached"
    text = "".join("".join(o.get("text", "")) for o in code[-1]["outputs"])
    assert "headless: True" in text


def test_export_without_flags_never_hangs(tmp_path):
    env = _clean_env()
    for i in range(RUNS):
        _check_static(_export(tmp_path, i, env), i)


def test_export_started_from_a_notebook_cell_stays_static(tmp_path):
    # the exporting process inherits the session variable a Jupyter server gave the outer kernel
    _check_static(_export(tmp_path, RUNS, _clean_env(JPY_SESSION_NAME=str(tmp_path / "outer.ipynb"))), RUNS)
