"""Nothing a user has is lost: drivers never write shipped files by default, check their output and
every flag before any work, and write atomically (``tutor.outputs``)."""

import hashlib
import importlib
import os
from pathlib import Path

import pytest
import torch

from tutor.outputs import atomic_write_json, check_output_path, resolve_output
from tutor.train import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DRIVERS = ["amtfl", "bayesian_taml", "cts_glyphs", "hyperdistill", "meta_dropout", "mvt", "mvt_world", "seq_reptile"]


def digest_tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_existing_file_is_refused_without_overwrite_and_replaced_atomically_with_it(tmp_path):
    target = tmp_path / "r.json"
    target.write_text('{"mine": 1}')
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output_path(target)
    assert target.read_text() == '{"mine": 1}'
    atomic_write_json(check_output_path(target, overwrite=True), {"new": 2})
    assert target.read_text() == '{"new": 2}'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]          # no temporary file left behind


def test_a_failed_write_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})                      # not JSON: fails while serialising
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_an_atomic_write_gets_the_mode_a_plain_write_would(tmp_path):
    old = os.umask(0o022)
    try:
        new = atomic_write_json(tmp_path / "new.json", {"a": 1})        # mkstemp alone would make it 0600
        assert new.stat().st_mode & 0o777 == 0o644
        kept = tmp_path / "kept.json"
        kept.write_text("{}")
        kept.chmod(0o640)
        atomic_write_json(kept, {"b": 2})                               # replacing keeps the file's own mode
        assert kept.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_writing_a_listed_results_file_updates_its_checksum_line(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "SHA256SUMS").write_text("0" * 64 + "  a.json\n" + "1" * 64 + "  b.json\n")
    atomic_write_json(tmp_path / "a.json", {"k": 1})
    lines = (tmp_path / "SHA256SUMS").read_text().splitlines()
    assert lines[0] == hashlib.sha256((tmp_path / "a.json").read_bytes()).hexdigest() + "  a.json"
    assert lines[1] == "1" * 64 + "  b.json"


@pytest.mark.parametrize("bad, error", [("missing/r.json", FileNotFoundError), (".", ValueError),
                                        ("folder", IsADirectoryError)])
def test_bad_output_paths_are_named_before_any_work(tmp_path, bad, error):
    (tmp_path / "folder").mkdir()
    with pytest.raises(error, match="--out"):
        check_output_path(bad if bad == "." else tmp_path / bad)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write a read-only folder")
def test_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            check_output_path(ro / "r.json")
    finally:
        ro.chmod(0o700)


def test_default_output_is_a_fresh_file_in_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = resolve_output(None, "x.json")
    first.write_text("run 1")
    second = resolve_output(None, "x.json")
    assert first == Path("runs/x.json") and second == Path("runs/x-2.json")


def test_save_checkpoint_never_replaces_a_checkpoint_unless_asked(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(2)}, {"steps": 1})
    with pytest.raises(FileExistsError, match="checkpoint path"):
        save_checkpoint(path, {"w": torch.zeros(2)}, {"steps": 2})
    assert load_checkpoint(path)[1]["steps"] == 1
    save_checkpoint(path, {"w": torch.zeros(2)}, {"steps": 2}, overwrite=True)
    assert load_checkpoint(path)[1]["steps"] == 2


@pytest.mark.parametrize("name", DRIVERS)
def test_a_driver_without_flags_touches_nothing_shipped(name, tmp_path, monkeypatch, capsys):
    """Every driver's default output is a fresh file in runs/; --dry-run parses every flag, resolves the
    output, and runs nothing. The shipped data/ folder is byte-identical afterwards."""
    driver = importlib.import_module(f"tutor.experiments.{name}")
    before = digest_tree(ROOT / "data")
    monkeypatch.chdir(tmp_path)
    assert driver.main(["--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "runs/" in said and "nothing was run" in said
    assert not any((tmp_path / "runs").iterdir())                       # nothing written
    assert digest_tree(ROOT / "data") == before


@pytest.mark.parametrize("name, shipped", [("amtfl", "results/amtfl_deep.json"),
                                           ("bayesian_taml", "results/bayesian_taml.json"),
                                           ("cts_glyphs", "results/cts_glyphs.json"),
                                           ("hyperdistill", "results/hyperdistill.json"),
                                           ("meta_dropout", "results/meta_dropout.json"),
                                           ("mvt", "results/mvt.json"),
                                           ("seq_reptile", "results/seq_reptile.json")])
def test_a_shipped_file_is_refused_before_any_work(name, shipped, capsys):
    driver = importlib.import_module(f"tutor.experiments.{name}")
    with pytest.raises(FileExistsError, match="shipped file"):
        driver.main(["--out", str(ROOT / "data" / shipped)])


def test_seq_reptile_pretrain_never_targets_the_shipped_checkpoint(tmp_path, monkeypatch, capsys):
    driver = importlib.import_module("tutor.experiments.seq_reptile")
    monkeypatch.chdir(tmp_path)
    assert driver.main(["pretrain", "--dry-run"]) == 0
    assert "runs/seq_reptile_mlm.pt" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="shipped file"):
        driver.main(["pretrain", "--out", str(ROOT / "data/checkpoints/seq_reptile_mlm.pt")])


@pytest.mark.parametrize("name, argv, flag", [
    ("amtfl", ["--steps", "0"], "--steps"),
    ("bayesian_taml", ["--n-test", "0"], "--n-test"),
    ("bayesian_taml", ["--mc", "0"], "--mc"),
    ("bayesian_taml", ["--methods", "MAMLL"], "--methods"),
    ("bayesian_taml", ["--reuse", "no_such.json"], "--reuse"),
    ("amtfl", ["--sigma-hard", "-1"], "--sigma-hard"),
    ("amtfl", ["--synthetic-seeds", "1000"], "--synthetic-seeds"),
    ("cts_glyphs", ["--budget", "0"], "--budget"),
    ("cts_glyphs", ["--seeds", "0", "1", "--tune-seed", "1"], "--tune-seed"),
    ("cts_glyphs", ["--horizons", "0"], "--horizons"),
    ("hyperdistill", ["--n-tasks", "-1"], "--n-tasks"),
    ("meta_dropout", ["--variants", "nope"], "--variants"),
    ("meta_dropout", ["--val-episodes", "0"], "--val-episodes"),
    ("meta_dropout", ["--add", "nope"], "--add"),
    ("meta_dropout", ["--shots", "1"], "--shots"),
    ("meta_dropout", ["--budget-steps", "1500"], "--budget-steps"),
    ("meta_dropout", ["--extend", "no_such.json", "--add", "shots"], "--extend"),
    ("mvt", ["--lr-grid", "nan"], "--lr-grid"),
    ("seq_reptile", ["--budget", "x"], "--budget"),
])
def test_bad_flags_are_named_before_any_work(name, argv, flag, tmp_path, monkeypatch, capsys):
    driver = importlib.import_module(f"tutor.experiments.{name}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        driver.main(argv)
    assert exit_.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
