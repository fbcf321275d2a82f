"""Networks, runtime, training loop, evaluation, checkpoints, widgets, checks, course kit, offline guard."""

import math
import socket

import pytest
import torch

import tutor
from tutor import checks
from tutor.data import EpisodeSampler, GaussianClassTasks, SinusoidTasks, fixed_episodes
from tutor.meta import MAML, ProtoNet, leaves
from tutor.nets import MLP, Conv4, batch_norm
from tutor.train import compare, evaluate, load_checkpoint, mean_ci, meta_train, save_checkpoint

D = torch.float64


def test_conv4_shapes_features_and_hook():
    net = Conv4(hidden=8, ways=5)
    params = net.init(0)
    x = torch.rand(6, 1, 28, 28)
    feats = net.features(params, x)
    assert [feats[f"layer{i}"].shape for i in range(1, 5)] == \
        [(6, 8, 14, 14), (6, 8, 7, 7), (6, 8, 3, 3), (6, 8, 1, 1)]
    assert feats["embedding"].shape == (6, 8) and feats["logits"].shape == (6, 5)
    assert Conv4(image_size=84, hidden=32).embedding_dim == 32 * 5 * 5
    seen = []

    def hook(layer, inputs, pre):
        seen.append((layer, tuple(inputs.shape), tuple(pre.shape)))
        return pre * 2 if layer != "head" else pre

    net(params, x, hook)
    assert seen[0] == ("layer1", (6, 1, 28, 28), (6, 8, 28, 28)) and seen[-1][0] == "head"
    with pytest.raises(ValueError, match="expects input of shape"):
        net(params, torch.rand(6, 3, 28, 28))
    with pytest.raises(ValueError, match="too small"):
        Conv4(image_size=8, blocks=4)


def test_hook_before_batch_norm_constant_gain_is_absorbed():
    """A per-channel constant multiplier before BN changes nothing; a per-example one does."""
    net = MLP(4, (6,), ways=3, bn=True)
    params = net.init(0, dtype=D)
    x = torch.randn(10, 4, dtype=D)
    base = net(params, x)
    const = net(params, x, lambda l, h, pre: pre * 3.0 if l == "layer1" else pre)
    per_example = net(params, x, lambda l, h, pre: pre * torch.arange(1, 11, dtype=D)[:, None]
                      if l == "layer1" else pre)
    assert torch.allclose(base, const, atol=1e-4)   # equal up to the BN epsilon
    assert not torch.allclose(base, per_example, atol=1e-3)


def test_batch_norm_both_paths_match_the_formula_channel_by_channel():
    """(x - mean_c) / sqrt(var_c + eps) * w_c + b_c with the biased variance over batch and positions."""
    x = torch.randn(7, 3, 5, 5, dtype=D)
    w, b = torch.rand(3, dtype=D), torch.rand(3, dtype=D)
    ref = torch.empty_like(x)
    for c in range(3):
        values = x[:, c].flatten()
        mean = values.sum() / values.numel()
        var = ((values - mean) ** 2).sum() / values.numel()
        ref[:, c] = (x[:, c] - mean) / (var + 1e-5).sqrt() * w[c] + b[c]
    for fused in (True, False):
        assert torch.allclose(batch_norm(x, w, b, fused=fused), ref, rtol=0, atol=1e-12)
    h = torch.randn(9, 4, dtype=D)                                   # MLP features: statistics over the batch only
    ref_h = (h - h.mean(0)) / (h.var(0, unbiased=False) + 1e-5).sqrt()
    assert torch.allclose(batch_norm(h, None, None, fused=True), ref_h, rtol=0, atol=1e-12)
    assert torch.allclose(batch_norm(h, None, None, fused=False), ref_h, rtol=0, atol=1e-12)


def test_mlp_errors_and_zero_head():
    net = MLP(5, (4,), ways=2, head_init="zero")
    params = net.init(0)
    assert torch.count_nonzero(params["head.weight"]) == 0
    with pytest.raises(ValueError, match="expects 5 input features"):
        net(params, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="head_init"):
        MLP(5, head_init="ones")
    with pytest.raises(ValueError, match="without a head"):
        ProtoNet(MLP(5, ways=2))


def test_runtime_device_seed_threads(monkeypatch):
    assert tutor.get_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            tutor.get_device("cuda")
    assert tutor.get_device("auto").type in ("cpu", "cuda", "mps")
    tutor.seed_everything(3)
    a = torch.rand(2)
    tutor.seed_everything(3)
    assert torch.equal(a, torch.rand(2))
    with pytest.raises(ValueError):
        tutor.seed_everything(-1)
    before = torch.get_num_threads()
    monkeypatch.setenv("TUTOR_THREADS", "1")
    assert tutor.configure_threads() == 1 and torch.get_num_threads() == 1
    torch.set_num_threads(before)
    with pytest.raises(ValueError):
        tutor.configure_threads(0)


def test_short_seeded_training_improves_and_evaluation_is_paired(tmp_path):
    tasks = GaussianClassTasks(dim=8)

    class Sampler:
        def batch(self, n, gen):
            from tutor.data import stack_episodes
            return stack_episodes([tasks.sample(3, 2, 5, gen) for _ in range(n)])

    learner = MAML(MLP(8, (32,), ways=3), inner_lr=0.3, inner_steps=2)
    meta = learner.init(0)
    test = [tasks.sample(3, 2, 5, gen=1000 + i) for i in range(60)]
    before = evaluate(learner, meta, test)
    history = meta_train(learner, meta, Sampler(), steps=150, lr=3e-3, progress=False,
                         eval_episodes=test[:10], eval_every=50)
    after = evaluate(learner, meta, test)
    assert len(history.loss) == 150 and history.eval_step == [50, 100, 150]
    assert sum(history.loss[-20:]) / 20 < sum(history.loss[:20]) / 20
    paired = compare(before, after)
    assert paired.diff_mean > 0 and paired.significant
    # checkpoint round trip (weights_only) keeps values and which tensors are trainable
    path = save_checkpoint(tmp_path / "m.pt", meta, {"steps": 150})
    loaded, info = load_checkpoint(path)
    assert info == {"steps": 150}
    assert [t.requires_grad for t in leaves(loaded, trainable=False)] == \
        [t.requires_grad for t in leaves(meta, trainable=False)]
    assert evaluate(learner, loaded, test).scores == after.scores
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_non_finite_meta_loss_stops_with_a_message():
    learner = MAML(MLP(1, (16,), ways=1), inner_lr=0.01, inner_steps=1, loss="mse")
    meta = learner.init(0)

    class Sampler:
        def batch(self, n, gen):
            b = SinusoidTasks().batch(n, 5, 5, gen)
            b.query_y = b.query_y * float("inf")
            return b

    with pytest.raises(FloatingPointError, match="meta learning rate|inner learning rate"):
        meta_train(learner, meta, Sampler(), steps=3, progress=False)


def test_mean_ci_and_compare_errors():
    m, ci = mean_ci([1.0, 2.0, 3.0])          # s = 1, n = 3: half-width t_2 / sqrt(3), t_2 = 4.3027
    assert m == 2.0 and abs(ci - 4.302652729749752 / 3 ** 0.5) < 1e-9
    s = EpisodeSampler(torch.rand(6, 4, 1, 28, 28), range(6), 3, 1, 1)
    learner = ProtoNet(Conv4(hidden=4, ways=0))
    meta = learner.init(0)
    a = evaluate(learner, meta, fixed_episodes(s, 5))
    b = evaluate(learner, meta, fixed_episodes(s, 4))
    with pytest.raises(ValueError, match="same episodes"):
        compare(a, b)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 30, 299])
def test_t_quantile_against_numerical_integral_of_the_density(df):
    from tutor.train import t_quantile

    t = t_quantile(0.95, df)
    x = torch.linspace(0, t, 400_001, dtype=torch.float64)   # P(|T| <= t) by the trapezoid rule
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    pdf = torch.exp(log_norm - (df + 1) / 2 * torch.log1p(x * x / df))
    assert abs(2 * torch.trapezoid(pdf, x).item() - 0.95) < 1e-6
    assert t > 1.959963984540054                              # always wider than the normal interval


def test_t_quantile_tends_to_normal_and_rejects_bad_input():
    from tutor.train import t_quantile

    assert abs(t_quantile(0.95, 100_000) - 1.959963984540054) < 1e-4
    with pytest.raises(ValueError, match="level"):
        t_quantile(1.5, 3)
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.95, 0)
    with pytest.raises(ValueError, match="at least 2"):
        mean_ci([1.0])


def test_checks_pass_and_fail(capsys):
    ref = lambda x: x * 2  # noqa: E731
    assert checks.check_function(lambda x: x + x, ref, [(torch.ones(3),)])
    assert not checks.check_function(lambda x: x, ref, [(torch.ones(3),)], hint="double it")
    assert "double it" in capsys.readouterr().out

    def stub(x):
        raise NotImplementedError
    assert not checks.check_function(stub, ref, [(1.0,)])
    assert checks.check_value(0.5, 0.5) and not checks.check_value(..., 0.5)


def test_widget_headless_draws_once_at_defaults(monkeypatch):
    from tutor import widgets

    monkeypatch.setenv("TUTOR_HEADLESS", "1")
    monkeypatch.setenv("TUTOR_WIDGET_SWEEP", "0")
    calls = []
    out = widgets.interactive(lambda a, b, c, d: calls.append((a, b, c, d)) or "drawn",
                              a=widgets.slider(2, 1, 5), b=widgets.dropdown("x", ["x", "y"]),
                              c=widgets.toggle(True), d=7)
    assert calls == [(2, "x", True, 7)] and out == "drawn"
    with pytest.raises(ValueError, match="outside"):
        widgets.slider(9, 1, 5)
    monkeypatch.setenv("TUTOR_HEADLESS", "0")
    assert widgets.is_headless()       # no IPython kernel in pytest


def test_widget_sweep_draws_every_extreme_and_names_a_failing_control(monkeypatch):
    from tutor import widgets

    monkeypatch.setenv("TUTOR_HEADLESS", "1")
    monkeypatch.setenv("TUTOR_WIDGET_SWEEP", "1")
    calls = []
    controls = dict(a=widgets.slider(2, 1, 5), f=widgets.slider(0.1, 0.01, 1.0, log=True),
                    b=widgets.dropdown("x", ["x", "y", "z"]), c=widgets.toggle(True), d=7)
    out = widgets.interactive(lambda a, f, b, c, d: calls.append((a, f, b, c, d)) or "drawn", **controls)
    assert out == "drawn" and calls[0] == (2, 0.1, "x", True, 7)             # the defaults first
    assert sorted(map(str, calls[1:])) == sorted(map(str, [(1, 0.1, "x", True, 7), (5, 0.1, "x", True, 7),
                                                           (2, 0.01, "x", True, 7), (2, 1.0, "x", True, 7),
                                                           (2, 0.1, "y", True, 7), (2, 0.1, "z", True, 7),
                                                           (2, 0.1, "x", False, 7)]))

    def fragile(a=2):
        if a == 5:
            raise IndexError("out of range")

    with pytest.raises(RuntimeError, match="fragile failed with a=5"):
        widgets.interactive(fragile, a=widgets.slider(2, 1, 5))


def test_student_copy_has_no_solution_cells(tmp_path):
    import jupytext

    from tutor.course import build_student_copies

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "00_demo.py").write_text(
        '# %%\nx = 1\n\n# %% tags=["exercise"]\ndef f():\n    raise NotImplementedError\n\n'
        '# %% tags=["solution"]\ndef f():\n    return 42\n\n# %% tags=["check"]\nprint(f())\n')
    out = build_student_copies(tmp_path / "src", tmp_path / "student", ipynb=True)
    nb = jupytext.read(out[0])
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert not any("solution" in t for t in tags) and any("exercise" in t for t in tags)
    assert "return 42" not in out[0].read_text() and len(nb.cells) == 4
    assert build_student_copies(tmp_path / "src", tmp_path / "student")       # rebuilding student copies is fine


def test_student_copies_never_destroy_instructor_notebooks(tmp_path):
    from tutor.course import build_student_copies, main

    src = tmp_path / "src"
    src.mkdir()
    original = '# %%\nx = 1\n\n# %% tags=["solution"]\ny = 2\n'
    (src / "00_demo.py").write_text(original)
    for target in (src, src / "student"):                                     # the source itself, or inside it
        with pytest.raises(ValueError, match="inside it"):
            build_student_copies(src, target)
    assert main(["student", str(src), str(src)]) == 2
    other = tmp_path / "other"                                                # a folder of instructor notebooks
    other.mkdir()
    (other / "00_demo.py").write_text(original)
    with pytest.raises(ValueError, match="solution cells"):
        build_student_copies(src, other)
    assert (src / "00_demo.py").read_text() == original and (other / "00_demo.py").read_text() == original


def test_network_guard_refuses_outside_connections():
    assert socket.socket.connect.__name__ == "_guarded_connect"   # installed by conftest + tutor
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(tutor._netguard.NetworkAccessError):
            s.connect(("192.0.2.1", 80))
    finally:
        s.close()
    import urllib.request
    with pytest.raises(Exception, match="offline|refused|resolution|Name"):
        urllib.request.urlopen("http://example.com", timeout=2)


def test_fused_and_plain_batch_norm_agree_to_second_order():
    """The fused kernel (outside vmap) and the plain formula (inside vmap) give the same
    values, gradients and second derivatives in float64."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, 4, generator=g, dtype=D, requires_grad=True)
    w = torch.rand(3, generator=g, dtype=D, requires_grad=True)
    b = torch.rand(3, generator=g, dtype=D, requires_grad=True)
    v = torch.randn(6, 3, 4, 4, generator=g, dtype=D)
    out = []
    for fused in (True, False):
        y = batch_norm(x, w, b, fused=fused)
        (gx,) = torch.autograd.grad((y * v).sum() ** 2, x, create_graph=True)
        hvp = torch.autograd.grad((gx * v).sum(), (x, w, b))
        out.append((y, gx, hvp))
    assert torch.allclose(out[0][0], out[1][0]) and torch.allclose(out[0][1], out[1][1])
    assert all(torch.allclose(a, c) for a, c in zip(out[0][2], out[1][2]))


def test_threaded_evaluation_gives_the_same_scores():
    s = EpisodeSampler(torch.rand(8, 4, 1, 12, 12), range(8), 3, 1, 2)
    learner = MAML(Conv4(image_size=12, hidden=4, ways=3, blocks=2), inner_steps=2)
    meta = learner.init(0)
    eps = fixed_episodes(s, 6)
    assert evaluate(learner, meta, eps).scores == evaluate(learner, meta, eps, workers=2).scores
