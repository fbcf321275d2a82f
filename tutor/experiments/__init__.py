"""Experiment drivers shared by the notebooks and the scripts that precompute multi-seed results.

Each module here is runnable (``python -m tutor.experiments.<name> --help``) and writes its results
with the command, date and versions to ``data/results/``.  :func:`load_results` reads such a file
back after checking it against the SHA-256 recorded in ``data/results/SHA256SUMS``, so a notebook
never reports numbers from a file that was edited or damaged after our script wrote it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["RESULTS_DIR", "load_results", "sha256_of"]  # regime maps: tutor.experiments.regime

RESULTS_DIR = Path(__file__).resolve().parents[2] / "data" / "results"


def sha256_of(path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_results(name: str, directory=None) -> dict:
    """The JSON results ``<directory>/<name>`` (default ``data/results/``), verified by checksum.

    Raises ``FileNotFoundError`` when the file or its checksum line is missing and ``ValueError``
    when the file's SHA-256 differs from the one in ``SHA256SUMS`` (rerun the command recorded in
    ``data/README.md`` to regenerate it).
    """
    folder = Path(directory) if directory is not None else RESULTS_DIR
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"precomputed results {path} not found")
    sums = folder / "SHA256SUMS"
    expected = {}
    if sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                expected[parts[1].lstrip("*")] = parts[0]
    expected = {k: v.lower() for k, v in expected.items()}     # sha256sum writes lower case; accept either
    if name not in expected:
        raise FileNotFoundError(f"no checksum for {name} in {sums}; add the line `sha256sum {name}` prints")
    actual = sha256_of(path)
    if actual != expected[name]:
        raise ValueError(f"{path} does not match its checksum in {sums} (expected {expected[name][:12]}..., "
                         f"got {actual[:12]}...): the file was changed after our script wrote it; "
                         "regenerate it with the command in data/README.md")
    record = json.loads(path.read_text())
    if isinstance(record, dict) and "regime" in record:
        from tutor.experiments.regime import check_regime

        try:
            check_regime(record["regime"])
        except ValueError as e:
            raise ValueError(f"{path}: malformed regime map: {e}") from None
    return record
