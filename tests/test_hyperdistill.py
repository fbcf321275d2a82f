"""HyperDistill: exact reverse mode, the distillation identities, reductions, the theta fit, baselines, errors."""

import pytest
import torch

from tutor.data.tasks import SinusoidTasks
from tutor.papers.hyperdistill import (
    METHODS,
    ANILRegression,
    HyperDistillConfig,
    OnlineState,
    QuadraticProblem,
    QuadraticTasks,
    distilled_batch_update,
    distilled_point,
    drmad_hypergradient,
    ema_weight,
    first_order_hypergradient,
    fit_theta,
    gamma_sum_hypergradient,
    horizon_sum,
    hyperdistill_hypergradient,
    init_features,
    inner_step,
    jvps_per_inner_opt,
    linear_estimation,
    meta_train,
    neumann_ift_hypergradient,
    one_step_hypergradient,
    online_hypergradient,
    reverse_mode_hypergradient,
    reversed_distilled_point,
    sample_batches,
    step_vjp,
    unroll,
    val_grads,
)

D = torch.float64


def quadratic(P=4, seed=0, noise=0.3, isotropic_k=None, lam=None):
    """A random quadratic problem; with ``isotropic_k`` its curvature H + diag(e^lam) is k I."""
    g = torch.Generator().manual_seed(seed)
    lam = torch.randn(P, generator=g, dtype=D) * 0.3 - 1.0 if lam is None else lam
    if isotropic_k is None:
        M = torch.randn(P, P, generator=g, dtype=D)
        H = M @ M.T / P + 0.2 * torch.eye(P, dtype=D)
    else:
        H = torch.diag(isotropic_k - lam.exp())
    prob = QuadraticProblem(H, torch.randn(P, generator=g, dtype=D), torch.randn(P, generator=g, dtype=D),
                            noise * torch.randn(8, P, generator=g, dtype=D))
    return prob, lam, torch.randn(P, generator=g, dtype=D)


def anil(tasks=3, seed=0, hidden=(6, 5)):
    g = torch.Generator().manual_seed(seed)
    ep = SinusoidTasks().batch(tasks, 6, 8, g).to(dtype=D)
    prob = ANILRegression.from_episode(ep, hidden)
    lam = init_features(g, hidden, D)
    w0 = 0.3 * torch.randn(tasks, hidden[-1] + 1, generator=g, dtype=D)
    return prob, lam, w0


def unrolled_val(prob, lam, w0, batches, lr):
    """L_val(w_T(lam), lam) with the graph kept (autograd through the unrolled loop)."""
    w = w0
    for idx in batches:
        w = inner_step(prob, w, lam, idx, lr, create_graph=True)
    return prob.val_loss(w, lam)


# ---------------------------------------------------------------------------------------- exact reverse mode
def test_reverse_mode_matches_central_finite_differences():
    prob, lam, w0 = quadratic()
    batches = sample_batches(20, prob.n_examples, 3, torch.Generator().manual_seed(1))
    lr = 0.1
    g = reverse_mode_hypergradient(prob, unroll(prob, w0, lam, batches, lr), lam, batches, lr)
    eps = 1e-6
    fd = torch.stack([(unrolled_val(prob, lam + eps * e, w0, batches, lr) - unrolled_val(prob, lam - eps * e, w0,
                                                                                          batches, lr)) / (2 * eps)
                      for e in torch.eye(len(lam), dtype=D)])
    assert (g - fd).norm() / fd.norm() < 1e-6


def test_reverse_mode_matches_autograd_and_forward_mode():
    prob, lam, w0 = anil()
    batches = sample_batches(12, prob.n_examples, 4, torch.Generator().manual_seed(2))
    lr = 0.05
    g = reverse_mode_hypergradient(prob, unroll(prob, w0, lam, batches, lr), lam, batches, lr)
    lam_ = lam.clone().requires_grad_()
    (auto,) = torch.autograd.grad(unrolled_val(prob, lam_, w0, batches, lr), lam_)
    assert torch.allclose(g, auto, rtol=1e-10, atol=1e-12)
    # forward mode on the quadratic, whose inner gradient is written out by hand (independent of autograd)
    qp, qlam, qw0 = quadratic(seed=3)
    qb = sample_batches(15, qp.n_examples, 3, torch.Generator().manual_seed(3))

    def val_of(lam):
        w = qw0
        for idx in qb:
            w = w - 0.1 * (qp.hessian @ (w - qp.centre) + lam.exp() * w + qp.noise[idx].mean(0))
        return qp.val_loss(w, lam)

    fwd = torch.stack([torch.func.jvp(val_of, (qlam,), (e,))[1] for e in torch.eye(len(qlam), dtype=D)])
    rmd = reverse_mode_hypergradient(qp, unroll(qp, qw0, qlam, qb, 0.1), qlam, qb, 0.1)
    assert torch.allclose(rmd, fwd, rtol=1e-10, atol=1e-13)


def test_batched_tasks_give_the_mean_of_per_task_hypergradients():
    prob, lam, w0 = anil(tasks=3)
    batches = sample_batches(6, prob.n_examples, 3, torch.Generator().manual_seed(4))
    g = reverse_mode_hypergradient(prob, unroll(prob, w0, lam, batches, 0.05), lam, batches, 0.05)
    per_task = []
    for i in range(3):
        p = ANILRegression(prob.support_x[i:i + 1], prob.support_y[i:i + 1], prob.query_x[i:i + 1],
                           prob.query_y[i:i + 1], prob.hidden)
        per_task.append(reverse_mode_hypergradient(p, unroll(p, w0[i:i + 1], lam, batches, 0.05), lam, batches, 0.05))
    assert torch.allclose(g, torch.stack(per_task).mean(0), rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------------------------------- distillation
@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 0.999])
def test_ema_recursion_equals_explicit_weighted_mean(gamma):
    ws = torch.randn(9, 3, 2, generator=torch.Generator().manual_seed(5), dtype=D)   # w_0..w_8
    t = len(ws)
    weights = torch.tensor([gamma ** (t - i) for i in range(1, t + 1)], dtype=D)     # gamma^{t-i} for w_{i-1}
    explicit = (weights[:, None, None] * ws).sum(0) / horizon_sum(t, gamma)
    assert torch.allclose(distilled_point(ws, gamma), explicit, rtol=1e-12, atol=1e-14)
    assert abs(weights.sum().item() - horizon_sum(t, gamma)) < 1e-12
    # reversed twin (Eq. 17): newest iterate weight 1, oldest gamma^{s-1}
    rev = torch.tensor([gamma ** (t - 1 - i) for i in range(t)], dtype=D)
    assert torch.allclose(reversed_distilled_point(ws, gamma), (rev[:, None, None] * ws).sum(0) / rev.sum(),
                          rtol=1e-12, atol=1e-14)
    if gamma == 0.0:
        assert torch.equal(distilled_point(ws, gamma), ws[-1])
        assert torch.equal(reversed_distilled_point(ws, gamma), ws[-1])


def test_distilled_batch_keeps_its_size_and_mixes_with_ema_weights():
    gamma, T, b, runs = 0.6, 6, 400, 200
    gen = torch.Generator().manual_seed(6)
    share = torch.zeros(T, dtype=D)
    for _ in range(runs):
        batches = torch.arange(T * b).view(T, b)          # example j came from D_{j // b + 1}
        d = batches[0]
        for t in range(2, T + 1):
            d = distilled_batch_update(d, batches[t - 1], ema_weight(t, gamma), gen)
            assert d.shape == (b,) and len(set(d.tolist())) == b      # same size, drawn without replacement
        share += torch.bincount(d // b, minlength=T).to(D) / b
    share /= runs
    expected = torch.tensor([gamma ** (T - i) for i in range(1, T + 1)], dtype=D) / horizon_sum(T, gamma)
    assert (share - expected).abs().max() < 0.01


@pytest.mark.parametrize("which", ["anil", "quadratic"])
def test_affine_jvp_makes_direction_distillation_exact(which):
    prob, lam, w0 = anil() if which == "anil" else quadratic()
    gamma, T, lr = 0.9, 15, 0.05
    fixed = sample_batches(1, prob.n_examples, min(4, prob.n_examples), torch.Generator().manual_seed(7))
    batches = fixed.expand(T, -1)                           # one fixed D
    ws = unroll(prob, w0, lam, batches, lr)
    alpha, _ = val_grads(prob, ws[-1], lam)
    v = step_vjp(prob, alpha, distilled_point(ws[:-1], gamma), lam, fixed[0], lr)[1]
    explicit = sum(gamma ** (T - i) * step_vjp(prob, alpha, ws[i - 1], lam, fixed[0], lr)[1] for i in range(1, T + 1))
    assert torch.allclose(horizon_sum(T, gamma) * v, explicit, rtol=1e-10, atol=1e-14)


def test_isotropic_quadratic_makes_eq7_and_hyperdistill_exact_and_anisotropy_breaks_it():
    k, lr, T = 1.5, 0.2, 12
    prob, lam, w0 = quadratic(isotropic_k=k)
    assert torch.allclose(prob.curvature(lam), k * torch.eye(4, dtype=D))
    gamma = 1 - lr * k
    batches = sample_batches(T, prob.n_examples, 3, torch.Generator().manual_seed(8))
    ws = unroll(prob, w0, lam, batches, lr)
    exact = reverse_mode_hypergradient(prob, ws, lam, batches, lr)
    assert torch.allclose(gamma_sum_hypergradient(prob, ws, lam, batches, lr, gamma), exact, rtol=1e-10)
    assert torch.allclose(hyperdistill_hypergradient(prob, ws, lam, batches, lr, gamma, 1.0), exact, rtol=1e-10)
    aniso, lam2, w02 = quadratic()                         # anisotropic curvature
    ws2 = unroll(aniso, w02, lam2, batches, lr)
    exact2 = reverse_mode_hypergradient(aniso, ws2, lam2, batches, lr)
    err = (gamma_sum_hypergradient(aniso, ws2, lam2, batches, lr, gamma) - exact2).norm() / exact2.norm()
    assert err > 1e-3


def test_reductions_one_step_and_first_order():
    prob, lam, w0 = anil()
    batches = sample_batches(8, prob.n_examples, 3, torch.Generator().manual_seed(9))
    ws = unroll(prob, w0, lam, batches, 0.05)
    one = one_step_hypergradient(prob, ws, lam, batches, 0.05)
    assert horizon_sum(8, 0.0) == 1.0
    assert torch.allclose(hyperdistill_hypergradient(prob, ws, lam, batches, 0.05, 0.0, 1.0), one, rtol=1e-12)
    assert torch.allclose(gamma_sum_hypergradient(prob, ws, lam, batches, 0.05, 0.0), one, rtol=1e-12)
    fo = first_order_hypergradient(prob, ws, lam)
    assert torch.equal(hyperdistill_hypergradient(prob, ws, lam, batches, 0.05, 0.9, 0.0), fo)
    assert (one - fo).norm() > 1e-6                         # the second-order term is not zero here


def test_linear_estimation_fit_and_isotropic_theta_one():
    x = torch.rand(10, generator=torch.Generator().manual_seed(10), dtype=D) + 0.1
    assert fit_theta(x, 0.37 * x) == pytest.approx((0.37, 0.37), rel=1e-12)
    assert fit_theta(x, -2.0 * x) == (0.0, pytest.approx(-2.0))          # clipped to [0, theta_max], raw kept
    assert fit_theta(x, 50.0 * x, theta_max=10.0)[0] == 10.0
    k, lr, T = 1.5, 0.2, 10
    prob, lam, w0 = quadratic(isotropic_k=k)
    batches = sample_batches(T, prob.n_examples, 3, torch.Generator().manual_seed(11))
    ws = unroll(prob, w0, lam, batches, lr)
    est = linear_estimation(prob, ws, lam, batches, lr, 1 - lr * k, exact_backpass=True)
    assert est.theta == pytest.approx(1.0, abs=1e-10)
    assert torch.allclose(est.y, est.x, rtol=1e-10)        # every sample on the line y = x
    assert est.jvps == 3 * T - 1
    # the last sample (s = T) is the whole trajectory: its y is the exact SO term along v_T's direction
    exact_so = reverse_mode_hypergradient(prob, ws, lam, batches, lr) - first_order_hypergradient(prob, ws, lam)
    assert est.y[-1].item() == pytest.approx(exact_so.norm().item(), rel=1e-10)


def test_drmad_equals_reverse_mode_on_a_straight_trajectory_only():
    class LinearTrain(QuadraticProblem):          # L_train = (e^lam * a)^T w: constant gradient, straight line
        def train_loss(self, w, lam, idx):
            return (lam.exp() * self.centre) @ w

    prob, lam, w0 = quadratic()
    lin = LinearTrain(prob.hessian, prob.centre, prob.target)
    batches = torch.zeros(10, 1, dtype=torch.long)
    ws = unroll(lin, w0, lam, batches, 0.1)
    assert torch.allclose(ws[5], 0.5 * (ws[0] + ws[-1]))   # the iterates lie on the straight line
    assert torch.allclose(drmad_hypergradient(lin, ws, lam, batches, 0.1),
                          reverse_mode_hypergradient(lin, ws, lam, batches, 0.1), rtol=1e-12)
    bq = sample_batches(10, prob.n_examples, 3, torch.Generator().manual_seed(12))
    wq = unroll(prob, w0, lam, bq, 0.3)                    # curved trajectory: DrMAD is biased
    exact = reverse_mode_hypergradient(prob, wq, lam, bq, 0.3)
    assert (drmad_hypergradient(prob, wq, lam, bq, 0.3) - exact).norm() / exact.norm() > 1e-3


def test_neumann_ift_matches_closed_form_implicit_hypergradient_at_convergence():
    prob, lam, _ = quadratic(noise=0.0)
    K = prob.curvature(lam)
    w_fix = torch.linalg.solve(K, prob.hessian @ prob.centre)   # the inner fixed point
    alpha, g_fo = val_grads(prob, w_fix, lam)
    closed = g_fo - alpha @ torch.linalg.solve(K, torch.diag(lam.exp() * w_fix))
    lr = 0.9 / torch.linalg.eigvalsh(K).max().item()
    idx = torch.zeros(1, dtype=torch.long)
    assert torch.allclose(neumann_ift_hypergradient(prob, w_fix, lam, idx, lr, 3000), closed, rtol=1e-9)
    few = neumann_ift_hypergradient(prob, w_fix, lam, idx, lr, 1)
    assert (few - closed).norm() > 1e-4 * closed.norm()     # truncation matters
    # and the closed form is the limit of exact reverse mode through a long run
    batches = torch.zeros(3000, 1, dtype=torch.long)
    ws = unroll(prob, w_fix, lam, batches, lr)
    assert torch.allclose(reverse_mode_hypergradient(prob, ws, lam, batches, lr), closed, rtol=1e-8)


# ---------------------------------------------------------------------------------------- the online loop
def test_meta_train_runs_every_method_and_counts_jvps():
    cfg = HyperDistillConfig(inner_steps=4, inner_opts=2, meta_batch=2, hidden=(8,), batch=3, neumann_last=2,
                             neumann_terms=2, estimation_period=5)
    per_opt = {"fo": 0, "one_step": 4, "scaled_one_step": 4, "hyperdistill": 4, "exact_online": 16, "drmad": 7,
               "neumann": 6}
    assert set(per_opt) == set(METHODS)
    for method in METHODS:
        run = meta_train(cfg, method, seed=0, progress=False)
        assert len(run.val_loss) == 2 and all(torch.isfinite(torch.tensor(run.val_loss)))
        extra = 3 * 4 - 1 if method in ("hyperdistill", "scaled_one_step") else 0    # one LinearEstimation at m = 0
        assert run.jvps[-1] == 2 * per_opt[method] + extra
        assert jvps_per_inner_opt(method, cfg, amortised=True) == run.jvps[-1] / 2
        assert len(run.diagnostics) == 0
    hd = meta_train(cfg, "hyperdistill", seed=0, progress=False, diagnose_every=1)
    assert len(hd.theta) == 1 and 0 <= hd.theta[0][1] <= cfg.theta_max
    d = hd.diagnostics[0][1]
    assert set(d["so"]) == {"one_step", "gamma_sum", "hd_unit", "drmad", "neumann"}
    assert len(d["hd_draws"]["cos_exact"]) == 5 and d["theta_run"] == hd.theta[0][1]


def test_theta_is_refit_every_estimation_period():
    cfg = HyperDistillConfig(inner_steps=3, inner_opts=5, meta_batch=2, hidden=(6,), batch=3, neumann_last=2,
                             estimation_period=2)
    run = meta_train(cfg, "hyperdistill", seed=0, progress=False)
    assert [m for m, _, _ in run.theta] == [0, 2, 4]
    assert jvps_per_inner_opt("hyperdistill", cfg, amortised=True) == 3 + 3 * (3 * 3 - 1) / 5


def test_methods_with_the_same_seed_see_the_same_tasks():
    """Pairing: the task stream does not depend on the method (D* and LinearEstimation have their own streams)."""
    seen = {}
    for method in ("fo", "hyperdistill", "exact_online"):
        problems = []

        def make(gen, problems=problems):
            p = QuadraticTasks.sample(2, gen, dim=3, examples=4)
            problems.append(p.centre.clone())
            return p

        cfg = HyperDistillConfig(inner_steps=3, inner_opts=3, meta_batch=2, shots=4, batch=2, neumann_last=2)
        meta_train(cfg, method, seed=7, progress=False, make_problem=make, lam0=torch.zeros(3))
        seen[method] = torch.stack(problems)
    assert torch.equal(seen["fo"], seen["hyperdistill"]) and torch.equal(seen["fo"], seen["exact_online"])


def test_online_hypergradient_is_each_methods_equation():
    """After step t of one inner optimisation: one-step = g^FO + alpha_t B_t; exact_online = reverse mode through
    w_0..w_t; scaled one-step = g^FO + theta alpha_t B_t; HyperDistill = g^FO + theta S_t v_t at (w*_t, D*_t)."""
    prob, lam, w0 = anil()
    cfg = HyperDistillConfig(inner_steps=5, inner_lr=0.05, batch=3, shots=6, hidden=(6, 5), gamma=0.7)
    batches = sample_batches(5, prob.n_examples, 3, torch.Generator().manual_seed(3))
    ws = unroll(prob, w0, lam, batches, cfg.inner_lr)
    states = {m: OnlineState([w0], theta=0.4) for m in METHODS}
    for t in range(1, 6):
        g = {m: online_hypergradient(m, prob, lam, states[m], ws[t - 1], ws[t], batches, t, cfg,
                                     torch.Generator().manual_seed(t)) for m in METHODS}
    exact = reverse_mode_hypergradient(prob, ws, lam, batches, cfg.inner_lr)
    assert torch.allclose(g["exact_online"][0], exact, rtol=1e-10) and g["exact_online"][1] == 9
    assert torch.allclose(g["one_step"][0], one_step_hypergradient(prob, ws, lam, batches, cfg.inner_lr), rtol=1e-10)
    g_fo = first_order_hypergradient(prob, ws, lam)
    assert torch.allclose(g["fo"][0], g_fo) and g["drmad"] == (None, 0)
    assert torch.allclose(g["scaled_one_step"][0] - g_fo, 0.4 * (g["one_step"][0] - g_fo), rtol=1e-10)
    # HyperDistill: w* is the EMA of w_0..w_4 (Eq. 13); its D* draws come from its own generator
    alpha, _ = val_grads(prob, ws[-1], lam)
    v = step_vjp(prob, alpha, distilled_point(ws[:-1], 0.7), lam, states["hyperdistill"].d_star, cfg.inner_lr)[1]
    assert torch.allclose(states["hyperdistill"].w_star, distilled_point(ws[:-1], 0.7), rtol=1e-12)
    assert torch.allclose(g["hyperdistill"][0], g_fo + 0.4 * horizon_sum(5, 0.7) * v, rtol=1e-10)


def test_quadratic_tasks_have_zero_first_order_term_and_exact_distillation():
    gen = torch.Generator().manual_seed(0)
    prob = QuadraticTasks.sample(3, gen, dim=4, examples=6, dtype=D)
    lam = torch.full((4,), -1.0, dtype=D)
    batches = sample_batches(8, 6, 2, gen)
    ws = unroll(prob, torch.zeros(3, 4, dtype=D), lam, batches, 0.3)
    assert torch.count_nonzero(first_order_hypergradient(prob, ws, lam)) == 0
    # B is linear in w and does not depend on the minibatch: the distilled JVP is the gamma-sum exactly
    so_gsum = gamma_sum_hypergradient(prob, ws, lam, batches, 0.3, 0.8)
    hd = hyperdistill_hypergradient(prob, ws, lam, batches, 0.3, 0.8, theta=1.0)
    assert torch.allclose(hd, so_gsum, rtol=1e-10)
    # and reverse mode matches finite differences on the batched problem
    exact = reverse_mode_hypergradient(prob, ws, lam, batches, 0.3)
    fd = torch.stack([(unrolled_val(prob, lam + h, torch.zeros(3, 4, dtype=D), batches, 0.3)
                       - unrolled_val(prob, lam - h, torch.zeros(3, 4, dtype=D), batches, 0.3)) / 2e-6
                      for h in 1e-6 * torch.eye(4, dtype=D)])
    assert torch.allclose(exact, fd, rtol=1e-6)


# ---------------------------------------------------------------------------------------- bad input
def test_bad_input_is_rejected_with_clear_errors():
    prob, lam, w0 = quadratic()
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="gamma"):
            ema_weight(3, bad)
        with pytest.raises(ValueError, match="gamma"):
            HyperDistillConfig(gamma=bad)
    with pytest.raises(ValueError, match="horizon"):
        unroll(prob, w0, lam, torch.zeros(0, 1, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="horizon"):
        HyperDistillConfig(inner_steps=0)
    with pytest.raises(ValueError, match="horizon"):
        sample_batches(0, 8, 2, torch.Generator())
    with pytest.raises(FloatingPointError, match="inner_lr=1000"):
        unroll(prob, w0 * 10, lam, torch.zeros(200, 1, dtype=torch.long), 1000.0)
    with pytest.raises(ValueError, match="method"):
        meta_train(HyperDistillConfig(), "rmd")
    with pytest.raises(ValueError, match="batch"):
        HyperDistillConfig(batch=20, shots=10)


def test_experiment_driver_smoke(tmp_path):
    import json

    from tutor.experiments import hyperdistill as driver
    from tutor.experiments.regime import check_regime

    out = tmp_path / "hd.json"
    assert driver.main(["--seeds", "0", "1", "--inner-opts", "1", "--meta-batch", "2", "--inner-steps", "3",
                        "--n-tasks", "4", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert {"command", "date", "torch", "tuning", "results", "runs", "regime"} <= set(rec)
    for m in driver.HEADLINE:
        assert rec["tuning"]["chosen"][m] > 0
        rows = rec["results"][m]
        assert len(rows) == 2 and all(len(r["per_task"]) == 4 for r in rows)
        assert all(abs(sum(r["per_task"]) / 4 - r["mse"]) < 1e-5 for r in rows)
    assert rec["tuning"]["gamma"] in driver.GAMMA_GRID
    assert rec["results"]["hyperdistill"][0]["diagnostics"] and not rec["results"]["fo"][0]["diagnostics"]
    check_regime(rec["regime"])
    assert len(rec["regime"]) == 4 and {m["method"] for m in rec["regime"]} == {"hyperdistill", "exact_online"}
