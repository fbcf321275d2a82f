"""Course kit: build student copies of the notebooks with the solution cells removed.

    python -m tutor.course student notebooks/ student/        # .py (jupytext) sources -> student/
    python -m tutor.course student notebooks/ student/ --ipynb  # also write .ipynb copies

A cell is a solution cell when it carries the tag ``solution`` (jupytext percent format:
``# %% tags=["solution"]``), in any case and with any surrounding spaces (``Solution``, ``solution ``).
A tag that merely *looks like* one of the course tags (``solutions``, ``soluton``, ``Exercises``,
``checks``) is refused with an error naming the notebook and the cell, before anything is written: an
instructor's typo must never leak an answer into the student copy.  The instructor copy is the notebook
itself (it runs under the tests).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext

__all__ = ["strip_solutions", "build_student_copies"]

SOLUTION_TAG = "solution"
COURSE_TAGS = ("solution", "exercise", "check")
PLACEHOLDER = "_Solution removed from the student copy: complete the exercise cell above._"


def course_tag(tag, where: str = "a cell") -> str | None:
    """The course tag a cell tag stands for (``"solution"``, ``"exercise"``, ``"check"``), matched
    case-insensitively and ignoring surrounding spaces; ``None`` for an unrelated tag (e.g. nbval's).

    Raises ``ValueError`` for a tag that looks like a course tag but is not one (``solutions``,
    ``soluton``, ``Exercises``): a typo would otherwise leak an answer into the student copy."""
    import difflib

    norm = str(tag).strip().lower()
    if norm in COURSE_TAGS:
        return norm
    if norm.startswith("nbval") or not norm:
        return None
    squashed = "".join(ch for ch in norm if ch.isalpha())
    near = difflib.get_close_matches(squashed, COURSE_TAGS, n=1, cutoff=0.7)
    if near or any(t in squashed or squashed.startswith(t[:5]) for t in COURSE_TAGS):
        guess = near[0] if near else next((t for t in COURSE_TAGS if t[:5] in squashed), "solution")
        raise ValueError(f"{where} has the tag {tag!r}, which looks like the course tag {guess!r} but is not one; "
                         f"the course tags are {list(COURSE_TAGS)} (any case). Fix the tag (nothing was written)")
    return None


def _is_solution(cell, where: str = "a cell") -> bool:
    return any(course_tag(t, where) == SOLUTION_TAG for t in cell.get("metadata", {}).get("tags", []))


def strip_solutions(notebook, name: str = "the notebook"):
    """Return a copy of a notebook (nbformat node) without cells tagged ``solution`` (any case); a tag
    that looks like a course tag but is not one raises ``ValueError`` (see :func:`course_tag`)."""
    import copy

    import nbformat

    nb = copy.deepcopy(notebook)
    cells = []
    for i, cell in enumerate(nb.cells):
        if _is_solution(cell, f"{name}, cell {i + 1},"):
            cells.append(nbformat.v4.new_markdown_cell(PLACEHOLDER))
        else:
            cells.append(cell)
    nb.cells = cells
    return nb


def _has_solutions(path: Path) -> bool:
    """Whether an existing file holds solution cells (an instructor notebook: never overwrite it)."""
    try:
        nb = jupytext.read(path)
        return any(_is_solution(c) for c in nb.cells)
    except Exception:
        return True                      # unreadable, or a tag like a solution tag: treat as precious


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
    stripped = [(f, strip_solutions(jupytext.read(f), str(f))) for f in files]   # every tag checked first
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for f, nb in stripped:
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
