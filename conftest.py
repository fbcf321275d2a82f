"""Collect the jupytext notebooks (``notebooks/NN_*.py``) for nbval.

nbval only reads ``.ipynb``; each source is converted with jupytext into ``notebooks/.nbval/`` (an
ignored folder next to the sources) and handed to nbval.  Run with ``--nbval-lax`` (the README's
test command does): outputs are not compared, but every cell must run and every ``assert`` hold.
"""

import os
import re
from pathlib import Path

os.environ["TUTOR_NO_NETWORK"] = "1"
os.environ["TUTOR_HEADLESS"] = "1"
os.environ["TUTOR_WIDGET_SWEEP"] = "1"          # widgets also draw at every control's extremes
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["TUTOR_PROGRESS"] = "0"          # no progress bars: they flood the kernel's output channel

NOTEBOOK = re.compile(r"^\d\d_\w+\.py$")


def pytest_collect_file(file_path: Path, parent):
    if file_path.parent.name != "notebooks" or not NOTEBOOK.match(file_path.name):
        return None
    if not (parent.config.getoption("nbval_lax", False) or parent.config.getoption("nbval", False)):
        return None
    import jupytext

    build = file_path.parent / ".nbval"
    build.mkdir(exist_ok=True)
    target = build / file_path.with_suffix(".ipynb").name
    nb = jupytext.read(file_path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, target)
    item = _notebook_class().from_parent(parent, path=file_path)
    item.converted = target
    return item


def _notebook_class():
    from nbval.plugin import IPyNbFile

    class JupytextNotebook(IPyNbFile):
        """nbval's notebook collector, keyed by the ``.py`` source but reading its converted copy."""

        converted = None

        @property
        def fspath(self):
            import py

            return py.path.local(self.converted)

    return JupytextNotebook
