"""Deep-AMTFL / AMTL: objective reductions, the row-wise l1, the size term, the lasso B-step, data."""

import pytest
import torch

from tutor.data.multitask import imbalanced_glyphs, synthetic_regression
from tutor.papers.amtfl import (
    AMTFLConfig,
    DeepConfig,
    amtfl_objective,
    amtl_b_step,
    deep_init,
    deep_objective,
    fit_amtfl,
    nonneg_lasso,
    size_term,
    task_losses,
    weighted_nonneg_lasso_pista,
)

D = torch.float64


def small_problem(T=3, k=3, d=5, n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(T, n, d, generator=g, dtype=D), torch.randn(T, n, generator=g, dtype=D)
    L, S = torch.randn(d, k, generator=g, dtype=D), torch.randn(k, T, generator=g, dtype=D)
    return x, y, L, S


def test_shallow_objective_reductions():
    x, y, L, S = small_problem()
    A = torch.rand(3, 3, dtype=D)
    losses = task_losses(L @ S, x, y)
    cfg = AMTFLConfig(alpha=0.0, gamma=0.3, mu=0.01, lam=0.02)
    total, parts = amtfl_objective(L, S, A, x, y, cfg)
    symmetric = losses.sum() + cfg.mu * S.abs().sum() + cfg.lam * L.pow(2).sum()
    assert torch.allclose(total, symmetric + 0.3 * parts["recon"])                   # alpha = 0
    total0, _ = amtfl_objective(L, S, A, x, y, AMTFLConfig(alpha=0.0, gamma=0.0, mu=0.0, lam=0.0))
    assert torch.allclose(total0, losses.sum())                                       # alpha = gamma = 0


def test_outgoing_l1_runs_over_each_tasks_row():
    """A hand-made square A whose row sums differ from its column sums catches a transposition."""
    x, y, L, S = small_problem()
    A = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=D)    # rows 3, 0, 0.5; cols 1, 2.5, 0
    cfg = AMTFLConfig(alpha=0.7, gamma=0.0, mu=0.0, lam=0.0)
    total, parts = amtfl_objective(L, S, A, x, y, cfg)
    losses = task_losses(L @ S, x, y)
    assert torch.allclose(parts["outgoing"], torch.tensor([3.0, 0.0, 0.5], dtype=D))
    assert torch.allclose(total, ((1 + 0.7 * torch.tensor([3.0, 0.0, 0.5], dtype=D)) * losses).sum())
    # a larger loss makes the same outgoing weight more expensive: d obj / d|A_tj| = alpha * L_t
    A_var = A.clone().requires_grad_()
    (g,) = torch.autograd.grad(amtfl_objective(L, S, A_var, x, y, cfg)[0], A_var)
    assert torch.allclose(g[0, 0], 0.7 * losses[0]) and torch.allclose(g[2, 1], 0.7 * losses[2])
    with pytest.raises(ValueError, match="A must have shape"):
        amtfl_objective(L, S, torch.zeros(3, 4, dtype=D), x, y, cfg)


def test_deep_objective_reductions_and_size_term():
    torch.manual_seed(0)
    x, y = torch.rand(12, 1, 6, 6), torch.arange(4).repeat(3)
    counts = torch.tensor([6, 3, 2, 1])
    trunk, params = deep_init(36, 4, DeepConfig(hidden=(8,)), seed=0)
    plain = DeepConfig(hidden=(8,), alpha=0.0, gamma=0.0, kappa=0.0, mu=0.0, lam=0.0)
    total, parts = deep_objective(trunk, params, x, y, counts, plain)
    sym, _ = deep_objective(trunk, params, x, y, counts, DeepConfig(hidden=(8,), mu=0.0, lam=0.0, symmetric=True))
    assert torch.allclose(total, parts["losses"].sum()) and torch.allclose(total, sym)
    with_recon, parts_r = deep_objective(trunk, params, x, y, counts, DeepConfig(hidden=(8,), alpha=0.0, gamma=0.5,
                                                                                   kappa=0.0, mu=0.0, lam=0.0))
    assert torch.allclose(with_recon, sym + 0.5 * parts_r["recon"])
    s = size_term(counts, 0.1)
    assert (s[:-1] < s[1:]).all()                                      # smaller tasks: larger term
    assert torch.allclose(size_term(torch.tensor([5, 5, 5]), 0.1), torch.full((3,), 0.1))


def test_shallow_reconstruction_term_against_a_loop_over_examples():
    """||Z - (Z S) A||_F^2 / N with Z = X L stacked over every task's inputs, computed example by example."""
    x, y, L, S = small_problem(T=3, k=2, d=4, n=5)
    A = torch.randn(3, 2, generator=torch.Generator().manual_seed(2), dtype=D)
    _, parts = amtfl_objective(L, S, A, x, y, AMTFLConfig(alpha=0.0, gamma=1.0, mu=0.0, lam=0.0))
    total, count = 0.0, 0
    for t in range(3):
        for i in range(5):
            z = x[t, i] @ L                              # features of one input (k,)
            pred = z @ S                                 # the T task predictions from those features
            rebuilt = pred @ A                           # fed back: (T,) @ (T, k) -> (k,)
            total += ((z - rebuilt) ** 2).sum().item()
            count += 1
    assert abs(parts["recon"].item() - total / count) < 1e-10


def test_deep_objective_with_every_term_on_against_a_direct_computation():
    """alpha, gamma, kappa, mu and lambda all non-zero; A's outgoing norm runs over each task's row."""
    torch.manual_seed(0)
    x, y = torch.rand(12, 1, 6, 6, dtype=D), torch.arange(4).repeat(3)
    counts = torch.tensor([6, 3, 2, 1])
    cfg = DeepConfig(hidden=(8,), alpha=0.4, gamma=0.3, kappa=0.2, mu=0.01, lam=0.02)
    trunk, params = deep_init(36, 4, cfg, seed=0)
    params = {k: ({n: v.detach().double() for n, v in p.items()} if isinstance(p, dict) else p.detach().double())
              for k, p in params.items()}
    params["A"] = torch.tensor([[1.0] * 8, [0.0] * 8, [0.5] * 8, [0.0] * 4 + [2.0] * 4], dtype=D)   # rows: 8, 0, 4, 8
    total, parts = deep_objective(trunk, params, x, y, counts, cfg)
    h = trunk.embed(params["trunk"], x)
    o = h @ params["S"] + params["b_S"]
    bce = torch.stack([torch.nn.functional.binary_cross_entropy_with_logits(o[:, t], (y == t).to(D)) for t in range(4)])
    size = cfg.kappa / torch.sqrt(counts.to(D) / counts.to(D).mean())
    outgoing = torch.tensor([8.0, 0.0, 4.0, 8.0], dtype=D)
    recon = ((h - torch.relu(o @ params["A"] + params["b_A"])) ** 2).sum(1).mean()
    reg = cfg.mu * params["S"].abs().sum() + cfg.lam / 2 * sum((p ** 2).sum() for p in params["trunk"].values())
    expected = ((1 + cfg.alpha * outgoing) * (bce + size)).sum() + cfg.gamma * recon + reg
    assert torch.allclose(parts["outgoing"], outgoing)
    assert torch.allclose(total, expected, rtol=1e-6), (total.item(), expected.item())


def test_amtl_b_step_matches_projected_ista_reference():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(6, 5, generator=g, dtype=D)
    losses = torch.rand(5, generator=g, dtype=D) + 0.2
    mu, lam = 0.3, 0.5
    B = amtl_b_step(W, losses, mu, lam, iters=2000)
    assert (B >= 0).all() and torch.all(torch.diagonal(B) == 0)
    for t in range(5):
        others = [s for s in range(5) if s != t]
        ref = weighted_nonneg_lasso_pista(W[:, others], W[:, t], losses[others], mu, lam, iters=20000)
        assert torch.allclose(B[others, t], ref, atol=1e-4)
    # plain non-negative lasso solver against the same reference with unit costs
    b = nonneg_lasso(W[:, :3], W[:, 4], 0.2, iters=2000)
    ref = weighted_nonneg_lasso_pista(W[:, :3], W[:, 4], torch.ones(3, dtype=D), 0.2, 0.5, iters=20000)
    assert torch.allclose(b, ref, atol=1e-4)
    with pytest.raises(ValueError, match="positive"):
        amtl_b_step(W, -losses, mu, lam)


def test_synthetic_generator_noise_levels_bases_and_determinism():
    data = synthetic_regression(0, n_train=4000, dtype=D)
    W = data.bases @ data.codes
    resid = torch.einsum("tnd,dt->tn", data.x_train, W) - data.y_train
    std = resid.std(1)
    assert torch.allclose(std, data.noise.to(D), rtol=0.1)
    assert data.hard.tolist() == [False] * 6 + [True] * 6
    used = (data.codes != 0)
    assert used.sum(0).tolist() == [2] * 12 and (used[:, :6].any(1) & used[:, 6:].any(1)).all()   # bases overlap
    again = synthetic_regression(0, n_train=4000, dtype=D)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)
    with pytest.raises(ValueError, match="n_hard"):
        synthetic_regression(0, n_hard=13)


def test_seeded_fit_gives_easy_tasks_larger_outgoing_feedback():
    data = synthetic_regression(0)
    fit = fit_amtfl(data, AMTFLConfig(steps=600), seed=0)
    easy, hard = fit["outgoing"][~data.hard].mean(), fit["outgoing"][data.hard].mean()
    assert easy > 5 * hard, (easy, hard)


def test_imbalanced_glyph_split():
    data = imbalanced_glyphs(0, classes=4, counts=(5, 3, 2, 1), test_per_class=4)
    assert torch.bincount(data.y_train).tolist() == [5, 3, 2, 1]
    assert torch.bincount(data.y_test).tolist() == [4] * 4
    for c in range(4):   # train and test images of a class are different instances
        tr, te = data.x_train[data.y_train == c].flatten(1), data.x_test[data.y_test == c].flatten(1)
        assert torch.cdist(tr, te).min() > 0
    with pytest.raises(ValueError, match="one count per class"):
        imbalanced_glyphs(0, classes=3, counts=(1, 2))
    with pytest.raises(ValueError, match="count \\+ test_per_class"):
        imbalanced_glyphs(0, classes=2, counts=(19, 2), test_per_class=4)


def test_reliability_weights_and_weighted_gomtl():
    from tutor.papers.amtfl import fit_gomtl, fit_stl, gomtl_objective, reliability_weights

    data = synthetic_regression(0, tasks=4, n_hard=2)
    w = reliability_weights(data, ridge=2.0)
    mse = task_losses(fit_stl(data, 2.0), data.x_train, data.y_train)
    assert torch.allclose(w.mean(), torch.tensor(1.0)) and torch.allclose(w * mse, (w * mse)[0].expand(4))
    assert (w[:2] > w[2:].max()).all()                                 # the noisy tasks get the small weights
    x, y, L, S = small_problem(T=3)
    c = torch.tensor([0.5, 1.0, 2.0], dtype=D)
    cfg = AMTFLConfig(mu=0.1, lam=0.2)
    direct = (c * task_losses(L @ S, x, y)).sum() + 0.1 * S.abs().sum() + 0.2 * L.pow(2).sum()
    assert torch.allclose(gomtl_objective(L, S, x, y, cfg, c), direct)
    plain = fit_gomtl(data, AMTFLConfig(steps=30), seed=0)["W"]
    ones = fit_gomtl(data, AMTFLConfig(steps=30), seed=0, weights=torch.ones(4))["W"]
    assert torch.allclose(plain, ones)
    with pytest.raises(ValueError, match="weights"):
        fit_gomtl(data, AMTFLConfig(steps=3), weights=torch.ones(3))
