"""Sequential Reptile: the second-order expansion, its identities, reductions, baselines, toys, errors."""

import itertools
import math

import pytest
import torch

from tutor.papers import cts
from tutor.papers.seq_reptile import (
    InnerOptimizer,
    conflict_energy,
    cosine_matrix,
    cyclic_order,
    expansion_terms,
    gradvac,
    meta_gradient,
    mtl_gradient,
    oracle,
    pair_inner_products,
    parallel_reptile_step,
    pcgrad,
    product_tasks,
    quadratic_tasks,
    random_order,
    run_toy,
    seq_reptile_step,
    sequential_trajectory,
    surrogate_loss,
    task_gradients,
    wells_tasks,
)

D = torch.float64


def quad(T=3, dim=5, seed=0):
    losses, A, c = quadratic_tasks(T, dim, torch.Generator().manual_seed(seed))
    return losses, A, c, oracle(losses, T)


def residual(grad_fn, phi, order, alpha, terms):
    theta, _ = sequential_trajectory(grad_fn, phi, order, InnerOptimizer("sgd", alpha))
    pred = terms["zeroth"] + alpha * (terms["inter"] + terms["intra"])
    return (meta_gradient(phi, theta, alpha) - pred).norm().item()


def test_expansion_residual_shrinks_like_alpha_squared():
    _, _, _, g = quad()
    phi = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=D)
    order = torch.tensor([0, 2, 1, 0, 1, 2])
    terms = expansion_terms(g, phi, order)
    alphas = [0.04, 0.02, 0.01, 0.005]
    res = [residual(g, phi, order, a, terms) for a in alphas]
    slopes = [math.log2(res[i] / res[i + 1]) for i in range(3)]
    assert all(1.8 < s < 2.2 for s in slopes), slopes
    assert res[-1] > 0                                               # second order is really there


def test_expansion_hessian_terms_match_closed_form_on_quadratics():
    _, A, c, g = quad()
    phi = torch.randn(5, generator=torch.Generator().manual_seed(2), dtype=D)
    order = torch.tensor([1, 1, 0, 2])
    terms = expansion_terms(g, phi, order)
    gt = torch.einsum("tij,tj->ti", A, phi - c)                        # g_t = A_t (phi - c_t)
    inter = torch.zeros(5, dtype=D)
    intra = torch.zeros(5, dtype=D)
    for k in range(4):
        for j in range(k):
            v = -A[order[k]] @ gt[order[j]]
            if order[j] == order[k]:
                intra += v
            else:
                inter += v
    assert torch.allclose(terms["inter"], inter, atol=1e-12) and torch.allclose(terms["intra"], intra, atol=1e-12)
    assert torch.allclose(terms["zeroth"], gt[order].sum(0), atol=1e-12)


def test_permutation_average_equals_half_gradient_of_pairwise_inner_products():
    losses, _, _, g = quad(T=3, dim=4, seed=3)
    phi = torch.randn(4, generator=torch.Generator().manual_seed(4), dtype=D)
    base = [0, 1, 2, 0]
    orders = list(itertools.permutations(base))
    avg = torch.zeros(4, dtype=D)
    for o in orders:
        t = expansion_terms(g, phi, torch.tensor(o))
        avg -= (t["inter"] + t["intra"]) / len(orders)               # mean of sum_{j<k} H_{t_k} g_{t_j}
    x = phi.clone().requires_grad_()
    xe = x.expand(3, 4)
    (gt,) = torch.autograd.grad(losses(xe, torch.arange(3)).sum(), xe, create_graph=True)
    pairs = pair_inner_products(gt, torch.tensor([2, 1, 1]))
    (half_grad,) = torch.autograd.grad(0.5 * (pairs["inter"] + pairs["intra"]), x)
    assert torch.allclose(avg, half_grad, atol=1e-12)
    # and the surrogate's gradient is the averaged first-order MG: sum_k g_k - alpha * avg
    alpha = 0.01
    xs = phi.clone().requires_grad_()
    (sg,) = torch.autograd.grad(surrogate_loss(losses, xs, torch.tensor([2, 1, 1]), alpha, create_graph=True), xs)
    zeroth = expansion_terms(g, phi, torch.tensor(base))["zeroth"]
    assert torch.allclose(sg, zeroth - alpha * avg, atol=1e-12)


def test_K_equals_T_identity_of_pairwise_inner_products():
    gen = torch.Generator().manual_seed(5)
    gt = torch.randn(4, 6, generator=gen, dtype=D)
    order = random_order(4, 4, gen)
    seq = gt[order]
    pairwise = sum(seq[j] @ seq[k] for k in range(4) for j in range(k))
    identity = 0.5 * (gt.sum(0).pow(2).sum() - gt.pow(2).sum())
    pairs = pair_inner_products(gt, torch.ones(4, dtype=torch.long))
    assert abs(pairwise - identity) < 1e-12 and abs(pairs["inter"] - identity) < 1e-12 and pairs["intra"] == 0


def test_pair_inner_products_counts_every_ordered_pair_once():
    gen = torch.Generator().manual_seed(6)
    gt = torch.randn(3, 4, generator=gen, dtype=D)
    order = torch.tensor([2, 0, 2, 1, 0, 2])
    seq = gt[order]
    inter = sum(seq[j] @ seq[k] for k in range(6) for j in range(k) if order[j] != order[k])
    intra = sum(seq[j] @ seq[k] for k in range(6) for j in range(k) if order[j] == order[k])
    pairs = pair_inner_products(gt, torch.bincount(order, minlength=3))
    assert abs(pairs["inter"] - inter) < 1e-12 and abs(pairs["intra"] - intra) < 1e-12


def test_one_task_seq_reptile_is_standard_reptile():
    losses, _, _, g = quad(T=1, dim=3, seed=7)
    phi = torch.randn(2, 3, generator=torch.Generator().manual_seed(8), dtype=D)
    K, alpha, eta = 5, 0.1, 0.3
    new, _ = seq_reptile_step(g, phi, torch.zeros(K, dtype=torch.long), InnerOptimizer("sgd", alpha), eta)
    one = lambda x: losses(x, torch.tensor([0]))                    # noqa: E731  (cts's (..., tasks, dim) form)
    reference = cts.reptile_step(phi, cts.unroll(one, phi, K, alpha, 1), eta)
    assert torch.allclose(new, reference, atol=1e-13)
    par = parallel_reptile_step(g, phi, 1, K, InnerOptimizer("sgd", alpha), eta)
    assert torch.allclose(par, reference, atol=1e-13)


def test_parallel_reptile_is_reptile_averaged_over_tasks():
    losses, _, _, g = quad(T=3, dim=3, seed=9)
    phi = torch.randn(4, 3, generator=torch.Generator().manual_seed(10), dtype=D)
    par = parallel_reptile_step(g, phi, 3, 4, InnerOptimizer("sgd", 0.1), 0.5)
    every = lambda x: losses(x, torch.arange(3))                    # noqa: E731
    assert torch.allclose(par, cts.reptile_step(phi, cts.unroll(every, phi, 4, 0.1, 3), 0.5), atol=1e-13)


def test_eta_one_is_sequential_sgd_and_K_one_is_one_sgd_step():
    _, A, c, g = quad(seed=11)
    phi = torch.randn(5, generator=torch.Generator().manual_seed(12), dtype=D)
    order = torch.tensor([2, 0, 1, 1, 0])
    alpha = 0.07
    new, grads = seq_reptile_step(g, phi, order, InnerOptimizer("sgd", alpha), 1.0)
    x = phi.clone()
    for k, t in enumerate(order):
        gk = A[t] @ (x - c[t])
        assert torch.allclose(grads[k], gk, atol=1e-13)
        x = x - alpha * gk
    assert torch.allclose(new, x, atol=1e-13)
    one, _ = seq_reptile_step(g, phi, torch.tensor([1]), InnerOptimizer("sgd", alpha), 1.0)
    assert torch.allclose(one, phi - alpha * A[1] @ (phi - c[1]), atol=1e-13)
    still, _ = seq_reptile_step(g, phi, order, InnerOptimizer("sgd", alpha), 0.0)
    assert torch.equal(still, phi)


def test_parallel_reptile_has_no_inter_task_term():
    _, _, _, g = quad(seed=13)
    phi = torch.randn(5, generator=torch.Generator().manual_seed(14), dtype=D)
    k = 3
    terms = [expansion_terms(g, phi, torch.full((k,), t)) for t in range(3)]
    assert all(t["inter"].abs().max() == 0 for t in terms)
    zeroth = sum(t["zeroth"] for t in terms) / 3
    intra = sum(t["intra"] for t in terms) / 3
    mixed = expansion_terms(g, phi, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2]))
    res, res_mixed = [], []
    for a in (0.02, 0.01, 0.005):
        par = parallel_reptile_step(g, phi, 3, k, InnerOptimizer("sgd", a), 1.0)
        mg = meta_gradient(phi, par, a)                               # (phi - mean_t theta^t) / alpha
        res.append((mg - (zeroth + a * intra)).norm().item())
        with_inter = (mixed["zeroth"] + a * (mixed["inter"] + mixed["intra"])) / 3
        res_mixed.append((mg - with_inter).norm().item())
    assert 3.5 < res[0] / res[1] < 4.5 and 3.5 < res[1] / res[2] < 4.5    # only O(alpha^2) is left
    assert res_mixed[2] > 10 * res[2]                                       # an inter-task term would not fit


def test_inner_adam_and_adamw_match_torch_optimisers():
    _, _, _, g = quad(seed=15)
    phi = torch.randn(5, generator=torch.Generator().manual_seed(16), dtype=D)
    order = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    for kind, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        theta, _ = sequential_trajectory(g, phi, order, InnerOptimizer(kind, 0.05, weight_decay=0.1))
        p = phi.clone().requires_grad_()
        opt = cls([p], lr=0.05, weight_decay=0.1)
        for t in order:
            p.grad = g(p.detach().unsqueeze(0), t.view(1)).squeeze(0)
            opt.step()
        assert torch.allclose(theta, p.detach(), atol=1e-12), kind


def test_closed_form_toy_gradients_match_autograd():
    p = torch.randn(7, 3, 2, generator=torch.Generator().manual_seed(17), dtype=D)
    for losses in (product_tasks((1.0, 3.0, -2.0)), wells_tasks(3)):
        tasks = torch.tensor([2, 0, 1])
        x = p.clone().requires_grad_()
        (auto,) = torch.autograd.grad(losses(x, tasks).sum(), x)
        assert torch.allclose(losses.grad(p, tasks), auto, atol=1e-12)


def test_pcgrad_removes_exactly_the_conflicting_component():
    g1 = torch.tensor([1.0, 0.0], dtype=D)
    g2 = torch.tensor([-1.0, 1.0], dtype=D)
    out = pcgrad(torch.stack([g1, g2]))
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2                              # g1 minus its component along g2
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    assert abs(p1 @ g2) < 1e-15 and abs(p2 @ g1) < 1e-15
    assert torch.allclose(out, p1 + p2, atol=1e-15)
    agree = torch.tensor([[1.0, 0.2], [0.5, 1.0]], dtype=D)             # no conflict: the plain sum
    assert torch.allclose(pcgrad(agree), mtl_gradient(agree))
    batched = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(18), dtype=D)
    assert torch.allclose(pcgrad(batched), torch.stack([pcgrad(b) for b in batched]), atol=1e-14)


def test_gradvac_sets_the_target_cosine_and_reduces_to_pcgrad():
    gen = torch.Generator().manual_seed(19)
    g = torch.randn(3, 5, generator=gen, dtype=D)
    zero = torch.zeros(3, 3, dtype=D)
    out, new = gradvac(g, zero, beta=0.0)
    assert torch.allclose(out, pcgrad(g), atol=1e-12) and torch.equal(new, zero)
    g2 = torch.tensor([[1.0, 0.0, 0.0], [-0.2, 1.0, 0.3]], dtype=D)     # cos about -0.19 < target 0.5
    target = torch.full((2, 2), 0.5, dtype=D)

    def vaccinate(gi, gj):                                             # the pair rule, written out
        c = gi @ gj / (gi.norm() * gj.norm())
        w = gi.norm() * (0.5 * (1 - c ** 2).sqrt() - c * math.sqrt(0.75)) / (gj.norm() * math.sqrt(0.75))
        return gi + w * gj
    new0, new1 = vaccinate(g2[0], g2[1]), vaccinate(g2[1], g2[0])
    assert abs(new0 @ g2[1] / (new0.norm() * g2[1].norm()) - 0.5) < 1e-12     # the pair now sits at the target
    assert torch.allclose(gradvac(g2, target, 0.0)[0], new0 + new1, atol=1e-13)
    _, ema = gradvac(g2, target, beta=0.25)
    assert torch.allclose(ema, 0.75 * target + 0.25 * cosine_matrix(g2), atol=1e-14)


def test_diagnostics_shapes_and_values():
    g = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]], dtype=D)                 # (1 start, 2 tasks, 2)
    assert conflict_energy(g).item() == 26.0
    assert torch.allclose(cosine_matrix(g)[0], torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=D))
    _, _, _, gf = quad()
    assert task_gradients(gf, torch.zeros(4, 2, 5, dtype=D), 3).shape == (4, 2, 3, 5)


def test_orders():
    gen = torch.Generator().manual_seed(20)
    o = random_order(3, 9, gen)
    assert torch.equal(torch.bincount(o, minlength=3), torch.tensor([3, 3, 3]))
    assert torch.equal(cyclic_order(3, 5), torch.tensor([0, 1, 2, 0, 1]))
    again = random_order(3, 9, torch.Generator().manual_seed(20))
    assert torch.equal(o, again)


def test_toy_A_mtl_conserves_balance_and_seq_reptile_balances_with_lower_energy():
    losses = product_tasks((1.0, 3.0))
    starts = torch.tensor([[4.0, 0.2], [0.3, 3.0], [2.5, 0.5]], dtype=D)
    mtl = run_toy("MTL", losses, starts, 2, 6000, alpha=0.008, K=2, eta=0.5)          # MTL lr 0.004
    b0 = starts[:, 0] ** 2 - starts[:, 1] ** 2
    bf = mtl.final[:, 0] ** 2 - mtl.final[:, 1] ** 2
    assert (bf - b0).abs().max() < 1e-2
    assert ((mtl.final[:, 0] * mtl.final[:, 1]) - 2).abs().max() < 1e-3          # it did reach the valley
    seq = run_toy("Seq-Reptile", losses, starts, 2, 4000, alpha=0.05, K=2, eta=0.5)
    bs = seq.final[:, 0] ** 2 - seq.final[:, 1] ** 2
    assert bs.abs().max() < 1e-2
    assert (seq.energy[-1] < mtl.energy[-1]).all()
    # the vectorised run equals one run per start
    single = run_toy("Seq-Reptile", losses, starts[1:2], 2, 50, alpha=0.05, K=2, eta=0.5)
    batch = run_toy("Seq-Reptile", losses, starts, 2, 50, alpha=0.05, K=2, eta=0.5)
    assert torch.allclose(single.phis[:, 0], batch.phis[:, 1], atol=1e-14)


def test_toy_B_conflict_energy_ordering_on_the_compromise_basin():
    losses = wells_tasks(3)
    starts = torch.cartesian_prod(torch.linspace(2.5, 5.5, 4, dtype=D), torch.linspace(-1.5, 1.5, 4, dtype=D))
    runs = {m: run_toy(m, losses, starts, 3, 300, alpha=0.3, K=12, eta=0.5)
            for m in ("MTL", "Seq-Reptile", "Parallel Reptile")}
    e = {m: r.energy[-1].mean().item() for m, r in runs.items()}
    assert e["Seq-Reptile"] < e["MTL"] < e["Parallel Reptile"], e


def test_bad_input_is_a_clear_error():
    _, _, _, g = quad()
    phi = torch.zeros(5, dtype=D)
    inner = InnerOptimizer("sgd", 0.1)
    with pytest.raises(ValueError, match="non-empty"):
        sequential_trajectory(g, phi, [], inner)
    with pytest.raises(ValueError, match=r"unknown task\(s\) \[3\]"):
        sequential_trajectory(g, phi, [0, 3], inner)
    with pytest.raises(TypeError, match="integers"):
        sequential_trajectory(g, phi, [0.0, 1.0], inner)
    bad = oracle(lambda x, t: x.sum(-1) / 0.0, 2)
    with pytest.raises(FloatingPointError, match="non-finite"):
        sequential_trajectory(bad, torch.zeros(3, dtype=D), [0, 1], inner)
    with pytest.raises(ValueError, match="eta"):
        seq_reptile_step(g, phi, [0], inner, 1.5)
    with pytest.raises(ValueError, match="kind"):
        InnerOptimizer("rmsprop")
    with pytest.raises(ValueError, match="method"):
        run_toy("MAML", product_tasks(), phi[:2].view(1, 2), 2, 1, 0.1, 2, 0.5)
    with pytest.raises(ValueError, match="order"):
        run_toy("Seq-Reptile", product_tasks(), phi[:2].view(1, 2), 2, 1, 0.1, 2, 0.5, order="sorted")
    with pytest.raises(FloatingPointError, match="diverged|non-finite"):
        sequential_trajectory(g, torch.full((5,), 1e3, dtype=D), [0] * 200, InnerOptimizer("sgd", 50.0))


# --------------------------------------------------------------------------------------------
# the CLDR task builder and the multilingual experiment
# --------------------------------------------------------------------------------------------
def test_cldr_typing_tasks_are_disjoint_balanced_and_deterministic():
    from tutor.data.cldr import build_typing_tasks, locale_names

    cats = ("territories", "languages", "currencies")
    tasks = build_typing_tasks(("en", "ko", "sw"), cats, n_train=7, n_val=3, n_test=5, seed=4)
    for lang, task in tasks.items():
        splits = (task.train, task.val, task.test)
        sets = [set(s.strings) for s in splits]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), lang
        for split, n in zip(splits, (7, 3, 5)):
            assert len(split) == 3 * n and torch.equal(torch.bincount(torch.tensor(split.labels)), torch.full((3,), n))
            names = locale_names(lang, cats)
            assert all(s in names[cats[y]] for s, y in zip(split.strings, split.labels))   # label = its category
    again = build_typing_tasks(("sw", "en"), cats, n_train=7, n_val=3, n_test=5, seed=4)
    assert again["en"] == tasks["en"] and again["sw"] == tasks["sw"]         # same seed, any order of languages
    other = build_typing_tasks(("en",), cats, n_train=7, n_val=3, n_test=5, seed=5)
    assert other["en"].test.strings != tasks["en"].test.strings
    more = build_typing_tasks(("en",), cats, n_train=20, n_val=3, n_test=5, seed=4)
    assert more["en"].test == tasks["en"].test                               # the test set does not depend on n_train


def test_cldr_names_are_unambiguous_and_errors_name_the_problem():
    from tutor.data.cldr import CATEGORIES, build_typing_tasks, build_vocab, encode, locale_names, pretraining_corpus

    names = locale_names("en")
    every = [s for c in CATEGORIES for s in names[c]]
    assert len(every) == len(set(every)) and "Arabic" not in every           # a language and a script: dropped
    with pytest.raises(ValueError, match="'xx_nowhere'"):
        build_typing_tasks(("en", "xx_nowhere"))
    with pytest.raises(ValueError, match=r"'sw' has \d+ unambiguous scripts"):
        build_typing_tasks(("sw",), ("territories", "scripts"), n_train=40, n_val=10, n_test=10)
    with pytest.raises(ValueError, match="category"):
        locale_names("en", ("planets",))
    train, held = pretraining_corpus(("fi",), exclude={"Suomi"}, heldout_fraction=0.2)
    assert "Suomi" not in train + held and not set(train) & set(held)
    assert abs(len(held) / (len(train) + len(held)) - 0.2) < 0.01
    vocab = build_vocab(train)
    x = encode(["한국", "Åland"], build_vocab(["한국한국한국", "Åland" * 3]), 8)
    assert (x[0, :6] > 2).all() and x[0, 6:].eq(0).all()                        # two syllables -> six jamo
    assert x.shape == (2, 8) and len(vocab) > 3


def test_typing_oracle_gradient_matches_finite_differences_and_rejects_bad_tasks():
    from tutor.experiments.seq_reptile import CLDRConfig, Flat, TypingOracle, _start, build_data, init_encoder

    cfg = CLDRConfig(languages=("en", "fi"), zero_shot=(), other_locales=(), n_train=4, n_val=2, n_test=2,
                     hidden=8, emb=4, K=2, heldout_eval=10)
    data = build_data(cfg)
    pre = {k: v.double() for k, v in init_encoder(len(data.vocab), cfg, torch.Generator().manual_seed(0)).items()}
    flat, phi, frozen = _start(pre, cfg, 0)
    phi = phi.double()
    oracle = TypingOracle(data, flat, frozen, cfg.languages, 5, torch.Generator().manual_seed(1))
    x, y = oracle.next_batch(1)
    g = oracle.grad_at(phi, x, y)
    v = torch.randn(phi.shape, generator=torch.Generator().manual_seed(2), dtype=D)
    eps = 1e-6
    fd = (oracle.loss(phi + eps * v, x, y) - oracle.loss(phi - eps * v, x, y)) / (2 * eps)
    assert abs(fd - g @ v) < 1e-6 * max(1.0, abs(fd))
    with pytest.raises(ValueError, match="unknown task"):
        oracle(phi.view(1, -1), torch.tensor([2]))
    data.train["en"] = (data.train["en"][0][:0], data.train["en"][1][:0])
    with pytest.raises(ValueError, match="'en' has no training names"):
        TypingOracle(data, flat, frozen, cfg.languages, 5, torch.Generator())
    assert isinstance(Flat(pre).unflatten(Flat(pre).flatten(pre))["emb"], torch.Tensor)


def _tiny(**kw):
    from tutor.experiments.seq_reptile import CLDRConfig, build_data, init_encoder

    kw = {"K": 2, **kw}
    cfg = CLDRConfig(languages=("en", "fi"), zero_shot=(), other_locales=(), n_train=4, n_val=2, n_test=2,
                     hidden=8, emb=4, heldout_eval=10, probe_size=6, **kw)
    data = build_data(cfg)
    pre = init_encoder(len(data.vocab), cfg, torch.Generator().manual_seed(0))
    return cfg, data, pre


def test_every_probe_batch_is_class_balanced_held_out_and_contains_every_class():
    from tutor.experiments.seq_reptile import CLDRConfig, build_data, probe_batch

    cfg = CLDRConfig(zero_shot=(), other_locales=(), heldout_eval=10)          # the 9 real languages
    data = build_data(cfg)
    C = len(cfg.categories)
    for lang in cfg.languages:
        x, y = probe_batch(data, lang, cfg.probe_size)
        assert torch.equal(torch.bincount(y, minlength=C), torch.full((C,), cfg.probe_size // C)), lang
        val = {tuple(r.tolist()) for r in data.val[lang][0]}
        assert all(tuple(r.tolist()) in val for r in x)                          # held-out names only
        # the pattern this replaces: the first names of a class-sorted split miss a class
        assert torch.bincount(data.train[lang][1][:cfg.probe_size], minlength=C).eq(0).any()
    with pytest.raises(ValueError, match="probe_size=2 must give at least one name of each of the 3 classes"):
        probe_batch(data, "en", 2)
    with pytest.raises(ValueError, match="fewer than"):
        probe_batch(data, "en", 3 * (cfg.n_val + 1))
    with pytest.raises(ValueError, match="probe split"):
        probe_batch(data, "en", 48, "test")


def test_pcgrad_reshuffles_the_other_tasks_for_every_task():
    g = torch.randn(4, 6, generator=torch.Generator().manual_seed(3), dtype=D)
    clone = torch.Generator().manual_seed(7)
    perms = [torch.randperm(4, generator=clone).tolist() for _ in range(4)]     # one fresh order per task i
    expect = sum(_pc_one(g, i, perms[i]) for i in range(4))
    assert torch.allclose(pcgrad(g, gen=torch.Generator().manual_seed(7)), expect, atol=1e-12)
    with pytest.raises(ValueError, match="not both"):
        pcgrad(g, order=[0, 1, 2, 3], gen=torch.Generator())


def _pc_one(g, i, order):
    gi = g[i]
    for j in order:
        if j != i and gi @ g[j] < 0:
            gi = gi - (gi @ g[j]) / (g[j] @ g[j]) * g[j]
    return gi


def test_seq_mtl_equals_seq_reptile_eta1_over_one_trajectory_and_update_counts():
    from tutor.experiments.seq_reptile import METHODS, evaluate_model, finetune

    cfg, data, pre = _tiny(budget=8, K=8, probes=2)
    a = finetune("seq_mtl", pre, data, cfg, 1e-2, seed=1)
    b = finetune("seq_reptile_eta1", pre, data, cfg, 1e-2, seed=1)
    assert torch.allclose(a["theta"], b["theta"], atol=1e-6)                    # same batches, same order, one state
    c = finetune("Seq-Reptile", pre, data, cfg, 1e-2, seed=1)
    assert not torch.allclose(a["theta"], c["theta"])                           # eta = 0.5 interpolates
    cfg, data, pre = _tiny(budget=8, probes=2)
    want = {"MTL": 4, "PCGrad": 4, "GradVac": 4, "mtl_small_batch": 8, "seq_mtl": 8, "Seq-Reptile": 8,
            "seq_reptile_eta1": 8, "seq_reptile_sgd": 8, "Parallel Reptile": 8, "STL": 8}
    assert set(want) == set(METHODS)
    for m, updates in want.items():
        r = finetune(m, pre, data, cfg, 1e-2, seed=0)
        assert r["calls"] == 8 and r["updates"] == updates, m
        assert r["outer_updates"] == (4 if "Reptile" in m or m.startswith("seq_reptile") else 0), m
        if m != "STL":
            assert len(r["probes"]) == 3 and all(-1 <= p["cosine_encoder"] <= 1 for p in r["probes"]), m
            assert all(p["energy"] >= 0 and math.isfinite(p["train_loss"]) for p in r["probes"]), m
        out = evaluate_model(r, data, cfg, pre)
        assert abs(out["mlm_after"] - out["mlm_before"] - out["forgetting"]) < 1e-9


def test_alignment_numbers_match_their_definitions():
    from tutor.experiments.seq_reptile import alignment

    g = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [1.0, 1.0, 0.0]], dtype=D)
    enc = torch.tensor([True, True, False])
    a = alignment(g, enc)
    assert abs(a["energy"] - (5 + 5 + 2)) < 1e-12
    assert abs(a["inner"] - (4 + 1 + 1) / 3) < 1e-12                          # mean over the 3 pairs
    assert abs(a["cosine_encoder"] - (0 + 2 * 2 ** -0.5) / 3) < 1e-12


def test_half_decade_ladder_and_wells_spread():
    from tutor.experiments.seq_reptile import half_decade

    assert [half_decade(3e-3, -1), half_decade(1e-3, -1), half_decade(3e-2, 1), half_decade(1.0, 1)] == \
        [1e-3, 3e-4, 0.1, 3.0]
    p = torch.randn(5, 3, 2, generator=torch.Generator().manual_seed(0), dtype=D)
    t = torch.tensor([0, 1, 2])
    assert torch.equal(wells_tasks(3)(p, t), wells_tasks(3, spread=120.0)(p, t))
    same = wells_tasks(3, spread=0.0)(p[:, :1].expand(5, 3, 2), t)
    assert torch.equal(same[:, 0], same[:, 1]) and torch.equal(same[:, 0], same[:, 2])
    with pytest.raises(ValueError, match="spread"):
        wells_tasks(3, spread=400.0)


def test_seq_reptile_driver_smoke(tmp_path):
    import json

    from tutor.experiments import seq_reptile as drv
    from tutor.experiments.regime import check_regime

    ckpt = tmp_path / "mlm.pt"
    assert drv.main(["pretrain", "--steps", "3", "--out", str(ckpt)]) == 0
    pre, vocab, cfg = drv.load_pretrained(ckpt)
    assert set(pre) >= {"emb", "mlm.weight"} and len(vocab) == pre["emb"].shape[0]
    out = tmp_path / "r.json"
    cache = tmp_path / "cache.jsonl"
    argv = ["--seeds", "0", "1", "--budget", "36", "--lr-grid", "0.001", "0.003", "0.01", "--tune-seeds", "5",
            "--toy-starts", "2", "--checkpoint", str(ckpt), "--cache", str(cache), "--out", str(out)]
    assert drv.main(argv) == 0
    record = json.loads(out.read_text())
    assert set(record["runs"]) == {"0", "1"} and set(record["runs"]["0"]) == set(drv.METHODS)
    r = record["runs"]["0"]["Seq-Reptile"]
    assert set(r["accuracy"]) == set(drv.TYDI_LANGUAGES) and set(r["zero_shot"]) == set(drv.ZERO_SHOT)
    assert r["probes"] and all(-1 <= p["cosine"] <= 1 for p in r["probes"]) and math.isfinite(r["forgetting"])
    assert record["runs"]["0"]["STL"]["zero_shot"] == {}
    assert set(record["tuning"]["chosen"]) == set(drv.METHODS) and "command" in record and "date" in record
    assert set(record["gentle"]["runs"]["1"]) == set(drv.GENTLE_METHODS)
    check_regime(record["regime"])
    assert len(record["regime"]) == 4 and all(len(d) == 2 for m in record["regime"] for d in m["per_seed"].values())
    lines = len(cache.read_text().splitlines())
    assert drv.main(argv + ["--overwrite"]) == 0                                 # resumed: nothing recomputed
    assert len(cache.read_text().splitlines()) == lines
    with pytest.raises(ValueError, match="method"):
        drv.finetune("MAML", pre, drv.build_data(cfg, vocab), cfg, 1e-3)
