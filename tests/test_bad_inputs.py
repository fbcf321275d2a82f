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
    assert learner.calls == 9                                          # 1.5e4 > 1000 x 1.5: stopped at once
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


def test_threads_and_loop_give_bit_identical_gradients():
    learner = MAML(MLP(6, (8,), 3), inner_lr=0.3, inner_steps=2)
    meta = learner.init(0, dtype=torch.float64)
    eps = [GaussianClassTasks(dim=6).sample(3, 2, 2, gen=s).to(dtype=torch.float64) for s in range(7)]
    a, _ = learner.meta_gradient(meta, eps, "loop")
    b, _ = learner.meta_gradient(meta, eps, "threads", workers=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


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
