"""The core on an accelerator: the same numbers as on the CPU (float64), in every batching mode.

``python3 run.py test --device cuda`` (it sets ``TUTOR_TEST_DEVICE=cuda``) runs these on the GPU;
without a GPU they are skipped with a message saying so.  By default they run on the CPU, where
they check that code given explicit devices and dtypes stays device-agnostic.
"""

import os

import pytest
import torch

from tutor.data import EpisodeSampler, GaussianClassTasks
from tutor.meta import MAML, ProtoNet, Reptile, leaves
from tutor.nets import MLP, Conv4
from tutor.train import evaluate, meta_train

NAME = os.environ.get("TUTOR_TEST_DEVICE", "cpu")
D = torch.float64


def _device() -> torch.device:
    dev = torch.device(NAME)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"TUTOR_TEST_DEVICE={NAME} but no CUDA GPU is present (torch.cuda.is_available() is False); "
                    "these device tests need one")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        pytest.skip(f"TUTOR_TEST_DEVICE={NAME} but MPS is not available")
    return dev


def _episodes(n=4):
    images = torch.rand(8, 6, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    return EpisodeSampler(images, range(8), 3, 1, 2).batch(n, 1)


@pytest.mark.parametrize("mode", ["loop", "threads", "vmap"])
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_meta_gradient_on_the_device_equals_the_cpu(mode, first_order):
    dev = _device()
    learner = MAML(Conv4(image_size=12, hidden=4, ways=3, blocks=2), inner_lr=0.3, inner_steps=2,
                   first_order=first_order)
    cpu_meta, dev_meta = learner.init(0, dtype=D), learner.init(0, device=dev, dtype=D)
    eps = _episodes()
    g_cpu, m_cpu = learner.meta_gradient(cpu_meta, eps.to(dtype=D), "loop")
    g_dev, m_dev = learner.meta_gradient(dev_meta, eps.to(dev, D), mode)
    assert all(g.device.type == dev.type for g in g_dev)
    assert all(torch.allclose(a, b.cpu(), rtol=1e-9, atol=1e-11) for a, b in zip(g_cpu, g_dev))
    assert abs(m_cpu["loss"] - m_dev["loss"]) < 1e-9


def test_protonet_reptile_and_training_loop_on_the_device():
    dev = _device()
    eps = _episodes()
    proto = ProtoNet(Conv4(image_size=12, hidden=4, ways=0, blocks=2))
    a = proto.evaluate(proto.init(0, dtype=D), eps[0].to(dtype=D))
    b = proto.evaluate(proto.init(0, device=dev, dtype=D), eps[0].to(dev, D))
    assert abs(a["loss"] - b["loss"]) < 1e-9
    rep = Reptile(MLP(144, (8,), 3), inner_lr=0.1, inner_steps=3)
    g_cpu, _ = rep.meta_gradient(rep.init(0, dtype=D), eps.to(dtype=D))
    g_dev, _ = rep.meta_gradient(rep.init(0, device=dev, dtype=D), eps.to(dev, D))
    assert all(torch.allclose(x, y.cpu(), rtol=1e-9, atol=1e-12) for x, y in zip(g_cpu, g_dev))
    # meta_train moves every meta-batch to the parameters' device; evaluate moves episodes too
    tasks = GaussianClassTasks(dim=6)

    class Sampler:
        def batch(self, n, gen):
            return [tasks.sample(3, 2, 3, gen=int(torch.randint(0, 10**6, (), generator=gen))) for _ in range(n)]

    learner = MAML(MLP(6, (16,), 3), inner_lr=0.3, inner_steps=1)
    meta = learner.init(0, device=dev)
    hist = meta_train(learner, meta, Sampler(), steps=3, progress=False)
    assert len(hist.loss) == 3 and all(p.device.type == dev.type for p in leaves(meta))
    result = evaluate(learner, meta, [tasks.sample(3, 2, 3, gen=s) for s in range(3)])
    assert 0 <= result.mean <= 1


def test_paper_modules_on_the_device():
    dev = _device()
    from tutor.papers.cts import run_cts
    from tutor.papers.meta_dropout import MetaDropout, MetaDropoutConfig

    md = MetaDropout(MLP(144, (8, 8), 3, bn=True), MetaDropoutConfig(inner_steps=1))
    eps = _episodes(2)
    g_cpu, _ = md.meta_gradient(md.init(0, dtype=D), eps.to(dtype=D))
    g_dev, _ = md.meta_gradient(md.init(0, device=dev, dtype=D), eps.to(dev, D))
    assert all(g.device.type == dev.type for g in g_dev)
    assert all(torch.isfinite(g).all() for g in g_dev)
    # the noise is drawn on the device, so CPU and GPU streams differ: compare magnitudes, not values
    assert len(g_cpu) == len(g_dev)
    quad = lambda x: 0.5 * (x - torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=D, device=x.device)).pow(2).sum(-1)  # noqa: E731
    phi0 = torch.zeros(3, 2, dtype=D)
    a = run_cts(quad, phi0, 2, 5, 0.1, 0.2, 20).final
    b = run_cts(quad, phi0.to(dev), 2, 5, 0.1, 0.2, 20).final
    assert torch.allclose(a, b.cpu())


def test_a_device_mismatch_is_named():
    dev = _device()
    if dev.type == "cpu":
        pytest.skip("needs an accelerator to put the episode and the parameters on different devices")
    learner = MAML(MLP(144, (8,), 3))
    with pytest.raises(ValueError, match="move the episode"):
        learner.evaluate(learner.init(0, device=dev), _episodes(1)[0])
