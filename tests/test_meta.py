"""Mathematics of the meta-learning core: finite differences, closed forms, reductions."""

import pytest
import torch

from tutor.data import EpisodeSampler, GaussianClassTasks, SinusoidTasks, stack_episodes
from tutor.meta import MAML, ProtoNet, Reptile, inner_loop, leaves, meta_sgd, prototype_logits
from tutor.nets import MLP, Conv4

D = torch.float64


def tiny_glyph_batch(tasks=3, ways=3, shots=1, queries=2):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 5, 1, 12, 12, generator=g, dtype=D)
    return EpisodeSampler(images, range(8), ways, shots, queries).batch(tasks, 1).to(dtype=D)


def central_difference(f, tensor, eps=1e-6, n=6, seed=0):
    """Directional derivatives of f along ``n`` random directions of ``tensor`` (in place)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        d = torch.randn(tensor.shape, generator=g, dtype=D)
        with torch.no_grad():
            tensor += eps * d
            up = f()
            tensor -= 2 * eps * d
            down = f()
            tensor += eps * d
        out.append((d, (up - down) / (2 * eps)))
    return out


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_meta_gradient_matches_finite_differences(first_order):
    net = Conv4(image_size=12, hidden=4, ways=3, blocks=2)
    learner = MAML(net, inner_lr=0.3, inner_steps=2, first_order=first_order)
    meta = learner.init(0, dtype=D)
    batch = tiny_glyph_batch()
    grads, _ = learner.meta_gradient(meta, batch)

    def mean_loss():
        return sum(learner.task_loss(meta, batch[i])[0] for i in range(len(batch))) / len(batch)

    w = meta["net"]["conv1.weight"]
    g = grads[[id(p) for p in leaves(meta)].index(id(w))]
    for d, fd in central_difference(mean_loss, w):
        analytic = (g * d).sum()
        if first_order:  # FOMAML is *not* the true gradient: it must differ from FD
            continue
        assert torch.allclose(analytic, fd, rtol=1e-6, atol=1e-9), (analytic, fd)
    if first_order:
        d, fd = central_difference(mean_loss, w, n=1)[0]
        assert not torch.allclose((g * d).sum(), fd, rtol=1e-4)


def test_meta_sgd_learning_rate_gradient_matches_finite_differences():
    net = MLP(4, (6,), ways=3, bn=True)
    learner = meta_sgd(net, inner_lr=0.2, inner_steps=2)
    assert learner.lr_mode == "per_parameter" and learner.learn_lr
    meta = learner.init(1, dtype=D)
    assert all(meta["lr"][k].shape == v.shape and meta["lr"][k].requires_grad for k, v in meta["net"].items())
    ep = GaussianClassTasks(dim=4).sample(3, 2, 3, gen=0).to(dtype=D)
    grads, _ = learner.meta_gradient(meta, [ep])
    lr = meta["lr"]["fc1.weight"]
    g = grads[[id(p) for p in leaves(meta)].index(id(lr))]
    for d, fd in central_difference(lambda: learner.task_loss(meta, ep)[0], lr, n=3):
        assert torch.allclose((g * d).sum(), fd, rtol=1e-6, atol=1e-10)


def test_maml_closed_form_linear_regression():
    """One inner step on least squares: theta' = theta - a X^T(X theta - y) 2/n, loss is quadratic."""
    g = torch.Generator().manual_seed(3)
    xs, ys = torch.randn(5, 3, generator=g, dtype=D), torch.randn(5, 1, generator=g, dtype=D)
    xq, yq = torch.randn(7, 3, generator=g, dtype=D), torch.randn(7, 1, generator=g, dtype=D)
    net = MLP(3, (), ways=1)
    params = {"head.weight": torch.randn(1, 3, generator=g, dtype=D).requires_grad_(),
              "head.bias": torch.zeros(1, dtype=D)}
    a = 0.1
    adapted = inner_loop(net, params, xs, ys, 1, a, loss="mse", adapt=lambda k: k == "head.weight").params
    qloss = (net(adapted, xq) - yq).pow(2).mean()
    (grad,) = torch.autograd.grad(qloss, [params["head.weight"]])
    # closed form: theta' = A theta + b with A = I - 2a/n Xs^T Xs, b = 2a/n Xs^T ys
    n, m = 5, 7
    A = torch.eye(3, dtype=D) - 2 * a / n * xs.T @ xs
    b = 2 * a / n * xs.T @ ys
    theta = params["head.weight"].detach().T
    theta_prime = A @ theta + b
    expected = A.T @ (2 / m * xq.T @ (xq @ theta_prime - yq))
    assert torch.allclose(adapted["head.weight"].detach().T, theta_prime)
    assert torch.allclose(grad.T, expected)


def test_fomaml_one_step_equals_gradient_at_adapted_point():
    """FOMAML's meta-gradient is the query gradient evaluated at theta' (Jacobian = identity)."""
    net = MLP(4, (5,), ways=3)
    learner = MAML(net, inner_lr=0.5, inner_steps=1, first_order=True)
    meta = learner.init(0, dtype=D)
    ep = GaussianClassTasks(dim=4).sample(3, 2, 3, gen=1).to(dtype=D)
    grads, _ = learner.meta_gradient(meta, [ep])
    adapted = {k: v.detach().requires_grad_() for k, v in learner.adapt(meta, ep).params.items()}
    qloss = torch.nn.functional.cross_entropy(net(adapted, ep.query_x), ep.query_y)
    expected = torch.autograd.grad(qloss, [adapted[k] for k in sorted(adapted)])
    net_grads = grads[len(grads) - len(expected):]  # "net" sorts after nothing trainable
    for a, b in zip(net_grads, expected):
        assert torch.allclose(a, b)


def test_reptile_one_step_equals_scaled_gradient():
    """With one inner step, theta - theta_1 = alpha * grad L(theta) (Reptile = joint training)."""
    net = MLP(4, (5,), ways=3)
    learner = Reptile(net, inner_lr=0.3, inner_steps=1)
    meta = learner.init(0, dtype=D)
    ep = GaussianClassTasks(dim=4).sample(3, 2, 3, gen=2).to(dtype=D)
    direction, _ = learner.reptile_direction(meta, ep)
    x, y = torch.cat([ep.support_x, ep.query_x]), torch.cat([ep.support_y, ep.query_y])
    loss = torch.nn.functional.cross_entropy(net(meta["net"], x), y)
    grads = torch.autograd.grad(loss, list(meta["net"].values()))
    for (k, _), g in zip(meta["net"].items(), grads):
        assert torch.allclose(direction[k], 0.3 * g)


def test_reptile_sgd_update_moves_towards_adapted_weights():
    net = MLP(4, (5,), ways=3)
    learner = Reptile(net, inner_lr=0.3, inner_steps=3)
    meta = learner.init(0, dtype=D)
    ep = GaussianClassTasks(dim=4).sample(3, 2, 3, gen=2).to(dtype=D)
    before = {k: v.detach().clone() for k, v in meta["net"].items()}
    direction, _ = learner.reptile_direction(meta, ep)
    learner.outer_step(meta, torch.optim.SGD(leaves(meta), lr=0.5), [ep])
    for k in before:  # theta + eps (theta_K - theta) with eps = 0.5
        assert torch.allclose(meta["net"][k].detach(), before[k] - 0.5 * direction[k])


def test_protonet_equals_nearest_class_mean():
    g = torch.Generator().manual_seed(0)
    s, q = torch.randn(9, 4, generator=g, dtype=D), torch.randn(6, 4, generator=g, dtype=D)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])
    logits = prototype_logits(s, y, q, 3)
    means = torch.stack([s[y == c].mean(0) for c in range(3)])
    nearest = torch.cdist(q, means).argmin(1)
    assert torch.equal(logits.argmax(1), nearest)
    assert torch.allclose(-logits, torch.cdist(q, means).pow(2))
    with pytest.raises(ValueError, match="at least one support example"):
        prototype_logits(s, torch.zeros(9, dtype=torch.long), q, 3)


@pytest.mark.parametrize("make", [
    lambda: MAML(Conv4(image_size=12, hidden=4, ways=3, blocks=2), inner_steps=2),
    lambda: MAML(Conv4(image_size=12, hidden=4, ways=3, blocks=2), inner_steps=2, first_order=True),
    lambda: MAML(Conv4(image_size=12, hidden=4, ways=3, blocks=2), lr_mode="per_layer", learn_lr=True),
    lambda: ProtoNet(Conv4(image_size=12, hidden=4, ways=0, blocks=2)),
    lambda: Reptile(Conv4(image_size=12, hidden=4, ways=3, blocks=2), inner_steps=2),
])
def test_batched_modes_agree_with_the_loop_in_float64(make):
    learner = make()
    meta = learner.init(0, dtype=D)
    batch = tiny_glyph_batch(tasks=4)
    ref, _ = learner.meta_gradient(meta, batch, "loop")
    for mode in ("threads", "vmap"):
        got, _ = learner.meta_gradient(meta, batch, mode)
        for a, b in zip(ref, got):
            assert torch.allclose(a, b, rtol=1e-8, atol=1e-12), mode


def test_inner_loop_options():
    net = MLP(4, (5,), ways=3, bn=True)
    params = net.init(0, dtype=D)
    ep = GaussianClassTasks(dim=4).sample(3, 2, 3, gen=0).to(dtype=D)
    # zero steps: unchanged; adapt predicate freezes parameters; weights of 1 equal no weights
    assert inner_loop(net, params, ep.support_x, ep.support_y, 0, 0.1).params is params
    frozen = inner_loop(net, params, ep.support_x, ep.support_y, 2, 0.1, adapt=lambda k: k.startswith("head"))
    assert torch.equal(frozen.params["fc1.weight"], params["fc1.weight"])
    assert not torch.equal(frozen.params["head.weight"], params["head.weight"])
    a = inner_loop(net, params, ep.support_x, ep.support_y, 2, 0.1).params
    b = inner_loop(net, params, ep.support_x, ep.support_y, 2, 0.1, weights=torch.ones(6, dtype=D)).params
    assert all(torch.allclose(a[k], b[k]) for k in a)
    # doubling every weight equals doubling the learning rate
    c = inner_loop(net, params, ep.support_x, ep.support_y, 1, 0.1, weights=2 * torch.ones(6, dtype=D)).params
    d = inner_loop(net, params, ep.support_x, ep.support_y, 1, 0.2).params
    assert all(torch.allclose(c[k], d[k]) for k in c)
    # per-layer lr: a zero rate for layer1 leaves it unchanged
    e = inner_loop(net, params, ep.support_x, ep.support_y, 1, {"layer1": 0.0, "head": 0.1}).params
    assert torch.equal(e["fc1.weight"], params["fc1.weight"])
    with pytest.raises(KeyError, match="no inner learning rate"):
        inner_loop(net, params, ep.support_x, ep.support_y, 1, {"head": 0.1})
    with pytest.raises(ValueError, match="weights must have shape"):
        inner_loop(net, params, ep.support_x, ep.support_y, 1, 0.1, weights=torch.ones(3))
    with pytest.raises(ValueError, match="disagree"):
        inner_loop(net, params, ep.support_x, ep.support_y[:2], 1, 0.1)


def test_non_finite_inner_loss_names_the_setting():
    net = MLP(1, (8,), ways=1)
    learner = MAML(net, inner_lr=1e30, inner_steps=3, loss="mse")
    meta = learner.init(0)
    batch = SinusoidTasks().batch(2, 5, 5)
    with pytest.raises(FloatingPointError, match="inner learning rate"):
        learner.meta_gradient(meta, batch)


def test_stack_rejects_mixed_shapes():
    a = GaussianClassTasks().sample(3, 2, 3, gen=0)
    b = GaussianClassTasks().sample(3, [1, 1, 2], 3, gen=0)
    with pytest.raises(ValueError, match="cannot be stacked"):
        stack_episodes([a, b])
