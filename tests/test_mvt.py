"""MVT-style variance transfer: deviations, the three transfers, prototypes, losses, heads, toy, errors."""

import pytest
import torch

from tutor.data.episodes import EpisodeSampler, fixed_episodes
from tutor.meta import ProtoNet, prototype_logits
from tutor.nets import MLP, Conv4
from tutor.papers import mvt
from tutor.papers.mvt import (
    MVT,
    MVTConfig,
    ToyConfig,
    augmented_prototype_logits,
    class_spread,
    diagonal_logits,
    donor_deviations,
    gated_transfer,
    mahalanobis_logits,
    matched_noise,
    mvt_samplers,
    naive_transfer,
    stats_transfer,
    toy_accuracies,
    transfer_init,
    transferred_covariance,
    virtual_loss,
    virtual_samples,
)

D = torch.float64


def _gen(s=0):
    return torch.Generator().manual_seed(s)


def _donors(d=3, m=6, dim=5, seed=0):
    return torch.randn(d, m, dim, generator=_gen(seed), dtype=D) * 2 + 1


def test_donor_deviations_zero_mean_and_shapes():
    h = _donors()
    v, mu_d, sigma_d = donor_deviations(h)
    assert v.shape == h.shape and mu_d.shape == (3, 5) and sigma_d.shape == (3, 5)
    assert torch.allclose(v.mean(1), torch.zeros(3, 5, dtype=D), atol=1e-12)
    assert torch.allclose(mu_d[:, None] + v, h)
    assert torch.allclose(sigma_d, h.std(1, unbiased=False), atol=1e-5)


def test_naive_transfer_reproduces_the_deviation():
    v, _, _ = donor_deviations(_donors())
    mu_c = torch.randn(3, 5, generator=_gen(1), dtype=D)
    h_hat = virtual_samples(mu_c, naive_transfer(v))
    assert torch.equal(naive_transfer(v), v)
    assert torch.allclose(h_hat - mu_c[:, None], v, atol=1e-12, rtol=0)


def test_gate_one_is_naive_and_zero_collapses_to_the_mean():
    v, _, _ = donor_deviations(_donors())
    mu = torch.randn(3, 5, generator=_gen(2), dtype=D)
    phi = transfer_init(5, 8, _gen(0), D)
    mu_rep = mu[:, None].expand_as(v)
    ones, zeros = torch.ones_like(v), torch.zeros_like(v)
    assert torch.equal(gated_transfer(phi, mu_rep, v, g=ones), naive_transfer(v))
    assert torch.equal(virtual_samples(mu, gated_transfer(phi, mu_rep, v, g=zeros)), mu[:, None].expand_as(v))
    learned = gated_transfer(phi, mu_rep, v)                  # zero last layer: gate 0.5 everywhere
    assert torch.allclose(learned, 0.5 * v)


def test_stats_matching_with_the_donor_spread_is_naive_and_scale_invariant():
    h = _donors()
    v, _, sigma_d = donor_deviations(h, eps=0.0)
    mu_c = torch.randn(3, 6, 5, generator=_gen(3), dtype=D)
    phi = transfer_init(5, 8, _gen(0), D)
    assert torch.allclose(stats_transfer(phi, mu_c, v, sigma_d[:, None], sigma_c=sigma_d[:, None]), v)
    target = torch.rand(3, 1, 5, generator=_gen(4), dtype=D) + 0.5
    v2, _, s2 = donor_deviations(7.5 * h, eps=0.0)             # z = v / sigma_d does not change with scale
    assert torch.allclose(stats_transfer(phi, mu_c, v2, s2[:, None], sigma_c=target),
                          stats_transfer(phi, mu_c, v, sigma_d[:, None], sigma_c=target))


def test_matched_noise_has_the_norm_of_the_deviation():
    v, _, _ = donor_deviations(_donors())
    e = matched_noise(v, _gen(0))
    assert torch.allclose(e.norm(dim=-1), v.norm(dim=-1))
    assert not torch.allclose(e, v)


def test_option_p_without_virtual_samples_is_protonet_and_averages_otherwise():
    g = _gen(5)
    hs, hq = torch.randn(10, 4, generator=g, dtype=D), torch.randn(7, 4, generator=g, dtype=D)
    y = torch.arange(5).repeat_interleave(2)
    empty = torch.zeros(5, 0, 4, dtype=D)
    assert torch.equal(augmented_prototype_logits(hs, y, hq, 5, empty), prototype_logits(hs, y, hq, 5))
    virt = torch.randn(5, 3, 4, generator=g, dtype=D)
    mu = torch.stack([hs[y == c].mean(0) for c in range(5)])
    p = (2 * mu + virt.sum(1)) / 5                              # (K mu + sum h^) / (K + M)
    assert torch.allclose(augmented_prototype_logits(hs, y, hq, 5, virt), -torch.cdist(hq, p).pow(2))


def test_caveat_zero_mean_deviations_leave_the_prototype_in_place():
    """Adding the full set of a donor's deviations (zero mean exactly) does not move the prototype."""
    v, _, _ = donor_deviations(_donors(d=1, m=8, dim=3))
    mu = torch.randn(1, 3, generator=_gen(6), dtype=D)
    virt = virtual_samples(mu, v)                                # (1, 8, 3)
    p = (1 * mu + virt.sum(1)) / (1 + 8)
    assert torch.allclose(p, mu, atol=1e-12)


def test_virtual_loss_prefers_samples_near_their_own_mean():
    mu = torch.tensor([[0.0, 0.0], [5.0, 0.0]], dtype=D)
    near = mu[:, None] + 0.1
    far = mu.flip(0)[:, None] + 0.1                              # each sample sits on the other class
    assert virtual_loss(near, mu) < 0.01 < virtual_loss(far, mu)


def test_heads_closed_forms():
    g = _gen(7)
    q, mu = torch.randn(6, 3, generator=g, dtype=D), torch.randn(4, 3, generator=g, dtype=D)
    a = torch.randn(3, 3, generator=g, dtype=D)
    cov = a @ a.T + 0.5 * torch.eye(3, dtype=D)
    diff = q[:, None] - mu[None]
    want = -torch.einsum("qni,ij,qnj->qn", diff, torch.linalg.inv(cov), diff)
    assert torch.allclose(mahalanobis_logits(q, mu, cov), want)
    assert torch.allclose(mahalanobis_logits(q, mu, torch.eye(3, dtype=D)), -torch.cdist(q, mu).pow(2))
    var = torch.rand(4, 3, generator=g, dtype=D) + 0.1
    dist = torch.distributions.Normal(mu[None], var.sqrt()[None]).log_prob(q[:, None]).sum(-1)
    const = 1.5 * torch.log(torch.tensor(2 * torch.pi, dtype=D))
    assert torch.allclose(diagonal_logits(q, mu, var), dist + const)


def test_transferred_covariance_and_spread():
    v = torch.randn(40, 3, generator=_gen(8), dtype=D)
    s = v.T @ v / 40
    assert torch.allclose(transferred_covariance(v, 0.0, eps=0.0), s)
    iso = transferred_covariance(v, 1.0, eps=0.0)
    assert torch.allclose(iso, torch.trace(s) / 3 * torch.eye(3, dtype=D))
    y = torch.tensor([0, 0, 1, 1, 1])
    emb = torch.randn(5, 2, generator=_gen(9), dtype=D)
    var = class_spread(emb, y, 2, eps=0.0)
    assert torch.allclose(var[1], emb[2:].var(0))


def _glyph_like(classes=30, instances=12):
    return torch.rand(classes, instances, 1, 28, 28, generator=_gen(10))


def test_samplers_disjoint_and_reproducible():
    images = _glyph_like()
    base, novel = list(range(20)), list(range(20, 30))
    train, test = mvt_samplers(images, base, novel, donors=4, donor_shots=3, queries=4, test_queries=4)
    assert set(base).isdisjoint(novel)
    for sampler, pool in ((train, base), (test, novel)):
        for s in range(5):
            ep = sampler.sample(s)
            targets = set(ep.classes.tolist())
            assert targets <= set(pool)
            assert ep.donor_x.shape[:2] == (4, 3)
        a, b = sampler.sample(3), sampler.sample(3)
        assert torch.equal(a.support_x, b.support_x) and torch.equal(a.donor_x, b.donor_x)
    assert set(test.sampler.donor_pool) == set(base)


def test_donor_classes_are_base_classes_at_test():
    images = torch.arange(30.0)[:, None, None, None, None].expand(30, 12, 1, 28, 28).contiguous()
    base, novel = list(range(20)), list(range(20, 30))
    _, test = mvt_samplers(images, base, novel, donors=4, donor_shots=3, test_queries=4, strength=0.0)
    for s in range(10):
        ep = test.sample(s)
        donor_ids = ep.donor_x[:, :, 0, 0, 0].flatten().long().tolist()
        assert set(donor_ids) <= set(base)
        assert set(ep.classes.tolist()) <= set(novel)


def test_bad_input_errors():
    images = _glyph_like()
    with pytest.raises(ValueError, match="donors=.*more donor classes"):
        mvt_samplers(images, list(range(8)), list(range(20, 30)), donors=4)
    with pytest.raises(ValueError, match="overlaps the target"):
        mvt_samplers(images, list(range(20)), list(range(15, 30)))
    with pytest.raises(ValueError, match="donor_shots must be >= 2"):
        mvt_samplers(images, list(range(20)), list(range(20, 30)), donor_shots=1)
    with pytest.raises(ValueError, match="at least 2 examples per class"):
        class_spread(torch.randn(5, 3), torch.arange(5), 5)
    with pytest.raises(ValueError, match="at least 2 samples"):
        donor_deviations(torch.randn(3, 1, 4))
    with pytest.raises(ValueError, match="transfer must be one of"):
        MVTConfig(transfer="magic")
    with pytest.raises(ValueError, match="head must be one of"):
        MVTConfig(head="svm")
    with pytest.raises(ValueError, match="lambda_v"):
        MVTConfig(lambda_v=-1.0)
    plain = EpisodeSampler(images, list(range(20)), 5, 1, 4)
    learner = MVT(Conv4(hidden=8, ways=0))
    with pytest.raises(ValueError, match="donor classes"):
        learner.task_loss(learner.init(0), plain.sample(0))
    with pytest.raises(ValueError, match="strength"):
        mvt.shared_nuisance(images[0], _gen(0), -1.0)


def _mlp_setup(transfer="gated", **kw):
    net = MLP(12, hidden=(16, 8), ways=0)
    images = torch.randn(30, 10, 12, generator=_gen(11))
    sampler = EpisodeSampler(images, list(range(20)), 5, 1, 3, donors=4, donor_shots=3)
    learner = MVT(net, MVTConfig(transfer=transfer, **kw))
    return learner, learner.init(0, dtype=torch.float64), sampler.sample(0).to(dtype=torch.float64)


def test_mvt_with_plain_prototypes_is_protonet_exactly():
    learner, meta, ep = _mlp_setup(virtual=0)
    proto = ProtoNet(learner.model)
    assert torch.equal(learner.test_logits(meta, ep, "prototype"), proto.logits(meta, ep))
    loss, _ = learner.task_loss(meta, ep)
    ref, _ = proto.task_loss(meta, ep)
    assert torch.allclose(loss, ref)
    learner.config.option, learner.config.test_virtual = "P", 0
    assert torch.equal(learner.test_logits(meta, ep, "augmented"), proto.logits(meta, ep))


def test_virtual_loss_sends_gradients_to_the_transfer_module():
    learner, meta, ep = _mlp_setup(lambda_v=1.0, option="Q")
    loss, _ = learner.task_loss(meta, ep)
    grads = torch.autograd.grad(loss, list(meta["transfer"].values()), allow_unused=True)
    assert all(g is not None for g in grads)
    assert grads[meta_keys(meta).index("w2")].abs().sum() > 0
    # option Q with lambda_V = 0: phi does not enter the loss at all
    learner.config.lambda_v = 0.0
    loss, _ = learner.task_loss(meta, ep)
    grads = torch.autograd.grad(loss, list(meta["transfer"].values()), allow_unused=True)
    assert all(g is None for g in grads)
    # option P with lambda_V = 0: phi gets gradients through L_Q only
    learner.config.option = "P"
    loss, _ = learner.task_loss(meta, ep)
    grads = torch.autograd.grad(loss, list(meta["transfer"].values()), allow_unused=True)
    assert grads[meta_keys(meta).index("w2")] is not None


def meta_keys(meta):
    return list(meta["transfer"].keys())


def test_virtual_loss_gradient_matches_finite_differences():
    learner, meta, ep = _mlp_setup(lambda_v=1.0)
    w = meta["transfer"]["b2"]

    def f():
        return learner.task_loss(meta, ep)[0]

    (g,) = torch.autograd.grad(f(), [w])
    i, h = 3, 1e-6
    with torch.no_grad():
        w[i] += h
        up = f()
        w[i] -= 2 * h
        down = f()
        w[i] += h
    assert torch.allclose(g[i], (up - down) / (2 * h), rtol=1e-5, atol=1e-8)


def test_every_transfer_and_head_runs_on_glyph_shaped_episodes():
    images = _glyph_like()
    train, test = mvt_samplers(images, list(range(20)), list(range(20, 30)), donors=4, donor_shots=3,
                               queries=3, test_queries=3)
    for kind in mvt.TRANSFERS:
        learner = MVT(Conv4(hidden=8, ways=0), MVTConfig(transfer=kind, virtual=2, test_virtual=6))
        meta = learner.init(0)
        loss, m = learner.task_loss(meta, train.sample(0))
        assert loss.dim() == 0 and torch.isfinite(loss) and 0 <= m["accuracy"] <= 1
        for head in mvt.HEADS:
            r = learner.evaluate(meta, fixed_episodes(test, 1)[0], head=head)
            assert 0 <= r["accuracy"] <= 1


def test_nuisance_off_is_identity_and_on_changes_images():
    x = _glyph_like(2, 3).flatten(0, 1)
    assert torch.equal(mvt.shared_nuisance(x, _gen(0), 0.0), x)
    y = mvt.shared_nuisance(x, _gen(0), 1.0)
    assert y.shape == x.shape and not torch.allclose(y, x) and y.min() >= 0 and y.max() <= 1


def test_toy_mahalanobis_from_transferred_variation_beats_euclidean():
    r = toy_accuracies(ToyConfig(), episodes=500, seed=0)
    gap = (r["mahalanobis"] - r["euclidean"]).mean().item()
    assert gap >= 0.10
    assert (r["oracle"].mean() - r["mahalanobis"].mean()).abs() < 0.03
    # the caveat: averaging in virtual samples does not help the mean prototype
    assert (r["augmented"] - r["euclidean"]).mean() < 0.01


def test_toy_without_transfer_mahalanobis_is_euclidean():
    r = toy_accuracies(ToyConfig(), episodes=50, seed=1, transfer="none")
    assert torch.equal(r["mahalanobis"], r["euclidean"]) and torch.equal(r["augmented"], r["euclidean"])


def test_toy_config_errors():
    with pytest.raises(ValueError, match="donor_samples"):
        ToyConfig(donor_samples=1)
    with pytest.raises(ValueError, match="toy transfer"):
        mvt.toy_transfer(torch.zeros(1, 2, 3, 2), 2, 2, "gated", _gen(0))


def test_experiment_driver_smoke(tmp_path):
    import json

    from tutor.experiments import mvt as driver
    from tutor.train import load_checkpoint

    out, ckpt = tmp_path / "mvt.json", tmp_path / "mvt.pt"
    assert driver.main(["--seeds", "0", "1", "--steps", "2", "--lr-grid", "1e-3", "--val-episodes", "2",
                        "--test-episodes", "3", "--hidden", "8", "--out", str(out), "--checkpoint", str(ckpt)]) == 0
    record = json.loads(out.read_text())
    assert set(record["tuning"]["chosen"]) == set(driver.METHODS)
    seed0 = record["scores"]["nuisance"]["0"]
    assert {"protonet/prototype", "gated/prototype", "gated/mahalanobis", "noise/prototype",
            "naive/prototype"} <= set(seed0)
    assert all(len(v) == 3 for v in seed0.values())
    assert set(record["scores"]["no_nuisance"]["1"]) == {"protonet/prototype", "gated/prototype"}
    row = record["summary"]["nuisance"]["gated/prototype"]
    assert len(row["per_seed"]) == 2 and "diff_ci95" in row
    meta, info = load_checkpoint(ckpt)
    assert set(meta) == {"protonet", "gated"} and "transfer" in meta["gated"] and info["hidden"] == 8
    with pytest.raises(ValueError, match="method must be one of"):
        driver.make_learner("maml")
