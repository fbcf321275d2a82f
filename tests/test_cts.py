"""Continual Trajectory Shifting: shift exactness, error growth, reductions, environment constants."""

import pytest
import torch

from tutor.data.himmelblau import HimmelblauTasks
from tutor.papers.cts import (
    adaptation_auc,
    cts_step,
    inner_sgd,
    meta_fixed_points,
    reptile_direction,
    reptile_step,
    run_accurate,
    run_cts,
    run_reptile,
    shift_error,
    steps_to_threshold,
    trajectory_drift,
    unroll,
)

D = torch.float64


def quadratic(h_diag):
    """Per-task quadratic losses 0.5 * sum_i h_i (x_i - m_t,i)^2 with task centres m_t."""
    centres = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0]], dtype=D)
    h = torch.tensor(h_diag, dtype=D)
    return lambda x: 0.5 * (h * (x - centres) ** 2).sum(-1)


def linear():
    g = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.5]], dtype=D)
    return lambda x: (g * x).sum(-1)


def test_shift_is_exact_for_linear_losses_and_matches_closed_form_on_quadratics():
    phi = torch.tensor([[0.3, -0.7], [2.0, 1.0]], dtype=D)
    delta = torch.tensor([[0.1, 0.2], [-0.3, 0.05]], dtype=D)
    assert shift_error(linear(), phi, delta, 7, 0.1, 3).max() < 1e-12          # Hessian 0: Jacobian = I
    h, alpha, k = [2.0, 0.5], 0.1, 6
    err = shift_error(quadratic(h), phi, delta, k, alpha, 3)
    expected = (((1 - alpha * torch.tensor(h, dtype=D)) ** k - 1) * delta).norm(dim=-1)   # ((I - aH)^k - I) Delta
    assert torch.allclose(err, expected.unsqueeze(-1).expand_as(err))


def test_cts_with_linear_losses_equals_the_accurate_curriculum():
    phi0 = torch.tensor([[0.2, 0.4]], dtype=D)
    K = 6
    cts = run_cts(linear(), phi0, 3, K, 0.1, 0.3, budget=K)
    acc = run_accurate(linear(), phi0, 3, K, 0.1, 0.3)
    assert torch.allclose(cts.phis, acc.phis)


def test_accurate_variant_equals_explicit_rerolls():
    losses = HimmelblauTasks().losses
    phi = torch.tensor([[1.0, 2.0]], dtype=D)
    K, alpha, beta = 4, 0.02, 0.2
    expected = [phi.clone()]
    for k in range(1, K + 1):
        theta = phi.unsqueeze(-2).repeat(1, 8, 1)
        for _ in range(k):
            x = theta.detach().requires_grad_()
            (g,) = torch.autograd.grad(losses(x).sum(), x)
            theta = theta - alpha * g
        phi = phi - beta * (phi - theta.mean(-2))
        expected.append(phi.clone())
    assert torch.allclose(run_accurate(losses, expected[0], 8, K, alpha, beta).phis, torch.stack(expected))


def test_cts_with_k1_equals_reptile_with_k1():
    losses = HimmelblauTasks().losses
    phi0 = torch.tensor([[0.0, 0.0], [10.0, 3.0]], dtype=D)
    a = run_cts(losses, phi0, 8, 1, 0.02, 0.1, budget=20)
    b = run_reptile(losses, phi0, 8, 1, 0.02, 0.1, budget=20)
    assert torch.allclose(a.phis, b.phis) and a.inner_steps == b.inner_steps
    fa = run_cts(losses, phi0, 8, 1, 0.02, 0.1, budget=20, direction="fomaml")
    fb = run_reptile(losses, phi0, 8, 1, 0.02, 0.1, budget=20, direction="fomaml")
    assert torch.allclose(fa.phis, fb.phis) and not torch.allclose(fa.phis, a.phis)


def test_run_cts_equals_an_explicit_loop_with_resets_and_shifts():
    """CTS written out by hand (reset every K, SGD, Delta = -beta (phi - mean theta), shift) for 7 steps."""
    losses = HimmelblauTasks().losses
    phi0 = torch.tensor([[3.0, 4.0], [-2.0, 9.0]], dtype=D)
    K, alpha, beta, budget = 3, 0.02, 0.2, 7
    phi, expected = phi0.clone(), [phi0.clone()]
    for step in range(budget):
        if step % K == 0:
            theta = phi[:, None, :].repeat(1, 8, 1)
        x = theta.detach().requires_grad_()
        (g,) = torch.autograd.grad(losses(x).sum(), x)
        theta = theta - alpha * g
        delta = -beta * (phi - theta.mean(1))
        phi, theta = phi + delta, theta + delta[:, None, :]
        expected.append(phi.clone())
    assert torch.allclose(run_cts(losses, phi0, 8, K, alpha, beta, budget).phis, torch.stack(expected))


def test_cts_step_and_reptile_step():
    g = torch.Generator().manual_seed(0)
    phi, theta = torch.randn(2, 3, generator=g, dtype=D), torch.randn(2, 5, 3, generator=g, dtype=D)
    new_phi, new_theta = cts_step(phi, theta, 0.3)
    delta = -0.3 * (phi - theta.mean(1))
    assert torch.allclose(new_phi, phi + delta) and torch.allclose(new_theta, theta + delta[:, None])
    assert torch.allclose(new_phi, reptile_step(phi, theta, 0.3))         # the same meta-step, plus the shift
    same_phi, same_theta = cts_step(phi, theta, 0.0)                      # beta = 0: nothing moves
    assert torch.equal(same_phi, phi) and torch.equal(same_theta, theta)
    _, unshifted = cts_step(phi, theta, 0.3, shift=False)
    assert torch.equal(unshifted, theta)


def test_meta_fixed_points_stop_when_converged():
    losses = quadratic([1.0, 0.5])
    starts = torch.tensor([[2.0, -1.0], [0.5, 0.5]], dtype=D)
    ends, points, converged = meta_fixed_points(losses, starts, 3, 5, 0.1, 0.5, meta_steps=2000, tol=1e-10)
    assert converged.all() and len(points) == 1
    # the fixed point is where mean_t U_K^t(phi) = phi: one more meta-step does not move it
    assert torch.allclose(reptile_direction(ends, unroll(losses, ends, 5, 0.1, 3)), torch.zeros_like(ends), atol=1e-9)
    _, _, early = meta_fixed_points(losses, starts, 3, 5, 0.1, 0.5, meta_steps=1, tol=1e-10)
    assert not early.any()
    with pytest.raises(ValueError, match="tol"):
        meta_fixed_points(losses, starts, 3, 5, 0.1, 0.5, tol=0.0)


def test_chained_shift_error_grows_as_k_squared():
    """With a fixed shift per step, the chained Taylor error on a quadratic (A = I - aH) is
    sum_{j<k} (A^j - A^k) Delta ~ a H Delta k (k + 1) / 2: the closed form holds, log-log slope 2."""
    h, alpha = torch.tensor([1.0, 0.3], dtype=D), 0.001
    losses = quadratic(h.tolist())
    phi0 = torch.tensor([[4.0, -3.0]], dtype=D)
    delta = torch.tensor([[0.01, -0.02]], dtype=D)
    drift = trajectory_drift(losses, phi0, 3, 32, alpha, beta=0.0, delta=delta)[:, 0]
    ks = torch.arange(1, 33, dtype=D)
    A = 1 - alpha * h
    closed = torch.stack([sum(((A ** j - A ** int(k)) * delta[0] for j in range(int(k))),
                              torch.zeros(2, dtype=D)).norm() for k in ks])
    assert torch.allclose(drift, closed, rtol=1e-8)
    slope = torch.linalg.lstsq(torch.stack([torch.log(ks[7:]), torch.ones(25, dtype=D)], 1),
                               torch.log(drift[7:])[:, None]).solution[0].item()
    assert 1.9 < slope < 2.1, slope


def test_vectorised_and_looped_runs_agree():
    losses = HimmelblauTasks().losses
    starts = torch.tensor([[0.0, 0.0], [12.0, -3.0], [5.0, 14.0]], dtype=D)
    together = run_cts(losses, starts, 8, 10, 0.03, 0.1, budget=40).final
    apart = torch.cat([run_cts(losses, s[None], 8, 10, 0.03, 0.1, budget=40).final for s in starts])
    assert torch.allclose(together, apart)
    r_together = run_reptile(losses, starts, 8, 10, 0.03, 0.1, budget=40).final
    r_apart = torch.cat([run_reptile(losses, s[None], 8, 10, 0.03, 0.1, budget=40).final for s in starts])
    assert torch.allclose(r_together, r_apart)


def test_environment_constants_give_four_zero_minima_per_task():
    env = HimmelblauTasks()
    for t in range(8):
        x = torch.zeros(4, 8, 2, dtype=D)
        x[:, t] = env.minima(t)
        assert env.losses(x)[:, t].max() < 1e-9
        # gradient descent from points near each minimum converges to loss < 1e-8
        y = x + 0.3
        for _ in range(3000):
            y = inner_sgd(env.losses, y, 0.01)
        assert env.losses(y)[:, t].max() < 1e-8
        assert len(torch.unique(torch.round(y[:, t], decimals=2), dim=0)) == 4
    assert env.centres[0].tolist() == pytest.approx([5.0, 12.0])
    assert env.centres[2].tolist() == pytest.approx([12.0, 5.0])   # t = 2: angle pi/2
    with pytest.raises(ValueError, match="one 2-D point per task"):
        env.losses(torch.zeros(3, 2))


def test_toy_ordering_cts_beats_reptile_at_equal_budget():
    """Notes §6.3: CTS < Reptile(K) < init in AUC at the same cumulative inner steps (fixed seed)."""
    env = HimmelblauTasks()
    phi0 = torch.rand(32, 2, generator=torch.Generator().manual_seed(0), dtype=D) * 20 - 5
    K, a, b, budget = 100, 0.05, 0.1, 1000
    auc = {name: adaptation_auc(env.losses, phi, K, a, 8).mean().item() for name, phi in {
        "init": phi0, "reptile": run_reptile(env.losses, phi0, 8, K, a, b, budget).final,
        "cts": run_cts(env.losses, phi0, 8, K, a, b, budget).final}.items()}
    assert auc["cts"] < auc["reptile"] < auc["init"], auc
    steps = steps_to_threshold(env.losses, phi0, 1.0, a, 8, max_steps=50)
    assert steps.shape == (32,) and steps.max() <= 50


def test_errors():
    with pytest.raises(ValueError, match="K \\(the horizon\\) must be >= 1"):
        run_cts(linear(), torch.zeros(1, 2, dtype=D), 3, 0, 0.1, 0.1, 10)
    with pytest.raises(ValueError, match="direction"):
        run_reptile(linear(), torch.zeros(1, 2, dtype=D), 3, 2, 0.1, 0.1, 10, direction="leap")
    with pytest.raises(FloatingPointError, match="alpha"):
        unroll(HimmelblauTasks().losses, torch.zeros(1, 2, dtype=D), 50, 10.0, 8)


def test_horizon_schedule_grows_linearly_stays_within_budget_and_reduces_to_reptile():
    from tutor.papers.cts import horizon_schedule

    assert horizon_schedule(7, 7, 50) == [7] * 7                      # k_start == K: plain Reptile
    h = horizon_schedule(5, 100, 2000)
    assert h[0] == 5 and max(h) <= 100 and sum(h) <= 2000 and sum(h) + h[-1] > 2000 - 100
    assert all(b >= a for a, b in zip(h, h[1:]))                      # never shrinks
    spent = [sum(h[:i]) for i in range(len(h))]                        # episode i starts after spent[i] steps
    assert h == [round(5 + 95 * min(1.0, s / 2000)) for s in spent]
    longer = horizon_schedule(5, 100, 6000, ramp=2000)                 # a longer budget extends the same run
    assert longer[:len(h)] == h and longer[-1] == 100
    with pytest.raises(ValueError, match="k_start"):
        horizon_schedule(10, 5, 100)


def test_curriculum_reptile_with_a_constant_horizon_is_reptile():
    from tutor.papers.cts import run_reptile_curriculum

    losses = HimmelblauTasks().losses
    phi0 = torch.tensor([[0.0, 0.0], [10.0, 3.0]], dtype=D)
    a = run_reptile_curriculum(losses, phi0, 8, 4, 4, 0.02, 0.3, budget=30)
    b = run_reptile(losses, phi0, 8, 4, 0.02, 0.3, budget=30)
    assert torch.allclose(a.phis, b.phis) and a.inner_steps == b.inner_steps
    c = run_reptile_curriculum(losses, phi0, 8, 1, 6, 0.02, 0.3, budget=30)
    assert c.inner_steps[1] == 1 and all(s <= 30 for s in c.inner_steps)
    with pytest.raises(ValueError, match="no meta-update"):
        run_reptile_curriculum(losses, phi0, 8, 5, 6, 0.02, 0.3, budget=4)


def test_one_beta_per_start_equals_separate_runs():
    from tutor.papers.cts import run_reptile_curriculum

    losses = HimmelblauTasks().losses
    phi0 = torch.tensor([[0.0, 0.0], [10.0, 3.0], [4.0, -2.0]], dtype=D)
    betas = torch.tensor([0.1, 0.5, 2.0], dtype=D)
    for run in (lambda b, p: run_reptile(losses, p, 8, 4, 0.02, b, 20),
                lambda b, p: run_cts(losses, p, 8, 4, 0.02, b, 20),
                lambda b, p: run_reptile_curriculum(losses, p, 8, 1, 4, 0.02, b, 20)):
        together = run(betas, phi0).phis
        for i, b in enumerate(betas.tolist()):
            assert torch.allclose(together[:, i], run(b, phi0[i:i + 1]).phis[:, 0])
    with pytest.raises(ValueError, match="one value per start"):
        run_reptile(losses, phi0, 8, 4, 0.02, betas[:2], 20)
    with pytest.raises(ValueError, match=">= 0"):
        run_cts(losses, phi0, 8, 4, 0.02, -betas, 20)
