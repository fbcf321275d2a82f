"""Bayesian TAML: reductions to MAML/Meta-SGD, the class-weight identity, encoder invariances, KL,
reparameterisation, z and gamma mechanics, second-order meta-gradient, MC prediction, errors."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from tutor.data import AnyShotSampler, GaussianClassTasks
from tutor.meta import inner_loop, leaves
from tutor.nets import MLP, Conv4
from tutor.papers.bayesian_taml import (
    TAML,
    TamlConfig,
    balanced_inner_loop,
    balancing_variables,
    cardinality,
    class_weighted_loss,
    encode_task,
    evaluate_steps,
    kl_to_standard_normal,
    load_taml,
    modulate,
    preset,
    save_taml,
    stat_pool,
    task_metrics,
    z_dim,
    zero_head,
)

D = torch.float64


def task(shots=(1, 4, 7), queries=3, variant="id", seed=0, dim=6):
    ep = GaussianClassTasks(dim, variant).sample(len(shots), list(shots), queries, seed)
    return dataclasses.replace(ep, seed=torch.tensor(seed + 11)).to(dtype=D)


def learner(name="Bayesian TAML", dim=6, hidden=(5, 4), **kw):
    cfg = preset(name, k_max=8, instance_dims=(6, 5), class_dims=(7, 3), head_hidden=4, **kw)
    return TAML(MLP(dim, hidden, 1, head_init="zero"), cfg)


def randomise(meta, seed=0, scale=0.05):
    """Non-zero encoder heads so that every latent depends on the task (fresh leaves)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in meta.items():
        out[k] = {n: (t.detach() + scale * torch.randn(t.shape, generator=g, dtype=t.dtype)
                      if k == "enc" else t.detach()).requires_grad_(t.requires_grad) for n, t in v.items()}
    return out


@pytest.mark.parametrize("shots", [(1, 4, 7), (3, 3, 3), (1, 1, 9, 2)])
@pytest.mark.parametrize("alpha", ["scalar", "per_parameter"])
def test_neutral_balancing_variables_reduce_exactly_to_maml_and_meta_sgd(shots, alpha):
    ep = task(shots)
    taml = learner(alpha=alpha)
    meta = taml.init(0, dtype=D)
    C = ep.ways
    neutral = {"omega": torch.full((C,), 0.7, dtype=D), "gamma": torch.zeros(3, dtype=D),
               "z": torch.zeros(z_dim(taml.model), dtype=D)}
    ours = taml.adapt(meta, ep, neutral, steps=3).params
    params = {**meta["net"], **zero_head(taml.model, C, meta["net"]["fc1.weight"])}
    lr = taml.alpha(meta)
    ref = inner_loop(taml.model, params, ep.support_x, ep.support_y, 3, lr).params   # plain MAML / Meta-SGD
    assert ours.keys() == ref.keys()
    for k in ref:
        assert torch.allclose(ours[k], ref[k], atol=1e-12, rtol=1e-12), k
    assert torch.allclose(taml.model(ours, ep.query_x), taml.model(ref, ep.query_x), atol=1e-12)
    # the presets with every switch off go through the same code and give the same query loss
    off = preset("MAML" if alpha == "scalar" else "Meta-SGD").switches()
    base = TAML(taml.model, dataclasses.replace(taml.config, **off))
    base_meta = {"net": meta["net"], **{k: v for k, v in meta.items() if k in ("lr", "fixed_lr")}, "enc": {}}
    loss, _ = base.task_loss(base_meta, ep)
    ref5 = inner_loop(taml.model, params, ep.support_x, ep.support_y, base.config.inner_steps, lr).params
    assert torch.allclose(loss, F.cross_entropy(taml.model(ref5, ep.query_x), ep.query_y), atol=1e-12)


def test_class_weighted_loss_identity_and_inner_loop_weights():
    ep = task((2, 5, 9))
    losses = torch.rand(ep.support_y.shape[0], dtype=D)
    C = ep.ways
    assert torch.allclose(class_weighted_loss(losses, ep.support_y, torch.full((C,), 1 / C, dtype=D)), losses.mean())
    counts = torch.bincount(ep.support_y).to(D)
    inv = (1 / counts) / (1 / counts).sum()
    per_class = torch.zeros(C, dtype=D).index_add(0, ep.support_y, torch.ones_like(losses))  # unit losses
    totals = inv * per_class                               # each class's total weight omega_c * N_c
    assert torch.allclose(totals, totals[0].expand(C))
    # one inner step with omega is one gradient step on class_weighted_loss
    taml = learner()
    meta = taml.init(1, dtype=D)
    omega = torch.softmax(torch.tensor([0.3, -1.0, 0.5], dtype=D), 0)
    step = balanced_inner_loop(taml.model, meta["net"], 0.1, ep.support_x, ep.support_y, C, omega, steps=1).params
    params = {**meta["net"], **zero_head(taml.model, C, meta["net"]["fc1.weight"])}
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    per_ex = F.cross_entropy(taml.model(params, ep.support_x), ep.support_y, reduction="none")
    grads = torch.autograd.grad(class_weighted_loss(per_ex, ep.support_y, omega), list(params.values()))
    for (k, v), g in zip(params.items(), grads):
        assert torch.allclose(step[k], v - 0.1 * g, atol=1e-12), k


def test_omega_is_a_probability_vector_invariant_to_support_order_and_permutes_with_labels():
    ep = task((1, 4, 7, 2))
    taml = learner()
    meta = randomise(taml.init(0, dtype=D))
    om = taml.readouts(meta, ep)["omega"]
    assert om.shape == (4,) and (om > 0).all() and torch.allclose(om.sum(), torch.tensor(1.0, dtype=D))
    perm = torch.randperm(ep.support_y.shape[0], generator=torch.Generator().manual_seed(3))
    shuffled = dataclasses.replace(ep, support_x=ep.support_x[perm], support_y=ep.support_y[perm])
    assert torch.allclose(taml.readouts(meta, shuffled)["omega"], om, atol=1e-12)
    relabel = torch.tensor([2, 0, 3, 1])                   # class c becomes relabel[c]
    renamed = dataclasses.replace(ep, support_y=relabel[ep.support_y], query_y=relabel[ep.query_y])
    om2 = taml.readouts(meta, renamed)["omega"]
    assert torch.allclose(om2[relabel], om, atol=1e-12)
    assert not torch.allclose(om, om.mean().expand(4), atol=1e-3)   # it is not trivially uniform


def test_task_code_is_invariant_to_instance_and_class_order():
    ep = task((1, 4, 7, 2))
    taml = learner()
    psi = randomise(taml.init(0, dtype=D))["enc"]
    post = encode_task(psi, taml.config, ep.support_x, ep.support_y, 4)
    perm = torch.randperm(ep.support_y.shape[0], generator=torch.Generator().manual_seed(5))
    relabel = torch.tensor([3, 1, 0, 2])
    post2 = encode_task(psi, taml.config, ep.support_x[perm], relabel[ep.support_y[perm]], 4)
    for name in ("gamma", "z"):
        for a, b in zip(post[name], post2[name]):
            assert torch.allclose(a, b, atol=1e-12), name
    assert post["gamma"][0].shape == (3,) and post["z"][0].shape == (z_dim(taml.model),)


def test_stat_pool_cardinality_and_one_shot_class():
    h = torch.randn(5, 3, dtype=D)
    pooled = stat_pool(h, torch.tensor(0.25, dtype=D))
    assert pooled.shape == (3, 3)
    assert torch.allclose(pooled[:, 0], h.mean(0)) and torch.allclose(pooled[:, 1], h.var(0, unbiased=False))
    assert torch.all(pooled[:, 2] == 0.25)
    assert cardinality(torch.tensor(1.0), 25) == 0 and cardinality(torch.tensor(25.0), 25) == 1
    one = stat_pool(torch.randn(1, 4, dtype=D), torch.tensor(0.0, dtype=D))
    assert torch.isfinite(one).all() and torch.all(one[:, 1] == 0)
    taml = learner()
    one_shot = task((1, 1, 1))
    post = encode_task(randomise(taml.init(0, dtype=D))["enc"], taml.config, one_shot.support_x, one_shot.support_y, 3)
    assert all(torch.isfinite(t).all() for pair in post.values() for t in pair)


def test_kl_matches_torch_and_monte_carlo_is_zero_at_prior_and_nonnegative():
    g = torch.Generator().manual_seed(0)
    mu, sigma = torch.randn(6, generator=g, dtype=D), torch.rand(6, generator=g, dtype=D) + 0.3
    q = torch.distributions.Normal(mu, sigma)
    p = torch.distributions.Normal(torch.zeros(6, dtype=D), torch.ones(6, dtype=D))
    ours = kl_to_standard_normal(mu, sigma)
    assert torch.allclose(ours, torch.distributions.kl_divergence(q, p).sum())
    s = mu + sigma * torch.randn(200_000, 6, generator=g, dtype=D)
    mc = (q.log_prob(s) - p.log_prob(s)).sum(-1).mean()
    assert abs(mc - ours) / ours < 0.01
    assert kl_to_standard_normal(torch.zeros(4, dtype=D), torch.ones(4, dtype=D)) == 0
    for _ in range(20):
        m, s = torch.randn(3, generator=g, dtype=D), torch.rand(3, generator=g, dtype=D) + 1e-3
        assert kl_to_standard_normal(m, s) >= 0


def test_objective_with_beta_one_is_the_paper_objective():
    ep = task((2, 3, 6))
    taml = learner(beta_kl=1.0)
    meta = randomise(taml.init(0, dtype=D))
    loss, metrics = taml.task_loss(meta, ep)
    post = taml.posterior(meta, ep)
    latents = taml.sample_latents(post, taml._gen(ep))
    logits = taml.model(taml.adapt(meta, ep, latents).params, ep.query_x)
    kl = sum(kl_to_standard_normal(*p) for p in post.values())
    n = ep.support_x.shape[0] + ep.query_x.shape[0]
    assert torch.allclose(loss, F.cross_entropy(logits, ep.query_y) + kl / n, atol=1e-12)
    assert metrics["kl"] > 0


def test_every_mean_and_sigma_head_gets_a_gradient_through_the_reparameterised_sample():
    ep = task((2, 5, 3))
    taml = learner(beta_kl=0.0)                      # the query loss alone (no KL gradient)
    meta = randomise(taml.init(0, dtype=D))
    loss, _ = taml.task_loss(meta, ep)
    names = [n for n in meta["enc"] if n.split("_")[-1].split(".")[0] in ("mu", "sigma")]
    assert len(names) == 12                          # (mu, sigma) x (weight, bias) x (omega, gamma, z)
    grads = dict(zip(names, torch.autograd.grad(loss, [meta["enc"][n] for n in names])))
    # omega = softmax(omega~) is invariant to adding one constant to every class, and omega_mu.bias
    # adds exactly that (the same scalar to every class's logit): its gradient is 0 in exact
    # arithmetic (whether rounding leaves 1e-17 or 0 depends on the CPU's kernels), so it is checked
    # against the size of the other gradients, not against 0.
    scale = max(g.abs().max().item() for g in grads.values())
    assert grads["omega_mu.bias"].abs().max() <= 1e-10 * scale
    for n, g in grads.items():
        if n != "omega_mu.bias":
            assert g.abs().max() > 1e-6 * scale, n
    # with a non-reparameterised sample (.sample(): no path through sigma) the sigma heads get nothing
    post = taml.posterior(meta, ep)
    detached = {k: torch.distributions.Normal(mu, s).sample() for k, (mu, s) in post.items()}
    lo = F.cross_entropy(taml.model(taml.adapt(meta, ep, detached).params, ep.query_x), ep.query_y)
    g = torch.autograd.grad(lo, [meta["enc"]["z_sigma.weight"]], allow_unused=True)[0]
    assert g is None or g.abs().sum() == 0
    # mu and raw-sigma outputs are not rectified: they take negative values
    mu = post["gamma"][0]
    raw = torch.log(torch.expm1(post["z"][1]))
    assert (mu < 0).any() and (raw < 0).any()


def test_z_is_applied_per_unit_as_scale_and_shift():
    net = MLP(3, (1,), 1, head_init="zero")
    theta = {k: v.detach() for k, v in net.init(0, dtype=D).items() if not k.startswith("head")}
    z = torch.tensor([0.5, -0.2], dtype=D)           # one unit: [scale, shift]
    out = modulate(net, theta, z)
    assert torch.allclose(out["fc1.weight"], theta["fc1.weight"] * 1.5)
    assert torch.allclose(out["fc1.bias"], theta["fc1.bias"] - 0.2)
    zero = modulate(net, theta, torch.zeros(2, dtype=D))
    assert all(torch.equal(zero[k], theta[k]) for k in theta)
    conv = Conv4(1, 16, hidden=2, ways=1, blocks=2, head_init="zero")
    ct = {k: v.detach() for k, v in conv.init(0, dtype=D).items()}
    zc = torch.arange(8, dtype=D) / 10
    cm = modulate(conv, ct, zc)
    assert torch.allclose(cm["conv2.weight"][1], ct["conv2.weight"][1] * (1 + zc[5]))
    assert torch.allclose(cm["conv2.bias"], ct["conv2.bias"] + zc[6:8])
    # perturbing z changes the adapted query logits
    ep = task((2, 4, 3))
    taml = learner()
    meta = taml.init(0, dtype=D)
    base = {"omega": torch.zeros(3, dtype=D), "gamma": torch.zeros(3, dtype=D),
            "z": torch.zeros(z_dim(taml.model), dtype=D)}
    bumped = {**base, "z": base["z"] + 0.1}
    la = taml.model(taml.adapt(meta, ep, base).params, ep.query_x)
    lb = taml.model(taml.adapt(meta, ep, bumped).params, ep.query_x)
    assert not torch.allclose(la, lb, atol=1e-6)


@pytest.mark.parametrize("layer", ["layer1", "layer2", "head"])
def test_doubling_gamma_doubles_only_that_layers_update(layer):
    ep = task((2, 4, 3))
    taml = learner()
    meta = taml.init(0, dtype=D)
    theta0 = {**meta["net"], **zero_head(taml.model, 3, meta["net"]["fc1.weight"])}
    ones = {n: torch.tensor(1.0, dtype=D) for n in ("layer1", "layer2", "head")}
    args = (taml.model, meta["net"], taml.alpha(meta), ep.support_x, ep.support_y, 3)
    steps = 1 if layer == "head" else 2      # the zero head gives the hidden layers no gradient in step 1
    a = balanced_inner_loop(*args, gamma=ones, steps=steps).params
    b = balanced_inner_loop(*args, gamma={**ones, layer: torch.tensor(2.0, dtype=D)}, steps=steps).params
    for k in a:
        da, db = a[k] - theta0[k], b[k] - theta0[k]
        mine = k.startswith("head") if layer == "head" else k.startswith("fc" + layer[-1])
        assert torch.allclose(db, 2 * da if mine else da, atol=1e-12), k
        if mine:
            assert da.abs().sum() > 0


def test_meta_gradient_matches_finite_differences():
    ep = task((1, 3, 2), queries=2)
    taml = learner(beta_kl=0.5, inner_steps=1, hidden=(4,))
    meta = randomise(taml.init(2, dtype=D))
    params = leaves(meta)
    grads, _ = taml.meta_gradient(meta, [ep])
    g = torch.Generator().manual_seed(0)
    eps = 1e-6
    checked = 0
    for p, gp in zip(params, grads):
        for _ in range(2):
            i = int(torch.randint(p.numel(), (), generator=g))
            with torch.no_grad():
                old = p.view(-1)[i].item()
                p.view(-1)[i] = old + eps
                up = taml.task_loss(meta, ep)[0].item()
                p.view(-1)[i] = old - eps
                down = taml.task_loss(meta, ep)[0].item()
                p.view(-1)[i] = old
            fd = (up - down) / (2 * eps)
            assert abs(fd - gp.view(-1)[i].item()) < 1e-6 * max(1.0, abs(fd)), (p.shape, i)
            checked += 1
    assert checked == 2 * len(params) and len(params) > 20


def test_monte_carlo_prediction_collapses_to_the_mean_as_sigma_vanishes():
    ep = task((2, 6, 1))
    taml = learner(mc_test=4)
    meta = randomise(taml.init(0, dtype=D))
    probs = taml.predict(meta, ep)
    assert probs.shape == (ep.query_x.shape[0], 3)
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[0], dtype=D))
    assert not torch.allclose(probs, taml.predict(meta, ep, mean=True), atol=1e-6)
    for name in ("omega", "gamma", "z"):
        with torch.no_grad():
            meta["enc"][f"{name}_sigma.weight"].zero_()
            meta["enc"][f"{name}_sigma.bias"].fill_(-40.0)            # sigma = softplus(-40) ~ 4e-18
    assert torch.allclose(taml.predict(meta, ep), taml.predict(meta, ep, mean=True), atol=1e-10)


@pytest.mark.parametrize("shots", [(1,), (1, 1), (5, 1, 30), (2,) * 10])
def test_shapes_for_any_ways_and_shots(shots):
    ep = task(shots)
    taml = learner()
    meta = taml.init(0, dtype=D)
    loss, m = taml.task_loss(meta, ep)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert taml.predict(meta, ep, samples=2).shape == (ep.query_x.shape[0], len(shots))
    post = taml.posterior(meta, ep)
    assert post["omega"][0].shape == (len(shots),) and post["gamma"][0].shape == (3,)


def test_conv4_learner_and_conv_encoder():
    images = torch.rand(6, 8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    eps = AnyShotSampler(images, range(6), ways=3, max_shots=4, queries=2).batch(2, 0)
    net = Conv4(1, 16, hidden=4, ways=1, head_init="zero")
    taml = TAML(net, TamlConfig(k_max=4, inner_steps=1, eval_steps=1, mc_test=2))
    meta = taml.init(0, dtype=D)
    assert meta["enc"]["z_mu.weight"].shape[0] == 2 * 4 * 4 and meta["enc"]["gamma_mu.weight"].shape[0] == 5
    grads, m = taml.meta_gradient(meta, [e.to(dtype=D) for e in eps])
    assert all(torch.isfinite(g).all() for g in grads)
    assert "bn1.weight" not in meta["lr"]                 # batch norm is meta-learned, never adapted
    assert taml.predict(meta, eps[0].to(dtype=D)).shape == (6, 3)


def test_task_metrics_tail_recall_and_macro_accuracy():
    ep = task((1, 5, 5), queries=2)
    probs = F.one_hot(torch.tensor([1, 1, 1, 1, 2, 2]), 3).to(D)   # the 1-shot class 0 is never predicted
    m = task_metrics(probs, ep)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["tail_recall"] == 0.0
    assert m["macro_accuracy"] == pytest.approx(2 / 3)


def test_checkpoint_keeps_switches(tmp_path):
    taml = learner()
    meta = taml.init(0)
    path = save_taml(tmp_path / "taml.pt", taml, meta)
    loaded, info = load_taml(path, taml)
    assert info["config"]["omega"] == "learned"
    assert all(torch.equal(a, b) for a, b in zip(leaves(loaded), leaves(meta)))
    with pytest.raises(ValueError, match="z=True"):
        load_taml(path, learner(z=False))
    with pytest.raises(ValueError, match="bayesian"):
        load_taml(path, learner(bayesian=False))


def test_bad_input_errors():
    taml = learner()
    meta = taml.init(0, dtype=D)
    ep = task((2, 3, 4))
    keep = ep.support_y != 1
    empty = dataclasses.replace(ep, support_x=ep.support_x[keep], support_y=ep.support_y[keep])
    with pytest.raises(ValueError, match="at least one support example"):
        taml.task_loss(meta, empty)
    with pytest.raises(ValueError, match="ways=6"):
        AnyShotSampler(torch.rand(4, 10, 2), range(4), ways=6, max_shots=3, queries=2)
    with pytest.raises(ValueError, match="omega"):
        TamlConfig(omega="yes")
    with pytest.raises(ValueError, match="beta_kl"):
        TamlConfig(beta_kl=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        TamlConfig(alpha="per_layer")
    with pytest.raises(TypeError, match="MLP and Conv4"):
        TAML(object(), TamlConfig())
    with pytest.raises(ValueError, match="unknown method"):
        preset("TAML++")
    bad = randomise(meta)
    with torch.no_grad():
        bad["enc"]["z_sigma.bias"].fill_(-800.0)        # sigma underflows to 0: KL = inf
    with pytest.raises(FloatingPointError, match="KL"):
        taml.task_loss(bad, ep)
    nan_x = dataclasses.replace(ep, query_x=torch.full_like(ep.query_x, float("nan")))
    with pytest.raises(ValueError, match=r"query inputs \(query_x\) contains NaN"):   # the data, not inner_lr
        taml.task_loss(meta, nan_x)


def test_inverse_scaled_weights_keep_the_uniform_total_and_average_the_class_means():
    """omega_c = N / (C^2 N_c): per-example weights C omega_{y_i} sum to N (as uniform ones), the loss is the
    mean over classes of each class's mean loss, and the usual 1/N_c (summing to 1) is HM/AM times it."""
    counts = torch.tensor([1.0, 25, 25, 25, 25], dtype=D)
    y = torch.cat([torch.full((int(k),), c) for c, k in enumerate(counts)])
    cfg = preset("Meta-SGD 1/N (uniform scale)")
    omega, _, _ = balancing_variables({}, cfg, MLP(6, (5,), 1), counts)
    assert torch.allclose((5 * omega[y]).sum(), counts.sum())
    losses = torch.rand(len(y), generator=torch.Generator().manual_seed(0), dtype=D)
    per_class = torch.stack([losses[y == c].mean() for c in range(5)])
    assert torch.allclose(class_weighted_loss(losses, y, omega), per_class.mean())
    inv, _, _ = balancing_variables({}, preset("Meta-SGD 1/N"), MLP(6, (5,), 1), counts)
    hm_over_am = (5 / (1 / counts).sum()) / counts.mean()
    assert torch.allclose(inv, omega * hm_over_am) and torch.allclose(inv.sum(), torch.ones((), dtype=D))
    even = torch.full((5,), 7.0, dtype=D)                            # balanced task: both are uniform
    assert torch.allclose(balancing_variables({}, cfg, MLP(6, (5,), 1), even)[0], torch.full((5,), 0.2, dtype=D))


def test_predict_steps_matches_separate_inner_loops():
    taml = learner()
    meta = randomise(taml.init(0, dtype=D))
    ep = task((1, 4, 7))
    both = taml.predict_steps(meta, ep, (2, 4), samples=3)
    assert set(both) == {2, 4} and both[4].shape == (ep.query_x.shape[0], 3)
    for k in (2, 4):
        assert torch.allclose(both[k], taml.predict(meta, ep, samples=3, steps=k), atol=1e-12)
    res = evaluate_steps(taml, meta, [ep, task((3, 3, 3), seed=1)], (2, 4), mean=True)
    assert set(res) == {2, 4} and len(res[4]["accuracy"]) == 2
    with pytest.raises(ValueError, match="steps"):
        taml.predict_steps(meta, ep, ())


def test_regime_task_builders():
    from tutor.experiments import bayesian_taml as exp

    assert exp.imbalance_shots(1) == [10] * 5
    shots = exp.imbalance_shots(25)
    assert shots[0] / shots[-1] == pytest.approx(25, rel=0.15) and abs(sum(shots) - 50) <= 2
    assert shots == sorted(shots, reverse=True)
    eps = exp.imbalance_tasks(25, 3, seed=0)
    assert all(sorted(torch.bincount(e.support_y).tolist(), reverse=True) == shots for e in eps)
    x = torch.randn(7, 16, dtype=D)
    for angle in (0.3, math.pi / 2):
        r = exp._rotate(x, angle)
        assert torch.allclose(r.norm(dim=1), x.norm(dim=1)) and torch.equal(r[:, 4:], x[:, 4:])
    assert torch.allclose(exp._rotate(x, math.pi / 2)[:, 2:4], x[:, 0:2], atol=1e-12)
    s0 = exp.shift_tasks(0.0, 2, seed=5)
    ref = exp.AnyShotVectorTasks("id").batch(2, 5)
    assert all(torch.allclose(a.support_x, b.support_x) for a, b in zip(s0, ref))
    assert exp.task_groups([[3, 3], [1, 60], [30, 30]]) == ["balanced/small", "imbalanced/large", "balanced/large"]
    with pytest.raises(ValueError, match="imbalance ratio"):
        exp.imbalance_shots(0.5)
    with pytest.raises(ValueError, match="shift strength"):
        exp.shift_tasks(1.5, 2, 0)


def test_experiment_driver_smoke(tmp_path):
    import json

    from tutor.experiments import bayesian_taml as exp

    out = tmp_path / "r.json"
    methods = ["Meta-SGD", "omega-TAML", "Deterministic TAML"]
    assert exp.main(["--seeds", "0", "1", "--ablation-seeds", "0", "--steps", "2", "--tune-steps", "1",
                     "--n-val", "3", "--n-test", "4", "--n-regime", "2", "--mc", "2",
                     "--methods", *methods, "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert {r["method"] for r in rec["runs"]} == set(methods)
    assert {r["arm"] for r in rec["runs"]} == {"bn", "no-bn"}
    run = rec["runs"][0]
    assert set(run["id"]) == {"5", "10"} and len(run["id"]["10"]["accuracy"]) == 4
    balanced = [min(c) == max(c) for c in rec["tasks"]["id"]["counts"]]
    assert all((t is None) == b for t, b in zip(run["id"]["10"]["tail_recall"], balanced))
    assert set(rec["tuning"]) >= {"Meta-SGD", "omega-TAML", "Bayesian TAML (beta 0.1)", "Bayesian TAML (beta 1)"}
    assert rec["bayesian_choice"]["method"] in exp.BAYES
    maps = rec["regime"]
    assert isinstance(maps, list) and {m["factor"].split()[0] for m in maps} == {"class-imbalance", "OOD"}
    assert all(len(d) == 2 for m in maps for d in m["per_seed"].values())     # one difference per seed
    assert "command" in rec and "torch" in rec and "date" in rec
    again = tmp_path / "again.json"                 # --finish rebuilds the results from the partial record
    assert exp.main(["--finish", str(exp.RUNS_DIR / "r.partial.json"), "--out", str(again)]) == 0
    assert json.loads(again.read_text())["regime"] == maps


def test_driver_reuse_is_checked_and_reuses_only_identical_settings(tmp_path, monkeypatch):
    import json

    from tutor.experiments import bayesian_taml as exp

    def no_training(*a, **k):
        raise AssertionError("a cached setting was trained again")

    monkeypatch.setattr(exp, "train_method", no_training)
    cached = {"grid": {"0.01": 0.5, "0.02": 0.6, "0.04": None, "0.08": 0.4}, "chosen": 0.02}
    t = exp._tune("Meta-SGD", True, None, [], 3, (0.01, 0.02, 0.04), cached=cached)    # interior: nothing trained
    assert t["chosen"] == 0.02 and not t["on_edge"] and t["grid"]["0.04"] is None
    parser_args = ["--steps", "2", "--tune-steps", "1", "--n-val", "3", "--n-test", "4", "--n-regime", "0"]
    counts = {"id": [[1, 2]], "ood": [[3, 3]]}
    rec = {"command": "python -m tutor.experiments.bayesian_taml " + " ".join(parser_args[:-2] + ["--n-regime", "2"]),
           "tasks": {"id": {"counts": counts["id"]}, "ood": {"counts": counts["ood"]}},
           "runs": [{"arm": "bn", "seed": 0, "method": "MAML", "prediction": "point", "inner_lr": 0.5}]}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="n_regime: 2 there, 0 here"):
        exp.main(parser_args + ["--reuse", str(path), "--methods", "MAML", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()
    assert exp._reused_runs(rec, "bn", 0, "MAML", 0.5, False)[0]["reused"]
    assert exp._reused_runs(rec, "bn", 0, "MAML", 0.25, False) == []                # another rate: trained again
    assert exp._reused_runs(rec, "bn", 0, "MAML", 0.5, True) == []                  # no regime scores stored
    assert exp._reused_runs(rec, "no-bn", 0, "MAML", 0.5, False) == []
    runs = [{"arm": a, "seed": s, "method": m} for a, s, m in
            [("bn", 0, "A"), ("bn", 0, "B"), ("bn", 1, "A"), ("no-bn", 0, "A"), ("no-bn", 0, "B")]]
    assert exp.arms_present({"runs": runs}) == {"bn": [0], "no-bn": [0]}       # bn seed 1 lacks B
