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


def test_return_freed_memory_is_applied_or_a_no_op():
    import platform

    from tutor.runtime import return_freed_memory

    applied = return_freed_memory()
    assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert return_freed_memory() == applied                                  # idempotent
    with pytest.raises(ValueError, match="threshold"):
        return_freed_memory(0)


def test_uint8_images_give_the_float_banks_episodes():
    """A uint8 bank (a quarter of the memory) gives bit for bit the episodes of the float bank x / 255."""
    raw = torch.randint(0, 256, (30, 12, 1, 28, 28), generator=_gen(11), dtype=torch.uint8)
    base, novel = list(range(20)), list(range(20, 30))
    for strength in (0.0, 1.0):
        small = mvt_samplers(raw, base, novel, donors=4, donor_shots=3, test_queries=4, strength=strength)[1]
        big = mvt_samplers(raw.float() / 255.0, base, novel, donors=4, donor_shots=3, test_queries=4,
                           strength=strength)[1]
        a, b = small.sample(4), big.sample(4)
        for x, y in ((a.support_x, b.support_x), (a.query_x, b.query_x), (a.donor_x, b.donor_x)):
            assert x.dtype == torch.float32 and torch.equal(x, y)


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
                        "--test-episodes", "3", "--hidden", "8", "--world-seeds", "0", "1", "--world-steps", "2",
                        "--world-val-episodes", "3", "--world-test-episodes", "4", "--out", str(out),
                        "--checkpoint", str(ckpt)]) == 0
    record = json.loads(out.read_text())
    assert set(record["tuning"]["chosen"]) == set(driver.METHODS)
    seed0 = record["scores"]["nuisance"]["0"]
    assert {"protonet/prototype", "gated/prototype", "gated/mahalanobis", "noise/prototype",
            "naive/prototype", "gate_zero/prototype", "query_matching/prototype"} <= set(seed0)
    assert all(len(v) == 3 for v in seed0.values())
    assert set(record["scores"]["no_nuisance"]["1"]) == {"protonet/prototype", "gated/prototype"}
    row = record["summary"]["nuisance"]["gated/prototype"]
    assert len(row["per_seed"]) == 2 and "diff_ci95" in row
    assert set(record["openness"]) == {"gated", "gated_p", "gate_zero", "query_matching"}
    assert record["openness"]["gate_zero"]["1"] == 0.0 and len(record["regime"]) == 3
    meta, info = load_checkpoint(ckpt)
    assert set(meta) == {"protonet", "gated", "query_matching"} and "transfer" in meta["gated"] and info["hidden"] == 8
    # a second run trains one method and reuses the others from the first file
    out2 = tmp_path / "mvt2.json"
    assert driver.main(["--seeds", "0", "1", "--steps", "2", "--lr-grid", "1e-3", "--val-episodes", "2",
                        "--test-episodes", "3", "--hidden", "8", "--world-seeds", "0", "--world-steps", "1",
                        "--world-val-episodes", "2", "--world-test-episodes", "2", "--methods", "gate_zero",
                        "--reuse", str(out), "--out", str(out2)]) == 0
    again = json.loads(out2.read_text())
    first, second = record["scores"]["nuisance"]["1"], again["scores"]["nuisance"]["1"]
    assert second["protonet/prototype"] == first["protonet/prototype"]              # reused
    assert second["gate_zero/prototype"] == first["gate_zero/prototype"]            # retrained: seeded, identical
    # a third run retrains reused gated models that lack openness and checks they reproduce their scores
    stripped = {**record, "openness": {m: v for m, v in record["openness"].items() if m != "gated_p"}}
    out3, out4 = tmp_path / "stripped.json", tmp_path / "mvt4.json"
    out3.write_text(json.dumps(stripped))
    assert driver.main(["--seeds", "0", "1", "--steps", "2", "--lr-grid", "1e-3", "--val-episodes", "2",
                        "--test-episodes", "3", "--hidden", "8", "--world-seeds", "0", "--world-steps", "1",
                        "--world-val-episodes", "2", "--world-test-episodes", "2", "--methods", "--add-openness",
                        "--reuse", str(out3), "--out", str(out4)]) == 0
    third = json.loads(out4.read_text())
    assert third["openness"]["gated_p"] == record["openness"]["gated_p"]             # same models, same gates
    assert third["openness_reproduced"] == {"gated_p": {"0": 0.0, "1": 0.0}}        # only the missing ones retrained
    assert third["openness"]["gated"] == record["openness"]["gated"]
    with pytest.raises(SystemExit):
        driver.main(["--add-openness", "--dry-run"])                                # needs --reuse
    with pytest.raises(ValueError, match="reuse needs identical settings"):
        driver.main(["--seeds", "0", "--steps", "3", "--hidden", "8", "--val-episodes", "2", "--test-episodes", "3",
                     "--lr-grid", "1e-3", "--methods", "gate_zero", "--reuse", str(out), "--dry-run"])
    with pytest.raises(SystemExit):
        driver.main(["--methods", "gate_zero", "--dry-run"])
    with pytest.raises(ValueError, match="method must be one of"):
        driver.make_learner("maml")


# ---------------------------------------------------------------------------------------------
# the collapse of the gate under L_V, the gate_zero control and the query-matching objective
# ---------------------------------------------------------------------------------------------
def _mu_u(n=4, m=3, d=5, seed=0):
    g = _gen(seed)
    return torch.randn(n, d, generator=g, dtype=D) * 2, torch.randn(n, m, d, generator=g, dtype=D)


def test_virtual_logit_terms_sum_to_the_logits_and_the_norm_term_cancels():
    mu, u = _mu_u()
    sep, lin, norm = mvt.virtual_logit_terms(mu, u)
    full = -torch.cdist((mu[:, None] + u).flatten(0, 1), mu).pow(2).view(4, 3, 4)
    assert torch.allclose(sep + lin + norm, full, atol=1e-10)
    # -||u||^2 is the same for every class c': the softmax (hence L_V) does not see it
    assert torch.allclose(torch.log_softmax(sep + lin + norm, -1), torch.log_softmax(sep + lin, -1), atol=1e-12)
    assert torch.allclose(norm.expand_as(lin)[..., 0], norm.expand_as(lin)[..., 3])


def test_virtual_loss_at_gate_reduces_to_the_separation_term_and_to_naive():
    mu, v = _mu_u(seed=1)
    sep = -torch.cdist(mu, mu).pow(2)                                         # (N, N)
    ref = torch.nn.functional.cross_entropy(sep, torch.arange(4))
    assert torch.allclose(mvt.virtual_loss_at_gate(mu, v, 0.0), ref, atol=1e-12)
    assert torch.allclose(mvt.virtual_loss_at_gate(mu, v, 1.0), virtual_loss(virtual_samples(mu, v), mu))


def test_expected_virtual_loss_grows_when_zero_mean_deviations_are_passed():
    """Jensen: L_V is convex in u, so +v and -v together score no better than u = 0."""
    mu, v = _mu_u(seed=2)
    for g in (0.25, 0.5, 1.0):
        both = 0.5 * (mvt.virtual_loss_at_gate(mu, v, g) + mvt.virtual_loss_at_gate(mu, -v, g))
        assert both >= mvt.virtual_loss_at_gate(mu, v, 0.0)


def test_query_matching_loss_is_a_gaussian_nll_minimised_at_the_query_variance_and_unbounded_at_zero():
    g = _gen(3)
    r = torch.randn(40, 1, generator=g, dtype=D) * 1.7
    v = torch.randn(10, 1, generator=g, dtype=D)
    # reduction: one dimension, a zero-mean Gaussian whose variance is the mean square of v~ (eps = 0)
    var = v.pow(2).mean()
    nll = -torch.distributions.Normal(0.0, var.sqrt()).log_prob(r).mean() - 0.5 * torch.log(torch.tensor(2 * torch.pi,
                                                                                                          dtype=D))
    assert torch.allclose(mvt.query_matching_loss(v, r, eps=0.0), nll)
    # minimiser: the scale s of v~ = s v with s^2 mean(v^2) = mean(r^2) has zero derivative
    s = (r.pow(2).mean() / v.pow(2).mean()).sqrt().requires_grad_()
    (grad,) = torch.autograd.grad(mvt.query_matching_loss(s * v, r, eps=0.0), [s])
    assert abs(grad.item()) < 1e-9
    # closing the gate is the worst answer: the loss grows without bound as the variance goes to 0
    losses = [mvt.query_matching_loss(c * v, r, eps=0.0).item() for c in (1.0, 1e-2, 1e-4, 1e-6)]
    assert losses == sorted(losses) and losses[-1] > 1e10
    with pytest.raises(ValueError, match="dim"):
        mvt.query_matching_loss(v, torch.zeros(3, 2, dtype=D))


def test_gate_openness_is_one_for_naive_and_zero_for_gate_zero():
    learner, meta, ep = _mlp_setup("gate_zero")
    hs, _ = learner._embed(meta, ep)
    mu = mvt.prototype_logits_means(hs, ep.support_y, 5)
    vv = learner._picked(meta, ep, mu, 4)[0]
    assert mvt.gate_openness(learner.transferred(meta, ep, mu, 4), vv) == 0.0
    assert mvt.gate_openness(naive_transfer(vv), vv) == pytest.approx(1.0)
    assert learner.openness(meta, [ep]) == 0.0


def test_gate_zero_is_protonet_plus_the_separation_term():
    learner, meta, ep = _mlp_setup("gate_zero", lambda_v=0.7)
    loss, _ = learner.task_loss(meta, ep)
    ref, _ = ProtoNet(learner.model).task_loss(meta, ep)
    hs, _ = learner._embed(meta, ep)
    mu = mvt.prototype_logits_means(hs, ep.support_y, 5)
    sep = mvt.virtual_loss_at_gate(mu, torch.zeros(5, learner.config.virtual, mu.shape[1], dtype=D), 0.0)
    assert torch.allclose(loss, ref + 0.7 * sep)


def test_query_matching_stops_each_gradient_where_it_should():
    learner, meta, ep = _mlp_setup("query_matching", lambda_v=0.5, lambda_m=1.0)
    phi, theta = list(meta["transfer"].values()), [t for t in meta["net"].values()] if isinstance(
        meta["net"], dict) else list(meta["net"])
    # L_V alone (lambda_M = 0): nothing reaches phi
    learner.config.lambda_m = 0.0
    loss, _ = learner.task_loss(meta, ep)
    assert all(g is None for g in torch.autograd.grad(loss, phi, allow_unused=True))
    # the matching loss alone (lambda_V = 0): theta gets exactly ProtoNet's gradient, phi gets one
    learner.config.lambda_m, learner.config.lambda_v = 1.0, 0.0
    loss, _ = learner.task_loss(meta, ep)
    ref, _ = ProtoNet(learner.model).task_loss(meta, ep)
    for a, b in zip(torch.autograd.grad(loss, theta), torch.autograd.grad(ref, theta)):
        assert torch.allclose(a, b, atol=1e-12)
    gphi = torch.autograd.grad(loss, phi, allow_unused=True)
    assert gphi[meta_keys(meta).index("w2")] is not None and gphi[meta_keys(meta).index("w2")].abs().sum() > 0


def test_mvt_config_rejects_a_negative_matching_weight():
    with pytest.raises(ValueError, match="lambda_m"):
        MVTConfig(lambda_m=-1.0)


# ---------------------------------------------------------------------------------------------
# the feature-space world of the regime map
# ---------------------------------------------------------------------------------------------
def test_world_basis_is_orthonormal_and_shared_or_not():
    cfg = mvt.WorldConfig(dim=8, rank=2, ways=3, queries=4, donors=3, donor_samples=5)
    b = mvt.world_basis(cfg, 0)
    assert torch.allclose(b.T @ b, torch.eye(2), atol=1e-5)
    data = mvt.world_episodes(cfg, 6, b, _gen(0))
    assert data["support"].shape == (6, 3, 1, 8) and data["query"].shape == (6, 3, 4, 8)
    assert data["donor"].shape == (6, 3, 5, 8)
    # no isotropic noise: every deviation of a class lies in the shared span
    quiet = mvt.WorldConfig(dim=8, rank=2, ways=3, queries=4, donors=3, donor_samples=5, noise=0.0)
    d = mvt.world_episodes(quiet, 4, b, _gen(1))["donor"]
    dev = (d - d.mean(2, keepdim=True)).reshape(-1, 8)
    assert torch.allclose(dev - dev @ b @ b.T, torch.zeros_like(dev), atol=1e-4)
    own = mvt.world_episodes(mvt.WorldConfig(**{**quiet.__dict__, "shared": False}), 4, b, _gen(1))["donor"]
    dev = (own - own.mean(2, keepdim=True)).reshape(-1, 8)
    assert (dev - dev @ b @ b.T).abs().max() > 0.1


def test_world_rotated_keeps_the_spectrum_and_noise_the_norm():
    cfg = mvt.WorldConfig(dim=6, rank=2, donors=4, donor_samples=6)
    data = mvt.world_episodes(cfg, 3, mvt.world_basis(cfg, 0), _gen(2))
    rot, v = mvt.world_transfer(data, "rotated", 7, _gen(3))
    naive, v2 = mvt.world_transfer(data, "naive", 7, _gen(3))
    assert torch.equal(v, v2) and torch.equal(naive, v)
    ev = lambda x: torch.linalg.eigvalsh(x.transpose(1, 2) @ x)  # noqa: E731
    assert torch.allclose(ev(rot), ev(v), rtol=1e-4, atol=1e-4)
    noise, v3 = mvt.world_transfer(data, "noise", 7, _gen(3))
    assert torch.allclose(noise.norm(dim=-1), v3.norm(dim=-1), rtol=1e-5)
    with pytest.raises(ValueError, match="shots >= 2"):
        mvt.world_transfer(data, "support", 7, _gen(3))
    with pytest.raises(ValueError, match="world transfer"):
        mvt.world_transfer(data, "gated", 7, _gen(3))


def test_world_shrinkage_one_is_euclidean_and_shared_directions_help():
    cfg = mvt.WorldConfig()
    data = mvt.world_episodes(cfg, 200, mvt.world_basis(cfg, 0), _gen(4))
    euclid = mvt.world_accuracy(data, None)
    vt, _ = mvt.world_transfer(data, "naive", 20, _gen(5))
    assert (mvt.world_accuracy(data, vt, 1.0) - euclid).abs().mean() < 0.002
    assert (mvt.world_accuracy(data, vt, 0.4) - euclid).mean() > 0.05     # measured about +15 points


def test_world_training_opens_the_query_matching_gate():
    cfg = mvt.WorldConfig(dim=8, rank=2, donors=4, donor_samples=5, queries=5)
    b = mvt.world_basis(cfg, 0)
    phi, losses = mvt.train_world_transfer(cfg, b, "query_matching", steps=30, lr=3e-2, seed=0, batch=4, virtual=5)
    data = mvt.world_episodes(cfg, 20, b, _gen(6))
    vt, v = mvt.world_transfer(data, "learned", 5, _gen(7), phi)
    assert mvt.gate_openness(vt, v) > 0.5 and losses[-1] < losses[0]
    with pytest.raises(ValueError, match="objective"):
        mvt.world_objective("maml", phi, data, 5, _gen(0))
    with pytest.raises(ValueError, match="rank"):
        mvt.WorldConfig(dim=2, rank=3)


def test_world_rate_ties_go_to_the_middle_of_the_grid():
    from tutor.experiments.mvt_world import _pick

    def rows(accs):
        return [(acc, lr, 0.5, None) for acc, lr in zip(accs, (1, 2, 3, 4, 5))]

    assert _pick(rows([0.8, 0.8, 0.8, 0.8, 0.8]))[1] == 3           # flat: the middle, not an edge
    assert _pick(rows([0.9, 0.9, 0.8, 0.7, 0.7]))[1] == 2           # tie with an inner rate: the inner one
    assert _pick(rows([0.9, 0.8, 0.8, 0.8, 0.8]))[1] == 1           # strictly best at the edge: the edge
    assert _pick([(0.5, None, 1.0, None)])[1] is None


def test_world_driver_smoke(tmp_path):
    import json

    from tutor.experiments import mvt_world
    from tutor.experiments.regime import summarise_regime

    out = tmp_path / "w.json"
    assert mvt_world.main(["--seeds", "0", "1", "--steps", "2", "--lr-grid", "1e-2", "--val-episodes", "3",
                           "--test-episodes", "4", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert len(record["regime"]) == 3
    for m in record["regime"]:
        assert all(p.n_seeds == 2 for p in summarise_regime(m))
    setting = record["world"]["settings"]["shared/nuisance=2.5/shots=5"]
    assert set(setting["per_seed"]) == {"protonet", "naive", "rotated", "noise", "query_matching", "gated", "support"}
    assert set(setting["openness"]) == {"query_matching", "gated"}
    assert set(setting["lr_flat"]) == {"query_matching", "gated"}
