"""Bad input gets a clear error that names the setting; nothing a user has is ever destroyed.

Property-based tests (hypothesis) feed invalid values to samplers, learner and config constructors
and the training entry points and require a ``ValueError``/``TypeError`` whose message names the
argument; then one regression test per silent or unclear case found by the review (issue 14).
"""

import math
import zipfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tutor import checks
from tutor.data import EpisodeSampler, GaussianClassTasks, SinusoidTasks
from tutor.meta import MAML, ProtoNet, inner_loop
from tutor.nets import MLP, Conv4
from tutor.papers.amtfl import AMTFLConfig, DeepConfig
from tutor.papers.cts import run_cts, run_reptile
from tutor.papers.meta_dropout import MetaDropoutConfig
from tutor.train import EvalResult, compare, load_checkpoint, mean_ci, meta_train, save_checkpoint

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BAD_COUNTS = st.one_of(st.integers(max_value=0), st.floats(allow_nan=True).filter(lambda v: v != int(v) if
                       math.isfinite(v) else True), st.booleans(), st.text(max_size=3), st.none())
BAD_RATES = st.one_of(st.floats(max_value=-1e-9, allow_infinity=True), st.just(float("nan")),
                      st.just(float("inf")), st.text(max_size=3), st.none())


def _names(exc_info, *names):
    msg = str(exc_info.value)
    assert any(n in msg for n in names), f"the error does not name {names}: {msg}"


IMAGES = torch.rand(6, 5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@SETTINGS
@given(field=st.sampled_from(["ways", "shots", "queries"]), value=BAD_COUNTS)
def test_episode_sampler_rejects_bad_counts(field, value):
    kwargs = {"ways": 3, "shots": 1, "queries": 2, field: value}
    with pytest.raises((ValueError, TypeError)) as e:
        EpisodeSampler(IMAGES, range(6), **kwargs)
    _names(e, field)


@SETTINGS
@given(value=BAD_RATES)
def test_maml_rejects_bad_inner_lr(value):
    with pytest.raises((ValueError, TypeError)) as e:
        MAML(MLP(4, (3,), 2), inner_lr=value)
    _names(e, "inner_lr")


@SETTINGS
@given(field=st.sampled_from(["inner_steps", "eval_steps"]),
       value=BAD_COUNTS.filter(lambda v: v != 0 and v is not None))
def test_maml_rejects_bad_step_counts(field, value):
    with pytest.raises((ValueError, TypeError)) as e:
        MAML(MLP(4, (3,), 2), **{field: value})
    _names(e, field)


@SETTINGS
@given(field=st.sampled_from(["alpha", "gamma", "mu", "lam", "lr"]), value=BAD_RATES)
def test_amtfl_configs_reject_bad_strengths(field, value):
    for cls in (AMTFLConfig, DeepConfig):
        with pytest.raises((ValueError, TypeError)) as e:
            cls(**{field: value})
        _names(e, field)


@SETTINGS
@given(value=st.one_of(st.floats(max_value=-1e-9), st.just(float("nan")), st.just(float("inf"))))
def test_meta_dropout_config_rejects_bad_noise_scale(value):
    with pytest.raises(ValueError) as e:
        MetaDropoutConfig(noise_scale=value)
    _names(e, "noise_scale")


def _tiny():
    tasks = GaussianClassTasks(dim=6)

    class Sampler:
        def batch(self, n, gen):
            return [tasks.sample(3, 2, 2, gen=int(torch.randint(0, 10**6, (), generator=gen))) for _ in range(n)]

    learner = MAML(MLP(6, (8,), 3), inner_lr=0.3)
    return learner, learner.init(0), Sampler()


@settings(max_examples=25, deadline=None)
@given(field=st.sampled_from(["steps", "meta_batch", "eval_every", "lr", "clip", "time_budget"]),
       value=st.one_of(st.integers(max_value=-1), st.just(float("nan")), st.just(-0.5), st.just(2.5),
                       st.text(min_size=1, max_size=2)))
def test_meta_train_rejects_bad_settings(field, value):
    if field in ("lr", "clip", "time_budget") and isinstance(value, int) and value > 0:
        return
    learner, meta, sampler = _tiny()
    if field == "steps" and value == 2.5 or field in ("lr", "time_budget", "clip") and value == 2.5:
        return                       # 2.5 is a valid rate/budget; non-integer steps are checked below
    with pytest.raises((ValueError, TypeError)) as e:
        meta_train(learner, meta, sampler, **{"steps": 2, field: value}, progress=False)
    _names(e, field)


@SETTINGS
@given(value=st.one_of(st.floats(max_value=-1e-9), st.just(float("nan")), st.integers(max_value=0),
                       st.just(1.5)))
def test_cts_rejects_bad_horizons_and_rates(value):
    quad = lambda x: (x ** 2).sum(-1)  # noqa: E731
    phi = torch.zeros(1, 2, dtype=torch.float64)
    with pytest.raises((ValueError, TypeError)) as e:
        run_cts(quad, phi, 2, value, 0.1, 0.1, 10)
    _names(e, "K")
    if not (value >= 0):                                                  # negative or NaN: a bad rate too
        with pytest.raises((ValueError, TypeError)) as e:
            run_cts(quad, phi, 2, 5, value, 0.1, 10)
        _names(e, "alpha")


# ---------------------------------------------------------------- the silent cases, one by one
def test_divergence_with_a_finite_loss_is_stopped():
    """A loss that stays finite but grows by orders of magnitude stops the run, naming the rates."""
    from tutor.meta import MetaLearner

    class Growing(MetaLearner):
        inner_lr = 0.4

        def outer_step(self, meta, optimizer, episodes, **kw):
            self.calls = getattr(self, "calls", 0) + 1
            return {"loss": 1.5 * 10.0 ** max(0, self.calls - 5)}      # 1.5 for 5 steps, then x10 per step

    class Sampler:
        def batch(self, n, gen):
            return []

    learner = Growing()
    with pytest.raises(FloatingPointError, match=r"diverged.*lr=0\.001, inner_lr=0\.4"):
        meta_train(learner, {"w": torch.zeros(1, requires_grad=True)}, Sampler(), steps=50, progress=False)
    assert learner.calls == 12                     # 1.5e7 > 1e6 x 1.5 (the first loss): stopped at once
    # and a real run with a huge meta learning rate stops with a message naming a rate
    tasks = SinusoidTasks()

    class Sinusoids:
        def batch(self, n, gen):
            return tasks.batch(n, 5, 5, gen=int(torch.randint(0, 10**6, (), generator=gen)))

    maml = MAML(MLP(1, (40, 40), 1), inner_lr=0.01, inner_steps=1, loss="mse")
    with pytest.raises(FloatingPointError, match="lr"):
        meta_train(maml, maml.init(0), Sinusoids(), steps=200, lr=50.0, progress=False)


def test_amtfl_divergence_is_stopped():
    from tutor.data.multitask import synthetic_regression
    from tutor.papers.amtfl import fit_amtfl

    with pytest.raises(FloatingPointError, match="lr="):
        fit_amtfl(synthetic_regression(0), AMTFLConfig(lr=1e4, steps=300))


def test_loss_and_target_mismatches_are_refused():
    x = torch.randn(6, 4)
    reg = MLP(4, (5,), 1).init(0)
    with pytest.raises(ValueError, match=r"output shape \(6, 1\)"):
        inner_loop(MLP(4, (5,), 1), reg, x, torch.randn(6), 1, 0.1, loss="mse")       # (n,) vs (n, 1)
    with pytest.raises(TypeError, match="loss='ce'"):
        inner_loop(MLP(4, (5,), 3), MLP(4, (5,), 3).init(0), x, torch.arange(6) % 3, 1, 0.1, loss="mse")
    with pytest.raises(TypeError, match="loss='mse'"):
        inner_loop(MLP(4, (5,), 3), MLP(4, (5,), 3).init(0), x, torch.randn(6), 1, 0.1, loss="ce")
    with pytest.raises(ValueError, match=r"0\.\.2"):
        inner_loop(MLP(4, (5,), 3), MLP(4, (5,), 3).init(0), x, torch.arange(6), 1, 0.1)   # label 5 of 3 ways


def test_architecture_mismatches_are_refused():
    narrow = MLP(4, (5,), 3).init(0)
    with pytest.raises(ValueError, match="another width"):
        MLP(4, (7,), 3)(narrow, torch.randn(2, 4))
    learner = MAML(Conv4(image_size=8, hidden=4, ways=5, blocks=2))
    ep = EpisodeSampler(IMAGES, range(6), 3, 1, 2).sample(0)
    with pytest.raises(ValueError, match="3-way"):
        learner.evaluate(learner.init(0), ep)


def test_unvalidated_settings_are_now_validated():
    with pytest.raises(ValueError, match="budget=3 is below the horizon K=5"):
        run_reptile(lambda x: (x ** 2).sum(-1), torch.zeros(1, 2), 2, 5, 0.1, 0.1, 3)
    with pytest.raises(ValueError, match="mc_samples"):
        inner_loop(MLP(4, (5,), 3), MLP(4, (5,), 3).init(0), torch.randn(3, 4), torch.arange(3), 1, 0.1, mc_samples=0)
    with pytest.raises(ValueError, match="inner learning rate"):
        inner_loop(MLP(4, (5,), 3), MLP(4, (5,), 3).init(0), torch.randn(3, 4), torch.arange(3), 1, -0.1)
    with pytest.raises(ValueError, match="size"):
        from tutor.data.glyphs import GlyphBank

        GlyphBank(torch.rand(2, 3, 1, 28, 28), ["a", "b"], ["LATIN", "LATIN"]).downsample(0)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="class_std"):
            GaussianClassTasks(class_std=bad)
    with pytest.raises(ValueError, match="same metric"):
        compare(EvalResult([0.5, 0.6], 0.55, 0.1, "accuracy"), EvalResult([1.0, 2.0], 1.5, 0.1, "loss"))
    learner, meta, _ = _tiny()
    with pytest.raises(ValueError, match="meta-batch is empty"):
        learner.meta_gradient(meta, [])
    ep = GaussianClassTasks(dim=6).sample(3, 2, 2, gen=0)
    with pytest.raises(ValueError, match="NaN"):
        learner.evaluate(meta, ep.__class__(ep.support_x * float("nan"), ep.support_y, ep.query_x, ep.query_y,
                                            ep.classes))
    with pytest.raises(ValueError, match="query set is empty"):
        learner.evaluate(meta, ep.__class__(ep.support_x, ep.support_y, ep.query_x[:0], ep.query_y[:0], ep.classes))
    with pytest.raises(ValueError, match="at least 2"):
        mean_ci([0.3])


def test_glyph_cache_of_the_wrong_shape_or_corrupt_is_rebuilt(tmp_path, monkeypatch):
    import numpy as np

    from tutor.data import glyphs

    monkeypatch.setenv("TUTOR_CACHE", str(tmp_path))
    calls = []
    fake = glyphs.GlyphBank(torch.rand(2, 3, 1, 28, 28), ["a", "b"], ["LATIN", "LATIN"])
    monkeypatch.setattr(glyphs, "build_glyphs", lambda kind, seed=0: calls.append(kind) or fake)
    first = glyphs.load_glyphs("id")
    path = next(tmp_path.glob("glyphs-id-*.npz"))
    np.savez_compressed(path, images=np.zeros((2, 3, 1, 14, 14), np.uint8), chars=np.array(["a", "b"]),
                        scripts=np.array(["L", "L"]))                      # well-formed, wrong shape
    glyphs.load_glyphs("id")
    path.write_bytes(path.read_bytes()[:40])                               # truncated
    glyphs.load_glyphs("id")
    with zipfile.ZipFile(path, "w") as z:                                  # a zip without the arrays
        z.writestr("other.npy", b"junk")
    glyphs.load_glyphs("id")
    assert calls == ["id"] * 4 and first.images.shape == (2, 3, 1, 28, 28)
    monkeypatch.setenv("TUTOR_CACHE", "")
    assert glyphs.cache_dir().name == "tutor"                              # empty: the default, not the cwd


def test_checkpoints_garbage_and_unloadable_info(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a tutor checkpoint or is corrupted") as e:
        load_checkpoint(bad)
    assert "weights_only=False" not in str(e.value)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="corrupted"):
        load_checkpoint(empty)
    with pytest.raises(TypeError, match="info"):
        save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(2)}, {"config": MetaDropoutConfig()})
    save_checkpoint(tmp_path / "ok.pt", {"w": torch.ones(2)}, {"steps": 3, "notes": ["a", 1.5, None]})
    assert load_checkpoint(tmp_path / "ok.pt")[1] == {"steps": 3, "notes": ["a", 1.5, None]}


def test_environment_variables_are_read_strictly(monkeypatch):
    import tutor
    from tutor.train import progress_enabled

    monkeypatch.setenv("TUTOR_THREADS", "abc")
    with pytest.raises(ValueError, match="TUTOR_THREADS"):
        tutor.configure_threads()
    monkeypatch.setenv("TUTOR_THREADS", "1")
    for value, expected in (("false", False), ("OFF", False), ("0", False), ("true", True), ("1", True)):
        monkeypatch.setenv("TUTOR_PROGRESS", value)
        assert progress_enabled() is expected
    monkeypatch.setenv("TUTOR_PROGRESS", "maybe")
    with pytest.raises(ValueError, match="TUTOR_PROGRESS"):
        progress_enabled()
    with pytest.raises(ValueError, match="'cpu', 'cuda'"):
        tutor.get_device("gpu")
    monkeypatch.setenv("TUTOR_DEVICE", "tpu")
    with pytest.raises(ValueError, match="TUTOR_DEVICE"):
        tutor.get_device()


def test_self_checks_compute_the_reference_first_and_explain_wrong_types(capsys):
    def mutating(x):
        x += 1                          # changes its input in place, and gives the right answer
        return x * 2 - 2

    assert checks.check_function(mutating, lambda x: x * 2, [(torch.ones(3),)])
    assert not checks.check_function(lambda x: None, lambda x: x * 2, [(torch.ones(3),)])
    assert "did you forget `return`" in capsys.readouterr().out
    assert not checks.check_function(lambda x: "six", lambda x: x * 2, [(torch.ones(3),)])
    assert "string" in capsys.readouterr().out
    assert not checks.check_function(lambda x: [1, 2], lambda x: x * 2, [(torch.ones(3),)])
    assert not checks.check_function(lambda x: x[:2], lambda x: x * 2, [(torch.ones(3),)])
    assert "shape (2,)" in capsys.readouterr().out
    assert checks.check_function(lambda x: x * float("nan"), lambda x: x * float("nan"), [(torch.ones(2),)])
    with pytest.raises(ValueError, match="at least one test case"):
        checks.check_function(lambda x: x, lambda x: x, [])


def test_threads_and_loop_give_the_same_gradients():
    """The same meta-gradient in exact arithmetic; the two modes may sum the tasks' gradients in another order
    (and threads may pick other kernels), so they agree to float64 rounding, not bit for bit."""
    learner = MAML(MLP(6, (8,), 3), inner_lr=0.3, inner_steps=2)
    meta = learner.init(0, dtype=torch.float64)
    eps = [GaussianClassTasks(dim=6).sample(3, 2, 2, gen=s).to(dtype=torch.float64) for s in range(7)]
    a, _ = learner.meta_gradient(meta, eps, "loop")
    b, _ = learner.meta_gradient(meta, eps, "threads", workers=3)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=1e-12, atol=1e-12 * x.abs().max().item())


def test_network_guard_covers_dns_and_udp():
    import socket

    import tutor._netguard as guard

    with pytest.raises(guard.NetworkAccessError, match="looking up"):
        socket.getaddrinfo("example.com", 80)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(guard.NetworkAccessError, match="sending"):
            s.sendto(b"x", ("192.0.2.1", 53))
    finally:
        s.close()
    assert socket.getaddrinfo("localhost", 80)                              # loopback still works


def test_protonet_rejects_a_network_with_a_head():
    with pytest.raises(ValueError, match="ways=0"):
        ProtoNet(Conv4(image_size=8, hidden=4, ways=5, blocks=2))


# ================================================================ issue 22: the four newer papers, cldr, drivers
# Every bad input below must raise an error whose message names the argument (and says what is allowed);
# the VALID edge inputs at the end must keep working, so validation does not become too strict.
import argparse  # noqa: E402
import dataclasses  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

from tutor.data import cldr  # noqa: E402
from tutor.divergence import DivergenceGuard, check_loss  # noqa: E402
from tutor.papers import bayesian_taml as btaml  # noqa: E402
from tutor.papers import hyperdistill as hd  # noqa: E402
from tutor.papers import mvt as mvt_mod  # noqa: E402
from tutor.papers import seq_reptile as sr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DRIVERS = ["amtfl", "bayesian_taml", "cts_glyphs", "hyperdistill", "meta_dropout", "mvt", "seq_reptile"]
NOT_A_COUNT = st.one_of(st.integers(max_value=0), st.floats(allow_nan=True).filter(
    lambda v: not math.isfinite(v) or v != int(v)), st.booleans(), st.text(max_size=3), st.none())
NOT_A_RATE = st.one_of(st.floats(max_value=0.0), st.just(float("nan")), st.just(float("inf")),
                       st.text(max_size=3), st.none())


def _refused(fn, *names, errors=(ValueError, TypeError)):
    """``fn()`` must raise one of ``errors`` whose message names one of ``names``."""
    with pytest.raises(errors) as e:
        fn()
    _names(e, *names)
    return str(e.value)


# ------------------------------------------------------------------ Bayesian TAML
@SETTINGS
@given(field=st.sampled_from(["inner_steps", "eval_steps", "mc_test", "k_max", "inner_lr", "beta_kl",
                              "omega", "alpha"]), data=st.data())
def test_taml_config_rejects_bad_values(field, data):
    if field in ("inner_lr", "beta_kl"):
        value = data.draw(NOT_A_RATE.filter(lambda v: field == "inner_lr" or not (isinstance(v, float) and v == 0)))
    elif field in ("omega", "alpha"):
        value = data.draw(st.one_of(st.text(max_size=5), st.none(), st.integers()))
    else:
        value = data.draw(NOT_A_COUNT.filter(lambda v: not (field in ("inner_steps", "eval_steps") and v == 0
                                                            and not isinstance(v, bool))))
    _refused(lambda: btaml.TamlConfig(**{field: value}), field)


def _taml(name="Bayesian TAML", **kw):
    cfg = btaml.preset(name, k_max=8, instance_dims=(6, 5), class_dims=(7, 3), head_hidden=4, **kw)
    return btaml.TAML(MLP(6, (5, 4), 1, head_init="zero"), cfg)


def _taml_task(seed=0):
    ep = GaussianClassTasks(6).sample(3, [1, 3, 2], 3, seed)
    return dataclasses.replace(ep, seed=torch.tensor(seed + 11))


TAML_LEARNER = _taml()
TAML_META = TAML_LEARNER.init(0)
TAML_EP = _taml_task()


@SETTINGS
@given(samples=st.one_of(st.integers(max_value=0), st.just(2.5), st.just(float("nan")), st.text(max_size=2)))
def test_taml_predict_rejects_bad_sample_counts(samples):
    _refused(lambda: TAML_LEARNER.predict(TAML_META, TAML_EP, samples=samples), "samples")
    _refused(lambda: TAML_LEARNER.evaluate(TAML_META, TAML_EP, samples=samples), "samples")


def test_taml_bad_episodes_and_mismatches_are_named(tmp_path):
    ep = TAML_EP
    nan_query = dataclasses.replace(ep, query_x=ep.query_x * float("nan"))
    for fn in (lambda e: TAML_LEARNER.task_loss(TAML_META, e), lambda e: TAML_LEARNER.evaluate(TAML_META, e)):
        assert "query" in _refused(lambda: fn(nan_query), "NaN")
        _refused(lambda: fn(dataclasses.replace(ep, query_x=ep.query_x[:0], query_y=ep.query_y[:0])),
                 "query set is empty")
        bad_label = dataclasses.replace(ep, support_y=torch.where(ep.support_y == 0, 7, ep.support_y))
        assert "0..2" in _refused(lambda: fn(bad_label), "support labels")
    maml = _taml("MAML")                                      # Meta-SGD parameters in a MAML learner, and back
    _refused(lambda: maml.task_loss(_taml("Meta-SGD").init(0), ep), "alpha='scalar'")
    _refused(lambda: _taml("Meta-SGD").task_loss(maml.init(0), ep), "alpha='per_parameter'")
    path = btaml.save_taml(tmp_path / "t.pt", TAML_LEARNER, TAML_META)
    other = btaml.TAML(MLP(6, (5, 4), 1, head_init="zero"),
                       btaml.preset("Bayesian TAML", k_max=25, instance_dims=(6, 5), class_dims=(7, 3), head_hidden=4))
    _refused(lambda: btaml.load_taml(path, other), "k_max")
    wider = btaml.TAML(MLP(6, (5, 4), 1, head_init="zero"),
                       btaml.preset("Bayesian TAML", k_max=8, instance_dims=(6, 5), class_dims=(7, 3), head_hidden=9))
    _refused(lambda: btaml.load_taml(path, wider), "head_hidden")
    _refused(lambda: btaml.load_taml(path, btaml.TAML(MLP(6, (5, 3), 1, head_init="zero"), TAML_LEARNER.config)),
             "shapes")
    save_checkpoint(tmp_path / "bare.pt", TAML_META)
    _refused(lambda: btaml.load_taml(tmp_path / "bare.pt", TAML_LEARNER), "no TAML config")
    meta, _ = btaml.load_taml(path, btaml.TAML(MLP(6, (5, 4), 1, head_init="zero"),
                                               dataclasses.replace(TAML_LEARNER.config, mc_test=3, eval_steps=2)))
    assert set(meta) == set(TAML_META)                        # meta-test settings may differ


# ------------------------------------------------------------------ MVT
@SETTINGS
@given(field=st.sampled_from(["virtual", "test_virtual", "hidden", "lambda_v", "shrinkage", "transfer", "option",
                              "head"]), data=st.data())
def test_mvt_config_rejects_bad_values(field, data):
    if field in ("lambda_v", "shrinkage"):
        value = data.draw(st.one_of(st.floats(max_value=-1e-9), st.just(float("nan")), st.just(float("inf")),
                                    st.text(max_size=2), st.none()))
    elif field in ("transfer", "option", "head"):
        value = data.draw(st.one_of(st.text(max_size=5), st.none(), st.integers()))
    else:
        value = data.draw(st.one_of(st.integers(max_value=-1), st.just(1.5), st.text(max_size=2), st.none()))
    _refused(lambda: mvt_mod.MVTConfig(**{field: value}), field)


def _mvt_setup(**kw):
    images = torch.randn(30, 10, 12, generator=torch.Generator().manual_seed(11))
    sampler = EpisodeSampler(images, list(range(20)), 5, 1, 3, donors=4, donor_shots=3)
    learner = mvt_mod.MVT(MLP(12, hidden=(16, 8), ways=0), mvt_mod.MVTConfig(**kw))
    return learner, learner.init(0), sampler.sample(0)


def test_mvt_bad_episodes_and_heads_are_named():
    learner, meta, ep = _mvt_setup()
    for fn in (lambda e: learner.task_loss(meta, e), lambda e: learner.evaluate(meta, e, "diagonal")):
        _refused(lambda: fn(dataclasses.replace(ep, donor_x=ep.donor_x * float("nan"))), "donor")
        _refused(lambda: fn(dataclasses.replace(ep, query_x=ep.query_x * float("nan"))), "query inputs")
        _refused(lambda: fn(dataclasses.replace(ep, query_x=ep.query_x[:0], query_y=ep.query_y[:0])),
                 "query set is empty")
    _refused(lambda: mvt_mod.MVTConfig(lambda_v=float("nan")), "lambda_v")
    for head in ("diagonal", "mahalanobis"):
        _refused(lambda: mvt_mod.MVTConfig(head=head, test_virtual=0), "test_virtual")
        no_virtual, meta0, _ = _mvt_setup(test_virtual=0)
        _refused(lambda: no_virtual.test_logits(meta0, ep, head), "test_virtual")


# ------------------------------------------------------------------ HyperDistill
@SETTINGS
@given(field=st.sampled_from(["inner_lr", "hyper_lr", "reptile_lr", "theta_max", "inner_opts", "meta_batch",
                              "shots", "queries", "estimation_period", "inner_steps", "gamma", "batch"]),
       data=st.data())
def test_hyperdistill_config_rejects_bad_values(field, data):
    if field in ("inner_lr", "hyper_lr", "reptile_lr", "theta_max"):
        value = data.draw(NOT_A_RATE)
    elif field == "gamma":
        value = data.draw(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0), st.just(float("nan")),
                                    st.text(max_size=2), st.none()))
    else:
        value = data.draw(NOT_A_COUNT)
    _refused(lambda: hd.HyperDistillConfig(**{field: value}), field, "horizon" if field == "inner_steps" else field)


def test_hyperdistill_shapes_and_divergence_are_named():
    x, y = torch.rand(2, 5, 1), torch.rand(2, 5, 1)
    _refused(lambda: hd.ANILRegression(x, y[..., 0], x, y), "support_y", "(tasks, S, 1)")
    _refused(lambda: hd.ANILRegression(x, y, x, y[..., 0]), "query_y")
    _refused(lambda: hd.ANILRegression(x, y, x * float("nan"), y), "query_x")
    H = torch.eye(3, dtype=torch.float64)                   # a quadratic unroll with eta = 3 diverges (|1 - 3| > 1)
    prob = hd.QuadraticProblem(H, torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    lam = torch.full((3,), -10.0, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="inner_lr=3"):
        hd.unroll(prob, torch.zeros(3, dtype=torch.float64), lam, torch.zeros(100, 1, dtype=torch.long), 3.0)
    cfg = hd.HyperDistillConfig(inner_opts=3, meta_batch=2, inner_steps=5, neumann_last=2)
    with pytest.raises(FloatingPointError, match="inner_lr=50"):
        hd.meta_train(dataclasses.replace(cfg, inner_lr=50.0), "fo", progress=False)


# ------------------------------------------------------------------ Sequential Reptile
@SETTINGS
@given(field=st.sampled_from(["kind", "lr", "betas", "eps", "weight_decay"]), data=st.data())
def test_inner_optimizer_rejects_bad_values(field, data):
    if field == "kind":
        value = data.draw(st.one_of(st.text(max_size=5), st.none()))
    elif field == "betas":
        value = data.draw(st.one_of(st.tuples(st.floats(0, 0.99), st.one_of(st.floats(min_value=1.0),
                                                                            st.just(float("nan")))),
                                    st.tuples(st.floats(max_value=-1e-9), st.floats(0, 0.99)),
                                    st.just((0.9,)), st.text(max_size=2), st.none()))
    else:
        value = data.draw(st.one_of(st.floats(max_value=-1e-9), st.just(float("nan")), st.just(float("inf")))
                          if field != "eps" else st.one_of(st.floats(max_value=0.0), st.just(float("nan"))))
    _refused(lambda: sr.InnerOptimizer(**{field: value}), field)


@SETTINGS
@given(field=st.sampled_from(["method", "order", "steps", "K", "eta"]), data=st.data())
def test_run_toy_rejects_bad_settings(field, data):
    value = {"method": st.text(max_size=4), "order": st.text(max_size=4), "steps": st.integers(max_value=-1),
             "K": st.integers(max_value=0), "eta": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.01),
                                                             st.just(float("nan")))}[field]
    kwargs = {"method": "Seq-Reptile", "steps": 1, "K": 2, "eta": 0.5, "order": "random",
              field: data.draw(value)}
    method = kwargs.pop("method")
    _refused(lambda: sr.run_toy(method, sr.product_tasks(), torch.ones(2, 2, dtype=torch.float64), 2,
                                alpha=0.1, **kwargs), field)


def test_seq_reptile_wrong_shapes_budgets_and_betas_are_named():
    _refused(lambda: sr.run_toy("MTL", sr.product_tasks(), torch.ones(4, 3, dtype=torch.float64), 2, 1, 0.1, 2, 0.5),
             "2-D toy")
    _refused(lambda: sr.run_toy("MTL", sr.wells_tasks(), torch.ones(4, 3, dtype=torch.float64), 3, 1, 0.1, 3, 0.5),
             "2-D toy")
    _refused(lambda: sr.InnerOptimizer("adam", 0.1, betas=(0.9, 1.0)), "betas")
    from tutor.experiments.seq_reptile import CLDRConfig

    for budget in (3, 35):
        _refused(lambda: CLDRConfig(budget=budget), "budget")
    with pytest.raises(FloatingPointError, match="eta"):         # an outer rate that explodes the toy loss
        sr.run_toy("MTL", sr.product_tasks(), torch.full((1, 2), 2.0, dtype=torch.float64), 2, 30, 1.0, 40, 1.0)


# ------------------------------------------------------------------ tutor.data.cldr
@SETTINGS
@given(value=st.one_of(st.text(min_size=1, max_size=6), st.integers(), st.lists(st.integers(), min_size=1,
                                                                                 max_size=3), st.none()))
def test_cldr_rejects_strings_where_lists_are_expected(value):
    vocab = cldr.CharVocab(list("abc"))
    _refused(lambda: cldr.encode(value, vocab), "strings")
    _refused(lambda: cldr.build_typing_tasks(value), "languages")
    _refused(lambda: cldr.build_vocab(value), "strings")


def test_cldr_bad_categories_and_sizes_are_named():
    _refused(lambda: cldr.build_typing_tasks(["en"], ["territories", "territories", "languages"]), "categories")
    _refused(lambda: cldr.build_typing_tasks(["en"], ["territories", "planets"]), "category")
    _refused(lambda: cldr.build_typing_tasks(["en"], "territories"), "categories")
    _refused(lambda: cldr.build_typing_tasks(["en"], n_train=2.5), "n_train")
    _refused(lambda: cldr.encode(["ab"], cldr.CharVocab(list("ab")), max_len=0), "max_len")
    _refused(lambda: cldr.encode(["ab"], {"a": 3}), "vocab")
    _refused(lambda: cldr.pretraining_corpus("en"), "locales")


# ------------------------------------------------------------------ every driver's command line (parsed, not run)
class _Captured(Exception):
    pass


def _parser(name, prefix=()):
    """The driver's ArgumentParser, captured at its parse_args call (nothing runs)."""
    driver = importlib.import_module(f"tutor.experiments.{name}")
    captured = []

    def capture(self, *a, **k):
        captured.append(self)
        raise _Captured

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        driver.main(list(prefix))
    except _Captured:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    assert captured, f"{name} did not parse its command line"
    return driver, captured[0]


def _flag_cases():
    """``(driver, subcommand prefix, flag, kind, action)`` for every typed or choice flag of every driver."""
    cases = []
    for name in DRIVERS:
        for prefix in ((), ("pretrain",)) if name == "seq_reptile" else ((),):
            _, parser = _parser(name, prefix)
            for action in parser._actions:
                if not action.option_strings or not action.option_strings[0].startswith("--"):
                    continue
                kind = getattr(action.type, "kind", None) or ("choice" if action.choices else None)
                if kind:
                    cases.append((name, prefix, action.option_strings[0], kind, action))
    return cases


FLAG_CASES = _flag_cases()


def _bad_values(kind, action):
    if kind == "choice":
        return ["nope", str(list(action.choices)[0]).upper() + "X", ""]
    lo = action.type.minimum
    if kind == "int":
        return [str(lo - 1) if lo is not None else "x", "1.5", "x", "", "nan"]
    out = ["nan", "inf", "-inf", "x", ""]
    if lo is not None:
        out.append(str(lo) if action.type.strict else str(lo - 1))
    return out


BAD_FLAGS = [(n, p, f, v) for n, p, f, k, a in FLAG_CASES for v in _bad_values(k, a)]


def test_every_driver_has_its_numeric_and_choice_flags_covered():
    covered = {(n, f) for n, _, f, _, _ in FLAG_CASES}
    for flag in ("--steps", "--seeds"):
        assert ("amtfl", flag) in covered
    assert {("bayesian_taml", "--mc"), ("bayesian_taml", "--tune-steps"), ("meta_dropout", "--val-episodes"),
            ("cts_glyphs", "--budget"), ("seq_reptile", "--budget"), ("hyperdistill", "--n-tasks"),
            ("mvt", "--lr-grid")} <= covered
    assert len(BAD_FLAGS) >= 100


@pytest.mark.parametrize("name, prefix, flag, bad", BAD_FLAGS,
                         ids=[f"{n}{'-' + p[0] if p else ''}{f}={v!r}" for n, p, f, v in BAD_FLAGS])
def test_every_driver_flag_names_itself_and_what_is_allowed(name, prefix, flag, bad, tmp_path, monkeypatch, capsys):
    driver = importlib.import_module(f"tutor.experiments.{name}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        driver.main([*prefix, f"{flag}={bad}", "--dry-run"])        # = form: argparse reads "-inf" as a value
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}" in err, err
    assert "must be" in err or "invalid choice" in err, err               # what is allowed
    assert not (tmp_path / "runs").exists()


@SETTINGS
@given(case=st.sampled_from([c for c in FLAG_CASES if c[3] == "int"]), data=st.data())
def test_driver_integer_flags_refuse_any_value_below_their_minimum(case, data):
    name, prefix, flag, _, action = case
    bad = data.draw(st.integers(max_value=action.type.minimum - 1)) if action.type.minimum is not None else "x"
    with pytest.raises(SystemExit):
        _parse(name, prefix, [f"{flag}={bad}"])


def _parse(name, prefix, argv):
    _, parser = _parser(name, prefix)
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            parser.parse_args(argv)
        except SystemExit:
            assert "argument " + argv[0].split("=")[0] in err.getvalue() and "must be" in err.getvalue(), err.getvalue()
            raise


def test_budgets_that_train_nothing_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    from tutor.experiments import cts_glyphs, seq_reptile

    for driver, budget in ((cts_glyphs, "99"), (seq_reptile, "35"), (seq_reptile, "3")):
        with pytest.raises(SystemExit):
            driver.main(["--budget", budget, "--dry-run"])
        err = capsys.readouterr().err
        assert "argument --budget" in err and ">= " in err, err
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ one divergence rule, the core and every loop
def test_divergence_at_the_first_step_is_stopped_at_the_second():
    from tutor.meta import MetaLearner

    class Jump(MetaLearner):
        def outer_step(self, meta, optimizer, episodes, **kw):
            self.calls = getattr(self, "calls", 0) + 1
            return {"loss": 1.0 if self.calls == 1 else 1e7}

    class Sampler:
        def batch(self, n, gen):
            return []

    learner = Jump()
    with pytest.raises(FloatingPointError, match="at step 2.*lower the learning rates"):
        meta_train(learner, {"w": torch.zeros(1, requires_grad=True)}, Sampler(), steps=50, progress=False)
    assert learner.calls == 2
    _refused(lambda: check_loss(float("nan"), setting="lr=1"), "lr=1", errors=FloatingPointError)
    _refused(lambda: check_loss(2e10, setting="lr=1"), "1e+10", errors=FloatingPointError)


def test_the_divergence_rule_keeps_normal_runs_running():
    guard = DivergenceGuard(setting="lr")
    for v in (0.0, 1e-9, 0.5, 3e3, 9e3, -2.0):        # from 0: anything below 1e6 x the floor 1e-2 = 1e4 is fine
        guard(v)
    guard = DivergenceGuard(setting="lr")
    for v in (2.3, 50.0, 2.3e6, 1.0):                  # a million-fold growth is the limit, not less
        guard(v)
    guard(torch.tensor([-3.0, 2.0, 1e3]))              # tensors: their largest magnitude


# ------------------------------------------------------------------ course kit, run.py, checkpoints, progress
def test_course_tags_are_matched_case_insensitively_and_typos_refused(tmp_path):
    from tutor.course import build_student_copies, main

    src = tmp_path / "src"
    src.mkdir()
    (src / "00_demo.py").write_text('# %%\nx = 1\n\n# %% tags=["Solution "]\nanswer = 42\n')
    out = build_student_copies(src, tmp_path / "student")
    assert "answer = 42" not in out[0].read_text()
    for typo in ("solutions", "Soluton", "Exercises", "checks"):
        (src / "00_demo.py").write_text(f'# %%\nx = 1\n\n# %% tags=["{typo}"]\nanswer = 42\n')
        target = tmp_path / f"student-{typo}"
        msg = _refused(lambda: build_student_copies(src, target), typo)
        assert "course tags are" in msg and not target.exists()           # nothing written
        assert main(["student", str(src), str(target)]) == 2
    (src / "00_demo.py").write_text('# %%\nx = 1\n\n# %% tags=["NBVAL_IGNORE_OUTPUT", "nbval-check-output"]\ny = 2\n')
    assert build_student_copies(src, tmp_path / "student-nbval")           # other tools' tags are fine


def _run_py():
    spec = importlib.util.spec_from_file_location("tutor_run_py", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_py_refuses_extra_arguments_bad_devices_and_an_empty_venv_path(monkeypatch):
    run = _run_py()
    monkeypatch.setattr(run, "ensure_env", lambda extras: pytest.fail("must refuse before installing anything"))
    monkeypatch.setattr(run, "binder_check", lambda: pytest.fail("must refuse before the check"))
    for argv, words in ((["settings", "a", "b"], "at most one"), (["binder-check", "--typo"], "no arguments"),
                        (["test", "--device", "tpu"], "--device must be")):
        with pytest.raises(SystemExit) as e:
            run.main(argv)
        assert words in str(e.value), e.value
    for empty in ("", "   "):
        monkeypatch.setenv("TUTOR_VENV", empty)
        assert run.venv_dir() == ROOT / ".venv"
    monkeypatch.setenv("TUTOR_VENV", str(ROOT))
    with pytest.raises(SystemExit, match="TUTOR_VENV"):
        run.venv_dir()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_accelerator_is_not_called_a_corrupted_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(2)})
    with pytest.raises(RuntimeError, match="cuda") as e:
        load_checkpoint(path, device="cuda")
    assert "corrupted" not in str(e.value)
    assert load_checkpoint(path, device="cpu")[0]["w"].sum() == 2


def test_tutor_progress_is_read_by_one_parser_everywhere(monkeypatch):
    from tutor.experiments import seq_reptile as driver

    monkeypatch.setenv("TUTOR_PROGRESS", "maybe")
    cfg = hd.HyperDistillConfig(inner_opts=1, meta_batch=1, inner_steps=2, neumann_last=1)
    for fn in (lambda: hd.meta_train(cfg, "fo"), lambda: driver._bar(range(2), "x", None)):
        _refused(fn, "TUTOR_PROGRESS")
    monkeypatch.setenv("TUTOR_PROGRESS", "false")
    assert driver._bar(range(2), "x", None).disable


# ------------------------------------------------------------------ VALID edge inputs that must keep working
def test_valid_edge_inputs_keep_working(tmp_path):
    probs = TAML_LEARNER.predict(TAML_META, TAML_EP, samples=1)                      # one MC sample
    assert torch.allclose(probs.sum(-1), torch.ones(len(TAML_EP.query_y)))
    assert TAML_LEARNER.evaluate(TAML_META, TAML_EP, mean=True)["accuracy"] >= 0
    learner, meta, ep = _mvt_setup(lambda_v=0.0, test_virtual=0, virtual=0)         # no virtual samples at all
    assert learner.evaluate(meta, ep)["accuracy"] >= 0 and learner.evaluate(meta, ep, "augmented")["loss"] > 0
    mvt_mod.MVTConfig(shrinkage=0.0), mvt_mod.MVTConfig(shrinkage=1.0), mvt_mod.MVTConfig(head="diagonal",
                                                                                         test_virtual=1)
    sr.InnerOptimizer("adam", 0.0, betas=(0.0, 0.0), weight_decay=0.0)
    hd.HyperDistillConfig(gamma=0.0, batch=10, shots=10, inner_steps=1, neumann_last=1, neumann_terms=0)
    assert cldr.encode(("a",), cldr.CharVocab(["a"]), max_len=1).tolist() == [[3]]   # a tuple, max_len 1
    run_reptile(lambda x: (x ** 2).sum(-1), torch.ones(1, 2), 2, 5, 0.1, 0.1, 5)     # budget == K: one update
    from tutor.experiments.seq_reptile import CLDRConfig

    assert CLDRConfig(budget=36).budget == 36


VALID_FLAGS = [(n, p, f, str(a.type.minimum if k == "int" else (a.type.minimum or 0) + 0.5))
               for n, p, f, k, a in FLAG_CASES if k in ("int", "float")]


@pytest.mark.parametrize("name, prefix, flag, value", VALID_FLAGS,
                         ids=[f"{n}{'-' + p[0] if p else ''}{f}={v}" for n, p, f, v in VALID_FLAGS])
def test_every_driver_flag_accepts_its_smallest_allowed_value(name, prefix, flag, value, tmp_path, monkeypatch,
                                                              capsys):
    driver = importlib.import_module(f"tutor.experiments.{name}")
    monkeypatch.chdir(tmp_path)
    extra = []                                                    # flags bounded by another flag as well:
    if (name, flag) == ("seq_reptile", "--budget"):             # the checkpoint's K
        value = "36"
    elif (name, flag) == ("cts_glyphs", "--budget"):            # the largest horizon
        extra = ["--horizons", value]
    elif (name, flag) == ("cts_glyphs", "--seeds"):             # the tuning seed must not be scored
        extra = ["--tune-seed", str(int(value) + 1)]
    elif (name, flag) == ("meta_dropout", "--budget-steps"):    # a multiple of --steps
        extra = ["--steps", value]
    assert driver.main([*prefix, flag, value, *extra, "--dry-run"]) == 0
    assert "nothing was run" in capsys.readouterr().out
