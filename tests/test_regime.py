"""Regime maps: paired differences and Student-t intervals against a hand computation; the JSON shape."""

import hashlib
import json
import math

import matplotlib
import pytest

from tutor.experiments import load_results
from tutor.experiments.regime import check_regime, paired_differences, regime_map, summarise_regime

matplotlib.use("Agg")

METHOD = {1: [0.70, 0.72, 0.74], 5: [0.60, 0.66, 0.65]}
BASE = {1: [0.70, 0.71, 0.75], 5: [0.50, 0.55, 0.58]}


def make(**kw):
    args = dict(factor="imbalance ratio", values=[1, 5], method_scores=METHOD, baseline_scores=BASE, method="M",
                baseline="B", metric="accuracy", higher_is_better=True, prediction="gain grows with imbalance")
    args.update(kw)
    return regime_map(**args)


def test_paired_differences_and_t_interval_by_hand():
    m = make()
    assert m["per_seed"]["5"] == pytest.approx([0.10, 0.11, 0.07])
    p1, p5 = summarise_regime(m)
    # by hand at ratio 5: mean 0.28/3, sd of (0.10, 0.11, 0.07) = sqrt(((0.0067)^2 + (0.0167)^2 + (0.0233)^2) / 2)
    d = [0.10, 0.11, 0.07]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    t2 = 4.302652729911275                               # Student-t 97.5% quantile, 2 degrees of freedom
    assert p5.mean == pytest.approx(mean) and p5.ci95 == pytest.approx(t2 * sd / math.sqrt(3), rel=1e-6)
    assert p5.n_seeds == 3 and p5.excludes_zero and p5.gain > 0
    assert p1.mean == pytest.approx(0.0) and not p1.excludes_zero


def test_lower_is_better_flips_the_sign_of_the_gain():
    m = make(higher_is_better=False)
    assert summarise_regime(m)[1].gain == pytest.approx(-summarise_regime(m)[1].mean)


@pytest.mark.parametrize("kw, match", [
    (dict(prediction=" "), "prediction"),
    (dict(values=[1, 25]), "25"),
    (dict(baseline_scores={1: [0.7, 0.7], 5: [0.5, 0.5, 0.5]}), "one score per seed"),
    (dict(method_scores={1: [0.7, float("nan"), 0.7], 5: [0.6, 0.6, 0.6]}), "non-finite"),
])
def test_bad_regime_inputs_are_named(kw, match):
    with pytest.raises((ValueError, KeyError), match=match):
        make(**kw)


def test_check_regime_names_the_missing_key_and_accepts_a_list():
    m = make()
    check_regime([m, m])
    bad = dict(m)
    del bad["baseline"]
    with pytest.raises(ValueError, match="baseline"):
        check_regime(bad)
    with pytest.raises(ValueError, match=r"regime\[1\]"):
        check_regime([m, {**m, "per_seed": {"1": [0.1]}}])
    with pytest.raises(ValueError, match="non-empty"):
        check_regime([])
    with pytest.raises(ValueError, match="paired_differences|at least one"):
        paired_differences([], [])


def test_load_results_checks_the_regime_shape(tmp_path):
    good = {"runs": [], "regime": make()}
    bad = {"runs": [], "regime": {**make(), "per_seed": {"1": []}}}
    for name, rec in (("good.json", good), ("bad.json", bad)):
        (tmp_path / name).write_text(json.dumps(rec))
    sums = "".join(f"{hashlib.sha256((tmp_path / n).read_bytes()).hexdigest().upper()}  {n}\n"
                   for n in ("good.json", "bad.json"))
    (tmp_path / "SHA256SUMS").write_text(sums)                     # upper-case digests are accepted too
    assert load_results("good.json", tmp_path)["regime"]["factor"] == "imbalance ratio"
    with pytest.raises(ValueError, match="malformed regime map"):
        load_results("bad.json", tmp_path)


def test_regime_plot_draws_band_zero_line_and_operating_point():
    from tutor.viz import regime_plot

    fig = regime_plot(make(), operating_point=5)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "imbalance ratio"
    assert any(line.get_ydata()[0] == 0 for line in ax.lines)                     # the zero line
    assert any(list(line.get_xdata()) == [5, 5] for line in ax.lines)             # the operating point
    assert len(ax.collections) >= 3                                               # band + seed dots
    fig2 = regime_plot({**make(values=[1, 5]), "values": [1, 5]}, operating_point=None)
    assert fig2.axes[0].get_title().startswith("regime map")
