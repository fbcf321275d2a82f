"""Smoke tests of every experiment driver at a tiny budget: they write the shipped results, so each
must run end to end and write the fields the notebooks read."""

import json

import pytest
import torch

from tutor.experiments import load_results, sha256_of


def test_amtfl_driver_writes_per_class_errors_the_synthetic_comparison_and_regime(tmp_path):
    from tutor.experiments import amtfl, load_results

    out = tmp_path / "amtfl.json"
    assert amtfl.main(["--seeds", "0", "--steps", "5", "--synthetic-seeds", "0", "1", "--sigma-hard", "0.5", "4",
                       "--synthetic-steps", "5", "--out", str(out)]) == 0
    (tmp_path / "SHA256SUMS").write_text(f"{sha256_of(out)}  amtfl.json\n")
    record = load_results("amtfl.json", tmp_path)
    assert set(record["errors"]) == set(amtfl.DEEP_METHODS)
    assert all(len(e) == 1 and len(e[0]) == len(amtfl.DEEP_COUNTS) for e in record["errors"].values())
    assert record["counts"] == list(amtfl.DEEP_COUNTS) and "command" in record and "date" in record
    assert set(record["synthetic"]) == {"0.5", "4.0"}
    level = record["synthetic"]["4.0"]
    assert set(level["rmse"]) == set(amtfl.SYNTHETIC_METHODS) == set(level["tuning"])
    assert all(len(r) == 2 and len(r[0]) == 12 for r in level["rmse"].values())
    assert level["hard"] == [False] * 6 + [True] * 6 and len(record["regime"]) == 5
    assert all(len(m["per_seed"][str(m["values"][0])]) == 2 for m in record["regime"])


def test_amtfl_tuning_never_touches_the_scored_seeds_and_flags_edges():
    from tutor.experiments.amtfl import AMTFLConfig, synthetic_comparison, tune_synthetic

    grids = {"STL": {"ridge": [0.1, 1.0]}, "GO-MTL": {"mu": [0.01], "lam": [1.0]},
             "AMTL": {"mu": [1.0], "lam": [0.1]}, "AMTFL": {"alpha": [1.0], "gamma": [0.1, 1.0]}}
    tuned = tune_synthetic(AMTFLConfig(steps=20), seeds=(1000,), grids=grids, extend=False, tasks=4, n_hard=2)
    assert {m: len(t["grid"]) for m, t in tuned.items()} == {"STL": 2, "GO-MTL": 1, "AMTL": 1, "AMTFL": 2}
    assert tuned["STL"]["on_edge"] == ["ridge"]                       # a 2-point grid: any choice is an edge
    assert tuned["GO-MTL"]["on_edge"] == [] and tuned["AMTFL"]["on_edge"] == ["gamma"]   # 1-point axes never count
    assert tuned["STL"]["chosen"] == min(tuned["STL"]["grid"], key=lambda t: t[1])[0]
    res = synthetic_comparison([0], AMTFLConfig(steps=20), tuned=tuned, tasks=4, n_hard=2)
    assert res["STL"][0].shape == (4,) and res["train_rmse"][0].shape == (4,)
    assert res["hard"].tolist() == [False, False, True, True]


def test_amtfl_tuning_extends_an_axis_whose_choice_sits_on_its_edge():
    from tutor.experiments.amtfl import MAX_EXTENSIONS, tune_synthetic

    grids = {"STL": {"ridge": [1e4, 3e4]}}                             # far too strong: the best lies below
    tuned = tune_synthetic(seeds=(1000,), grids=grids, tasks=4, n_hard=2)["STL"]
    ridges = sorted(s["ridge"] for s, _ in tuned["grid"])
    assert len(ridges) == 2 + MAX_EXTENSIONS and ridges[0] < 1e4      # grown downwards, by the grid's own ratio
    assert abs(ridges[0] - 1e4 / 3 ** MAX_EXTENSIONS) < 1.0
    assert tuned["chosen"]["ridge"] == min(ridges) and tuned["on_edge"] == ["ridge"]   # still on the edge: said so


def test_meta_dropout_driver_tunes_trains_and_scores(tmp_path):
    from tutor.experiments import meta_dropout

    out = tmp_path / "md.json"
    assert meta_dropout.main(["--seeds", "0", "--steps", "2", "--lr-grid", "0.1", "0.3", "--variants", "MAML",
                              "Meta-Dropout", "--val-episodes", "2", "--test-episodes", "3", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["tuning"]) == {"MAML", "Meta-Dropout"}
    assert {(r["variant"], r["S"]) for r in record["runs"]} == {("MAML", 1), ("Meta-Dropout", 1), ("Meta-Dropout", 10)}
    assert all(len(r["scores"]) == 3 for r in record["runs"])


def test_cts_glyphs_driver_records_checkpoints_tuning_and_regime(tmp_path):
    from tutor.experiments import cts_glyphs, load_results

    out = tmp_path / "cts.json"
    assert cts_glyphs.main(["--seeds", "1", "--budget", "8", "--horizons", "2", "--out", str(out)]) == 0
    (tmp_path / "SHA256SUMS").write_text(f"{sha256_of(out)}  cts.json\n")
    record = load_results("cts.json", tmp_path)                        # checks the regime shape too
    names = {cts_glyphs.method_name(m, 2) for m in cts_glyphs.METHODS}
    assert record["checkpoints"] == {"2": [0, 8, 40]} and set(record["results"]) == names
    assert set(record["tuning"]["chosen"]) == names and record["tune_seed"] == 0 and record["seeds"] == [1]
    for name, table in record["tuning"]["validation"].items():        # the choice is interior or a ladder end
        betas = sorted(float(b) for b in table)
        chosen = record["tuning"]["chosen"][name]
        assert chosen in betas and (betas[0] < chosen < betas[-1] or name in record["tuning"]["on_edge"]
                                    or chosen in (cts_glyphs.BETA_LADDER[0], cts_glyphs.BETA_LADDER[-1])
                                    or table[str(betas[0] if chosen == betas[0] else betas[-1])] is not None)
    assert [m["baseline"] for m in record["regime"]] == ["Reptile", "Reptile (at 20 K inner steps)",
                                                          "Reptile curriculum"]
    assert all(m["values"] == [2] and len(m["per_seed"]["2"]) == 1 for m in record["regime"])


def test_cts_glyphs_meta_train_uses_the_paper_modules_steps():
    """CTS with beta = 0 never moves phi; Reptile with K larger than the budget is refused (it would never
    move phi); CTS with beta > 0 does."""
    from tutor.experiments import cts_glyphs

    data = cts_glyphs.make_datasets(seed=0, tasks=2, test_tasks=1, val_tasks=1, ways=3)
    frozen = cts_glyphs.meta_train(data, "cts", 5, 6, beta=0.0, checkpoints=(6,))
    assert torch.equal(frozen[6], frozen[0])
    with pytest.raises(ValueError, match="budget=6 is below the first horizon 10"):     # no untrained "result"
        cts_glyphs.meta_train(data, "reptile", 10, 6, beta=0.5, checkpoints=(6,))
    moved = cts_glyphs.meta_train(data, "cts", 5, 6, beta=0.5, checkpoints=(6,))
    assert not torch.equal(moved[6], moved[0])
    with pytest.raises(ValueError, match="method must be"):
        cts_glyphs.meta_train(data, "leap", 5, 6)


def test_cts_glyphs_at_k1_cts_reptile_and_curriculum_are_one_method():
    """The K = 1 identity (a code check): one inner step, then phi moves by -beta (phi - mean theta) and the
    learners reset, whichever rule is used; a curriculum whose horizon cannot grow is Reptile."""
    from tutor.experiments import cts_glyphs

    data = cts_glyphs.make_datasets(seed=0, tasks=2, test_tasks=1, val_tasks=1, ways=3)
    runs = {m: cts_glyphs.meta_train(data, m, 1, 12, beta=0.7, checkpoints=(4, 12)) for m in ("reptile", "cts",
                                                                                              "curriculum")}
    for c in (4, 12):
        assert torch.allclose(runs["cts"][c], runs["reptile"][c]) and torch.allclose(runs["curriculum"][c],
                                                                                     runs["reptile"][c])
    assert cts_glyphs.curriculum_start(100) == 5 and cts_glyphs.curriculum_start(10) == 1
    longer = cts_glyphs.meta_train(data, "curriculum", 4, 30, beta=0.7, checkpoints=(12,), ramp=12)
    shorter = cts_glyphs.meta_train(data, "curriculum", 4, 12, beta=0.7, checkpoints=(12,), ramp=12)
    assert torch.equal(longer[12], shorter[12])                        # a longer budget extends the same run


def test_load_results_verifies_the_checksum(tmp_path):
    (tmp_path / "r.json").write_text('{"a": 1}')
    with pytest.raises(FileNotFoundError, match="no checksum"):
        load_results("r.json", tmp_path)
    (tmp_path / "SHA256SUMS").write_text(f"{sha256_of(tmp_path / 'r.json')}  r.json\n")
    assert load_results("r.json", tmp_path) == {"a": 1}
    (tmp_path / "r.json").write_text('{"a": 2}')
    with pytest.raises(ValueError, match="does not match its checksum"):
        load_results("r.json", tmp_path)
    for name in ("amtfl_deep.json", "meta_dropout.json", "cts_glyphs.json"):   # the shipped files are intact
        assert "command" in load_results(name)


def test_meta_dropout_driver_extends_a_results_file_with_controls_shots_lr_and_budget(tmp_path):
    """--extend reuses the table's runs and tuning, adds the parts, and writes the shots regime maps."""
    from tutor.experiments import meta_dropout
    from tutor.experiments.regime import check_regime

    base, out = tmp_path / "md.json", tmp_path / "md2.json"
    assert meta_dropout.main(["--seeds", "0", "1", "--steps", "2", "--lr-grid", "0.3", "--variants", "MAML",
                              "Meta-Dropout", "gate only", "--val-episodes", "2", "--test-episodes", "3",
                              "--out", str(base)]) == 0
    before = json.loads(base.read_text())
    assert meta_dropout.main(["--extend", str(base), "--add", "controls", "shots", "lr", "budget", "--seeds", "0", "1",
                              "--steps", "2", "--budget-steps", "4", "--lr-check", "0.5", "--val-episodes", "2",
                              "--test-episodes", "3", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["runs"][:len(before["runs"])] == [{**r, "shots": 1, "steps": 2} for r in before["runs"]]
    assert record["tuning"] == before["tuning"] and record["added"][0]["parts"] == ["controls", "shots", "lr", "budget"]
    got = {(r["variant"], r["S"], r["shots"], r["steps"], r.get("part")) for r in record["runs"][len(before["runs"]):]}
    assert {("MAML (wide)", 1, 1, 2, "controls"), ("gate + input-independent noise", 10, 1, 2, "controls")} <= got
    assert {("MAML", 1, 5, 2, "shots"), ("gate only", 1, 5, 2, "shots"), ("Meta-Dropout", 10, 5, 2, "shots"),
            (meta_dropout.KAPPA0, 1, 5, 2, "shots")} <= got
    assert {("MAML", 1, 1, 4, "budget"), ("Meta-Dropout", 10, 1, 4, "budget")} <= got
    assert set(record["lr_check"]["5"]["MAML"]) == {"0.3", "0.5"}
    check_regime(record["regime"])
    assert [m["method"] for m in record["regime"]] == ["Meta-Dropout (S=10)", "gate only"]
    assert all(m["values"] == [1, 5] and len(m["per_seed"]["5"]) == 2 for m in record["regime"])
    # the budget part's first chunk repeats the table's run of the same seed
    first = next(r for r in record["runs"] if r.get("part") == "budget" and r["variant"] == "MAML" and r["steps"] == 2)
    shipped = next(r for r in before["runs"] if r["variant"] == "MAML" and r["seed"] == 0)
    assert first["scores"] == shipped["scores"]
    with pytest.raises(ValueError, match="test episodes"):
        meta_dropout.main(["--extend", str(base), "--add", "controls", "--steps", "2", "--test-episodes", "4",
                           "--out", str(tmp_path / "x.json")])
