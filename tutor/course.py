"""Course kit: build student copies of the notebooks with the solution cells removed.

    python -m tutor.course student notebooks/ student/        # .py (jupytext) sources -> student/
    python -m tutor.course student notebooks/ student/ --ipynb  # also write .ipynb copies

A cell is a solution cell when it carries the tag ``solution`` (jupytext percent format:
``# %% tags=["solution"]``).  The instructor copy is the notebook itself (it runs under the tests).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext

__all__ = ["strip_solutions", "build_student_copies"]

SOLUTION_TAG = "solution"
PLACEHOLDER = "_Solution removed from the student copy: complete the exercise cell above._"


def strip_solutions(notebook):
    """Return a copy of a notebook (nbformat node) without cells tagged ``solution``."""
    import copy

    import nbformat

    nb = copy.deepcopy(notebook)
    cells = []
    for cell in nb.cells:
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            cells.append(nbformat.v4.new_markdown_cell(PLACEHOLDER))
        else:
            cells.append(cell)
    nb.cells = cells
    return nb


def _has_solutions(path: Path) -> bool:
    """Whether an existing file holds solution cells (an instructor notebook: never overwrite it)."""
    try:
        nb = jupytext.read(path)
    except Exception:
        return True                      # unreadable: treat as precious
    return any(SOLUTION_TAG in c.get("metadata", {}).get("tags", []) for c in nb.cells)


def build_student_copies(source: Path, target: Path, ipynb: bool = False) -> list[Path]:
    """Write a solution-free copy of every ``*.py`` notebook in ``source`` to ``target``.

    Refuses a ``target`` that is ``source`` or lies inside it, and never overwrites a file that has
    solution cells (an instructor copy): both raise ``ValueError`` before anything is written.
    """
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise FileNotFoundError(f"source folder {source} does not exist")
    src, dst = source.resolve(), target.resolve()
    if dst == src or src in dst.parents:
        raise ValueError(f"target {target} is the source folder {source} or inside it: student copies would "
                         "replace the instructor notebooks; choose another folder, e.g. student/")
    files = sorted(source.glob("[0-9][0-9]_*.py"))
    if not files:
        raise FileNotFoundError(f"no notebooks (NN_name.py) found in {source}")
    outputs = [target / f.name for f in files] + ([(target / f.name).with_suffix(".ipynb") for f in files]
                                                  if ipynb else [])
    precious = [o for o in outputs if o.exists() and _has_solutions(o)]
    if precious:
        raise ValueError(f"refusing to overwrite {', '.join(map(str, precious))}: they contain solution cells "
                         "(instructor notebooks); move them away or choose another target folder")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        nb = strip_solutions(jupytext.read(f))
        out = target / f.name
        jupytext.write(nb, out, fmt="py:percent")
        written.append(out)
        if ipynb:
            jupytext.write(nb, out.with_suffix(".ipynb"))
            written.append(out.with_suffix(".ipynb"))
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutor.course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("student", help="write student copies without solution cells")
    s.add_argument("source", type=Path)
    s.add_argument("target", type=Path)
    s.add_argument("--ipynb", action="store_true", help="also write .ipynb files")
    args = parser.parse_args(argv)
    try:
        paths = build_student_copies(args.source, args.target, args.ipynb)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
