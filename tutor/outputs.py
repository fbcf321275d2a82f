"""Writing results without losing anything a user has: one rule for every driver and checkpoint.

* A driver run without flags writes into ``runs/`` (relative to the working directory, ignored by git)
  under a fresh name, never into ``data/`` (the shipped, checksummed results and checkpoints).
* An explicit ``--out`` that names an existing file is refused unless ``--overwrite`` is given too;
  the path is checked (folder exists and is writable, file is not a folder) *before* any work starts,
  so a long run never ends in "cannot write".
* Every write is atomic: the bytes go to a temporary file in the same folder, then ``os.replace``
  renames it over the target -- an interrupted run leaves the old file intact, never half a file.
* Writing a results file into ``data/results/`` (explicitly: ``--out``, plus ``--overwrite`` for an existing
  file) updates or adds its line in ``SHA256SUMS`` in the same way, so the notebooks' checksum check stays
  consistent.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

__all__ = ["RUNS_DIR", "SHIPPED_DIRS", "add_output_arguments", "atomic_write_bytes", "atomic_write_json",
           "check_output_path", "dry_run_report", "resolve_output"]

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DIRS = (REPO / "data",)
RUNS_DIR = Path("runs")


def _is_shipped(path: Path) -> bool:
    path = path.resolve()
    return any(path == d or d in path.parents for d in SHIPPED_DIRS)


def check_output_path(path, *, overwrite: bool = False, setting: str = "--out") -> Path:
    """Check, before any work starts, that ``path`` can be written and that writing it loses nothing.

    Raises ``FileExistsError`` for an existing file without ``overwrite``, ``NotADirectoryError`` /
    ``FileNotFoundError`` for a missing folder, ``IsADirectoryError`` for a folder, ``PermissionError``
    for a folder that cannot be written. ``setting`` names the flag in the message.
    """
    path = Path(path)
    if str(path) in ("", "."):
        raise ValueError(f"{setting} must name a file, got {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"{setting} {path} is a folder; give a file name, e.g. {path / 'results.json'}")
    if path.exists() and not overwrite:
        where = "a shipped file (data/ is checksummed and read by the notebooks)" if _is_shipped(path) else "a file"
        raise FileExistsError(f"{setting} {path} is {where} that already exists; nothing was run. Choose another "
                              "path, or add --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"{setting} {path}: the folder {parent} does not exist; create it first "
                                "(nothing was run)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{setting} {path}: the folder {parent} is not writable (nothing was run)")
    return path


def resolve_output(out, default_name: str, *, overwrite: bool = False, setting: str = "--out") -> Path:
    """Where a driver writes: ``out`` when given (checked by :func:`check_output_path`), otherwise a
    fresh file ``runs/<stem>[-N]<suffix>`` (the folder is created; an existing run is never replaced)."""
    if out is not None:
        return check_output_path(out, overwrite=overwrite, setting=setting)
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    stem, suffix = Path(default_name).stem, Path(default_name).suffix
    candidate, n = RUNS_DIR / default_name, 1
    while candidate.exists():
        n += 1
        candidate = RUNS_DIR / f"{stem}-{n}{suffix}"
    return check_output_path(candidate, setting=setting)


def add_output_arguments(parser: argparse.ArgumentParser, default_name: str, *, flag: str = "--out") -> None:
    """``--out PATH`` (default: a fresh file in ``runs/``) and ``--overwrite`` for a driver's command line."""
    parser.add_argument(flag, default=None,
                        help=f"where to write (default: runs/{default_name}, never a shipped file; an existing "
                             "file is refused unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow replacing an existing output file (e.g. regenerating data/results/)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check every flag and the output path, print where the results would go, run nothing")


def dry_run_report(args, *paths) -> int:
    """For ``--dry-run``: say where a run would write, and that nothing ran (returns exit status 0)."""
    print("dry run: every flag is valid; a run would write", ", ".join(str(p) for p in paths),
          "(nothing was run or written)")
    return 0


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would: the replaced file's, or
        # 0666 less the umask for a new one (shipped results must stay readable by other users, e.g. on Binder)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _update_checksum(path)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path, record, **dump_kwargs) -> Path:
    """``json.dump(record)`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    buf = io.StringIO()
    json.dump(record, buf, **dump_kwargs)
    return atomic_write_bytes(path, buf.getvalue().encode())


def _update_checksum(path: Path) -> None:
    """When ``path`` sits next to a ``SHA256SUMS`` (``data/results/``), rewrite its line there, or add one if the
    file is new, so that ``load_results`` accepts it (atomically)."""
    sums = path.parent / "SHA256SUMS"
    if not sums.is_file() or path.name == "SHA256SUMS":
        return
    lines = sums.read_text().splitlines()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    new, found = [], False
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == path.name:
            new.append(f"{digest}  {path.name}")
            found = True
        else:
            new.append(line)
    if not found:
        new.append(f"{digest}  {path.name}")
    atomic_write_bytes(sums, ("\n".join(new) + "\n").encode())
