"""Meta-Dropout: reduction to MAML, where noise applies, second-order signal to the generator, MC."""

import math

import pytest
import torch
import torch.nn.functional as F

from tutor.data import EpisodeSampler
from tutor.meta import MAML, inner_loop, leaves
from tutor.nets import MLP, Conv4
from tutor.papers.meta_dropout import (
    MetaDropout,
    MetaDropoutConfig,
    NoiseHook,
    init_generator,
    jensen_gap,
    logit_noise,
    multiplier,
)
from tutor.train import meta_train

D = torch.float64


def batch(tasks=2, ways=3, shots=2, queries=2, size=6, seed=0):
    images = torch.rand(8, 6, 1, size, size, generator=torch.Generator().manual_seed(seed))
    return EpisodeSampler(images, range(8), ways, shots, queries).batch(tasks, 1).to(dtype=D)


def mlp():
    return MLP(36, (16, 16), 3, bn=True)


def test_noise_off_reduces_exactly_to_maml():
    eps = batch()
    md = MetaDropout(mlp(), MetaDropoutConfig(noise="off", inner_lr=0.2, inner_steps=3))
    maml = MAML(mlp(), inner_lr=0.2, inner_steps=3)
    meta = md.init(0, dtype=D)
    maml_meta = {"net": meta["net"], "fixed_lr": meta["fixed_lr"]}
    assert meta["phi"] == {}
    a, b = md.adapt(meta, eps[0]).params, maml.adapt(maml_meta, eps[0]).params
    # equal in exact arithmetic; the two learners run other code (a no-op noise hook), so compare to float64
    # rounding rather than bit for bit
    def same(x, y):
        return torch.allclose(x, y, rtol=1e-12, atol=1e-12 * max(x.abs().max().item(), 1e-300))
    assert all(same(a[k], b[k]) for k in a)
    assert same(md.query_logits(meta, a, eps[0].query_x), maml.model(b, eps[0].query_x))
    g1, _ = md.meta_gradient(meta, eps)
    g2, _ = maml.meta_gradient(maml_meta, eps)
    assert all(same(x, y) for x, y in zip(g1, g2))


def test_noise_only_on_support_and_query_path_is_deterministic():
    net = mlp()
    cfg = MetaDropoutConfig()
    theta, phi = net.init(0, dtype=D), init_generator(net, cfg, 0, dtype=D)
    x = torch.rand(6, 1, 6, 6, dtype=D)
    q = [net(theta, x, NoiseHook(phi, cfg, sample=False)) for _ in range(2)]
    s = [net(theta, x, NoiseHook(phi, cfg, sample=True)) for _ in range(2)]
    assert torch.equal(q[0], q[1]) and not torch.allclose(s[0], s[1])
    # the same seed reproduces the perturbed support forward
    g = [net(theta, x, NoiseHook(phi, cfg, sample=True, gen=torch.Generator().manual_seed(3))) for _ in range(2)]
    assert torch.equal(g[0], g[1])
    # no logit noise on queries: the query forward equals a hand-written gated forward whose head is untouched
    def gates_only(layer, inputs, pre):
        if layer == "head":
            return pre
        w, b = phi[f"gen{layer[-1]}.weight"], phi[f"gen{layer[-1]}.bias"]
        return pre * F.softplus(F.linear(inputs, w, b))
    assert torch.allclose(q[0], net(theta, x, gates_only), rtol=0, atol=1e-12)
    # while the support forward's head does get noise: turning logit noise off changes the logits
    no_logit = MetaDropoutConfig(logit_noise=False)
    with_head = net(theta, x, NoiseHook(phi, cfg, sample=True, gen=torch.Generator().manual_seed(3)))
    without = net(theta, x, NoiseHook(phi, no_logit, sample=True, gen=torch.Generator().manual_seed(3)))
    assert not torch.allclose(with_head, without)


@pytest.mark.parametrize("variant", ["input_dependent", "input_independent", "fixed"])
def test_logit_noise_is_one_scale_per_example_tiled_over_classes(variant):
    """Eq. 3: o + kappa * s(h) * eps with s of shape (n, 1): (noisy - o) / eps is constant along classes."""
    cfg = MetaDropoutConfig(noise=variant, noise_scale=0.7)
    net = mlp()
    phi = {k: v + 0.3 * torch.randn_like(v) for k, v in init_generator(net, cfg, 0, dtype=D).items()}
    h, o = torch.randn(5, 16, dtype=D), torch.randn(5, 3, dtype=D)
    noisy = logit_noise(phi, cfg, h, o, torch.Generator().manual_seed(4))
    eps = torch.randn(o.shape, generator=torch.Generator().manual_seed(4), dtype=D)
    scale = (noisy - o) / (cfg.noise_scale * eps)                                    # (5, 3)
    if variant == "input_dependent":
        expected = F.softplus(h @ phi["gen_head.weight"].T + phi["gen_head.bias"])   # (5, 1)
    elif variant == "input_independent":
        expected = F.softplus(phi["gen_head.bias"]).expand(5, 1)
    else:
        expected = torch.full((5, 1), math.log(2.0), dtype=D)
    assert torch.allclose(scale, expected.expand(5, 3))
    if variant == "input_dependent":
        assert not torch.allclose(scale[:, 0], scale[0, 0].expand(5))               # differs between examples


def test_bn_parameters_are_adapted_only_when_asked():
    ep = batch()[0]
    for adapt_bn in (True, False):
        md = MetaDropout(mlp(), MetaDropoutConfig(inner_steps=2, adapt_bn=adapt_bn))
        maml = MAML(mlp(), inner_lr=0.3, inner_steps=2, adapt_bn=adapt_bn)
        for learner in (md, maml):
            meta = learner.init(0, dtype=D)
            adapted = learner.adapt(meta, ep).params
            bn = [k for k in adapted if k.startswith("bn")]
            assert bn and all(torch.equal(adapted[k], meta["net"][k]) != adapt_bn for k in bn)
            assert not torch.equal(adapted["fc1.weight"], meta["net"]["fc1.weight"])   # weights always adapt


def test_multiplier_statistics_and_shapes():
    z = multiplier(torch.zeros(200_000, dtype=D), 1.0, True, torch.Generator().manual_seed(0))
    assert abs(z.mean() - 0.806) < 0.008 and abs(z.std() - 0.521) < 0.008 and (z > 0).all()
    mu = torch.randn(4, 5, dtype=D)
    assert torch.equal(multiplier(mu, 1.0, False), F.softplus(mu))
    assert torch.equal(multiplier(mu, 0.0, True), F.softplus(mu))        # kappa = 0: gate only


def test_input_dependence_and_input_independent_gate_is_absorbed_by_bn():
    torch.manual_seed(0)
    net = mlp()
    x1, x2 = torch.rand(5, 1, 6, 6, dtype=D), torch.rand(5, 1, 6, 6, dtype=D)
    dep = MetaDropoutConfig(noise="input_dependent")
    phi = init_generator(net, dep, 0, dtype=D)
    r1, r2 = {}, {}
    theta = net.init(0, dtype=D)
    net(theta, x1, NoiseHook(phi, dep, sample=False, record=r1))
    net(theta, x2, NoiseHook(phi, dep, sample=False, record=r2))
    assert not torch.allclose(r1["layer1"][0], r2["layer1"][0])           # mu depends on the input
    ind = MetaDropoutConfig(noise="input_independent")
    phi_i = {k: v + 0.5 * torch.randn_like(v) for k, v in init_generator(net, ind, 0, dtype=D).items()}
    gated = net(theta, x1, NoiseHook(phi_i, ind, sample=False))
    # a per-feature constant gain before BN does nothing, up to BN's epsilon (relative to the variance)
    assert torch.allclose(gated, net(theta, x1), atol=1e-3)


def test_gradients_reach_every_generator_parameter_through_the_inner_loop():
    """With a plain (ungated) query forward, phi is reached only through the inner loop: every
    generator tensor gets a gradient with second order, none with first order."""
    net = mlp()
    cfg = MetaDropoutConfig(inner_steps=2)
    theta, phi = net.init(0, dtype=D), init_generator(net, cfg, 0, dtype=D)
    ep = batch()[0]
    for first_order, expect in ((False, True), (True, False)):
        adapted = inner_loop(net, theta, ep.support_x, ep.support_y, 2, 0.3, first_order=first_order,
                             hook=NoiseHook(phi, cfg, sample=True, gen=torch.Generator().manual_seed(0))).params
        loss = F.cross_entropy(net(adapted, ep.query_x), ep.query_y)
        grads = torch.autograd.grad(loss, list(phi.values()), allow_unused=True)
        reached = [g is not None and g.abs().sum() > 0 for g in grads]
        assert all(reached) if expect else not any(reached), (first_order, reached)


def test_phi_is_not_adapted_by_the_inner_loop():
    md = MetaDropout(mlp())
    meta = md.init(0, dtype=D)
    adapted = md.adapt(meta, batch()[0]).params
    assert set(adapted) == set(meta["net"])                               # only theta is adapted


def test_mc_inner_loss_is_the_mean_of_per_sample_losses():
    net = mlp()
    cfg = MetaDropoutConfig()
    theta, phi = net.init(0, dtype=D), init_generator(net, cfg, 0, dtype=D)
    ep = batch()[0]
    res = inner_loop(net, theta, ep.support_x, ep.support_y, 1, 0.3, mc_samples=4,
                     hook=NoiseHook(phi, cfg, sample=True, gen=torch.Generator().manual_seed(5)))
    hook = NoiseHook(phi, cfg, sample=True, gen=torch.Generator().manual_seed(5))
    per_sample = [F.cross_entropy(net(theta, ep.support_x, hook), ep.support_y) for _ in range(4)]
    assert torch.allclose(res.losses[0], torch.stack(per_sample).mean())
    with pytest.raises(ValueError, match="mc_samples"):
        inner_loop(net, theta, ep.support_x, ep.support_y, 1, 0.3, mc_samples=0)


def test_jensen_gap_is_zero_without_noise_and_grows_with_the_noise_scale():
    net = mlp()
    theta = net.init(0, dtype=D)
    ep = batch()[0]
    gaps = []
    for kappa in (0.0, 0.25, 0.5, 1.0, 2.0):
        cfg = MetaDropoutConfig(noise_scale=kappa)
        lhs, rhs = jensen_gap(net, theta, init_generator(net, cfg, 0, dtype=D), cfg, ep.support_x, ep.support_y,
                              samples=256, gen=torch.Generator().manual_seed(0))
        gaps.append(lhs - rhs)
    assert abs(gaps[0]) < 1e-12                                            # kappa = 0: no noise, equality
    assert all(a < b for a, b in zip(gaps, gaps[1:])), gaps                 # more noise, a looser bound


def test_episode_seeds_make_loop_and_threads_agree():
    md = MetaDropout(mlp(), MetaDropoutConfig(inner_steps=2))
    meta = md.init(0, dtype=D)
    eps = batch(tasks=4)
    a, _ = md.meta_gradient(meta, eps, "loop")
    b, _ = md.meta_gradient(meta, eps, "threads")
    # the same noise, only summed in another order
    assert all(torch.allclose(x, y, rtol=1e-10, atol=1e-14) for x, y in zip(a, b))


def test_conv4_generator_shapes_and_a_short_training_run_improves():
    conv = Conv4(image_size=8, hidden=4, ways=3, blocks=2)
    phi = init_generator(conv, MetaDropoutConfig(), 0)
    assert phi["gen1.weight"].shape == (4, 1, 3, 3) and phi["gen2.weight"].shape == (4, 4, 3, 3)
    assert phi["gen_head.weight"].shape == (1, conv.embedding_dim)
    images = torch.rand(10, 6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    images += torch.arange(10).view(10, 1, 1, 1, 1) / 10       # learnable class signal
    sampler = EpisodeSampler(images, range(10), 3, 2, 3)
    md = MetaDropout(conv, MetaDropoutConfig(inner_steps=1, inner_lr=0.3))
    meta = md.init(0)
    hist = meta_train(md, meta, sampler, steps=60, lr=3e-3, progress=False, seed=0)
    assert sum(hist.loss[-10:]) / 10 < sum(hist.loss[:10]) / 10
    assert all(p.grad is not None for p in leaves(meta))
    with pytest.raises(ValueError, match="noise must be one of"):
        MetaDropoutConfig(noise="gaussian")
    with pytest.raises(TypeError, match="Conv4 and MLP"):
        MetaDropout(object())


def test_gated_independent_is_the_input_dependent_gate_times_input_independent_noise():
    """The control variant: z = softplus(mu(x)) * softplus(nu + kappa eps), written out by hand."""
    net = mlp()
    cfg = MetaDropoutConfig(noise="gated_independent")
    theta, phi = net.init(0, dtype=D), init_generator(net, cfg, 0, dtype=D)
    assert {"gen1.weight", "gen1.bias", "gen1.mu", "gen2.mu", "gen_head.bias"} <= set(phi)
    assert "gen_head.weight" not in phi                        # the logit noise is input-independent
    phi = {k: (v + 0.3 * torch.randn(v.shape, dtype=D, generator=torch.Generator().manual_seed(7))).detach()
           for k, v in phi.items()}                            # move nu and b away from their zero start
    x = torch.rand(6, 1, 6, 6, dtype=D)

    def hand(sample, gen=None):
        def hook(layer, inputs, pre):
            if layer == "head":
                if not sample:
                    return pre
                eps = torch.randn(pre.shape, generator=gen, dtype=D)
                return pre + F.softplus(phi["gen_head.bias"]) * eps
            i = layer[-1]
            gate = F.softplus(F.linear(inputs, phi[f"gen{i}.weight"], phi[f"gen{i}.bias"]))
            nu = phi[f"gen{i}.mu"].expand_as(pre)
            noise = F.softplus(nu + torch.randn(pre.shape, generator=gen, dtype=D)) if sample else F.softplus(nu)
            return pre * gate * noise
        return hook

    for sample in (False, True):
        got = net(theta, x, NoiseHook(phi, cfg, sample=sample, gen=torch.Generator().manual_seed(5)))
        want = net(theta, x, hand(sample, torch.Generator().manual_seed(5)))
        assert torch.allclose(got, want, rtol=0, atol=1e-12)
    # the meta-gradient reaches both the gate (gen1.weight) and the noise's learned bias (gen1.mu)
    md = MetaDropout(mlp(), MetaDropoutConfig(noise="gated_independent", inner_lr=0.2, inner_steps=2))
    meta = md.init(0, dtype=D)
    grads, _ = md.meta_gradient(meta, batch())
    by_id = {id(t): g for t, g in zip(leaves(meta), grads)}
    assert by_id[id(meta["phi"]["gen1.mu"])].abs().sum() > 1e-8
    assert by_id[id(meta["phi"]["gen1.weight"])].abs().sum() > 1e-8
