"""Small networks written as pure functions of an explicit parameter dict.

A network object holds only its *architecture*; parameters live in a plain ``dict[str, Tensor]``
that the meta-learning code copies, adapts and differentiates freely::

    net = Conv4(ways=5)
    params = net.init(gen)                 # {"conv1.weight": ..., "bn1.bias": ..., "head.weight": ...}
    logits = net(params, x)                # (batch, ways)
    feats = net.features(params, x)        # {"layer1": ..., ..., "embedding": ..., "logits": ...}

**Hooks.**  Several papers act on a layer's *pre-activation* features: Meta-Dropout multiplies them by
noise before batch norm; Bayesian TAML and others modulate channels.  Every call accepts
``hook(layer, inputs, pre) -> pre``, called for each hidden layer with the layer's name
(``"layer1"``...), its input and its pre-activation output *before batch norm*, and once for the
head (``"head"``) with the embedding and the logits.  The hook returns the (possibly transformed)
tensor; the network is never copied or patched.

**Batch norm** always uses the current batch's statistics (as MAML does: per task, no running
averages) and has a learnable scale and offset.  Outside ``vmap`` it calls the fused kernel
(``F.batch_norm``), whose double backward is fast; under ``torch.func.vmap`` the fused kernel gives
wrong second-order gradients in torch 2.13 (we measured 0.4-3.6% error in float64 against the per-task
loop; first order is fine), so there the same formula is written with plain tensor operations, which
are exact.  Tests compare both paths in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["Conv4", "MLP", "batch_norm", "in_vmap", "layer_of", "Hook"]

Hook = Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: ``"conv1.weight" -> "layer1"``, ``"head.bias" -> "head"``."""
    prefix = name.split(".")[0]
    for kind in ("conv", "bn", "fc"):
        if prefix.startswith(kind) and prefix[len(kind):].isdigit():
            return "layer" + prefix[len(kind):]
    return prefix


def in_vmap() -> bool:
    """True while code runs inside ``torch.func.vmap`` (at any nesting level)."""
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return any(i.key() == TransformType.Vmap for i in retrieve_all_functorch_interpreters())


def batch_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
               eps: float = 1e-5, fused: bool | None = None) -> torch.Tensor:
    """Batch norm over every dim but the channel dim 1, with the current batch's statistics.

    ``fused=None`` picks the fused kernel outside ``vmap`` and plain tensor ops inside it.
    """
    if fused is None:
        fused = not in_vmap()
    if fused:
        return F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    return _plain_batch_norm(x, weight, bias, eps)


def _plain_batch_norm(x, weight, bias, eps):
    dims = [d for d in range(x.dim()) if d != 1]
    mean = x.mean(dims, keepdim=True)
    var = (x - mean).pow(2).mean(dims, keepdim=True)
    shape = [1, -1] + [1] * (x.dim() - 2)
    out = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    return out


def _he(shape, fan_in, gen, device, dtype):
    return torch.randn(shape, generator=gen, dtype=dtype).to(device) * math.sqrt(2.0 / fan_in)


def _check_input(x: torch.Tensor, expected_tail: tuple, name: str) -> None:
    if x.dim() != len(expected_tail) + 1 or tuple(x.shape[1:]) != expected_tail:
        raise ValueError(f"{name} expects input of shape (batch, {', '.join(map(str, expected_tail))}), "
                         f"got {tuple(x.shape)}")


class _Net:
    """Shared plumbing: parameter init dtype/device, hooks, the head."""

    def init(self, gen: torch.Generator | int = 0, device=None,
             dtype=torch.float32) -> dict[str, torch.Tensor]:
        """Fresh parameters (leaf tensors with ``requires_grad=True``), drawn with ``gen``."""
        if not isinstance(gen, torch.Generator):
            gen = torch.Generator().manual_seed(int(gen))
        params = self._init(gen, device, dtype)
        return {k: v.requires_grad_() for k, v in params.items()}

    def check_params(self, params: dict) -> None:
        """Parameters must be this architecture's: the same names and shapes as :meth:`init` makes
        (the head's number of outputs may differ: learners such as Bayesian TAML build a head per task;
        labels are then checked against the head actually used)."""
        shapes = getattr(self, "_shapes", None)
        if shapes is None:
            shapes = {k: tuple(v.shape) for k, v in self._init(torch.Generator().manual_seed(0), None,
                                                               torch.float32).items()}
            self._shapes = shapes
        missing = [k for k in shapes if k not in params]
        if missing:
            raise ValueError(f"parameters for {type(self).__name__} are missing {missing[:4]}: were they made by "
                             "another network?")
        def fits(k, shape):   # a head may be rebuilt per task with another number of ways (e.g. a zero head)
            got = tuple(params[k].shape)
            return got == shape or (k.startswith("head.") and got[1:] == shape[1:] and len(got) == len(shape))

        wrong = [(k, tuple(params[k].shape), shape) for k, shape in shapes.items() if not fits(k, shape)]
        if wrong:
            k, got, want = wrong[0]
            raise ValueError(f"parameter {k!r} has shape {got} but this {type(self).__name__} expects {want}: the "
                             "parameters (or checkpoint) come from a network of another width or ways")

    def _head_init(self, params, fan_in, gen, device, dtype):
        shape = (self.ways, fan_in)
        if self.head_init == "zero":
            params["head.weight"] = torch.zeros(shape, dtype=dtype, device=device)
        else:  # Glorot uniform
            bound = math.sqrt(6.0 / (fan_in + self.ways))
            params["head.weight"] = ((torch.rand(shape, generator=gen, dtype=dtype) * 2 - 1)
                                     * bound).to(device)
        params["head.bias"] = torch.zeros(self.ways, dtype=dtype, device=device)

    def __call__(self, params: dict, x: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        """Logits ``(batch, ways)``."""
        return self.features(params, x, hook)["logits"]

    def embed(self, params: dict, x: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        """The embedding fed to the head, ``(batch, embedding_dim)``."""
        return self.features(params, x, hook, head=False)["embedding"]

    def _head(self, params, h, hook, out):
        out["embedding"] = h
        logits = F.linear(h, params["head.weight"], params["head.bias"])
        out["logits"] = hook("head", h, logits) if hook is not None else logits
        return out


class Conv4(_Net):
    """The 4-block convolutional learner of MAML/ProtoNet papers.

    Block ``l``: conv3x3(``hidden``) -> [hook] -> batch norm -> ReLU -> 2x2 max-pool.  A 28x28 input
    ends at 1x1 spatial size, so the embedding has ``hidden`` features (5x5x``hidden`` for 84x84).

    Args:
        in_channels, image_size: input shape ``(in_channels, image_size, image_size)``.
        hidden: channels per block (64 in the papers; 32 or 16 for fast CPU runs).
        ways: output classes of the head (0 for an embedding network without a head, ProtoNet).
        blocks: number of conv blocks.
        head_init: ``"glorot"`` (random, MAML) or ``"zero"`` (a zero head, e.g. Bayesian TAML).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: int = 64, ways: int = 5,
                 blocks: int = 4, head_init: str = "glorot"):
        if head_init not in ("glorot", "zero"):
            raise ValueError(f"head_init must be 'glorot' or 'zero', got {head_init!r}")
        side = image_size
        for _ in range(blocks):
            side //= 2
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for {blocks} pooling blocks")
        self.in_channels, self.image_size, self.hidden = in_channels, image_size, hidden
        self.ways, self.blocks, self.head_init = ways, blocks, head_init
        self.embedding_dim = hidden * side * side

    def _init(self, gen, device, dtype):
        params, c_in = {}, self.in_channels
        for i in range(1, self.blocks + 1):
            params[f"conv{i}.weight"] = _he((self.hidden, c_in, 3, 3), c_in * 9, gen, device, dtype)
            params[f"conv{i}.bias"] = torch.zeros(self.hidden, dtype=dtype, device=device)
            params[f"bn{i}.weight"] = torch.ones(self.hidden, dtype=dtype, device=device)
            params[f"bn{i}.bias"] = torch.zeros(self.hidden, dtype=dtype, device=device)
            c_in = self.hidden
        if self.ways:
            self._head_init(params, self.embedding_dim, gen, device, dtype)
        return params

    def features(self, params: dict, x: torch.Tensor, hook: Hook | None = None,
                 head: bool = True) -> dict[str, torch.Tensor]:
        """Every block's output ``layer1..`` ``(batch, hidden, H_l, W_l)``, ``embedding``, ``logits``."""
        _check_input(x, (self.in_channels, self.image_size, self.image_size), "Conv4")
        self.check_params(params)
        out, h = {}, x
        for i in range(1, self.blocks + 1):
            pre = F.conv2d(h, params[f"conv{i}.weight"], params[f"conv{i}.bias"], padding=1)
            if hook is not None:
                pre = hook(f"layer{i}", h, pre)
            h = F.max_pool2d(F.relu(batch_norm(pre, params[f"bn{i}.weight"], params[f"bn{i}.bias"])), 2)
            out[f"layer{i}"] = h
        h = h.flatten(1)
        if not (head and self.ways):
            out["embedding"] = h
            return out
        return self._head(params, h, hook, out)


class MLP(_Net):
    """A multilayer perceptron: per hidden layer linear -> [hook] -> [batch norm] -> ReLU.

    Inputs of any shape ``(batch, *X)`` are flattened; ``in_features`` must equal ``prod(X)``.

    Args:
        in_features: flattened input size.
        hidden: sizes of the hidden layers.
        ways: outputs (classes, or 1 for scalar regression).
        bn: batch norm after each hidden pre-activation (current batch's statistics).
        head_init: ``"glorot"`` or ``"zero"``.
    """

    def __init__(self, in_features: int, hidden=(40, 40), ways: int = 1, bn: bool = False,
                 head_init: str = "glorot"):
        if head_init not in ("glorot", "zero"):
            raise ValueError(f"head_init must be 'glorot' or 'zero', got {head_init!r}")
        self.in_features, self.hidden, self.ways = in_features, tuple(hidden), ways
        self.bn, self.head_init = bn, head_init
        self.embedding_dim = self.hidden[-1] if self.hidden else in_features

    def _init(self, gen, device, dtype):
        params, d_in = {}, self.in_features
        for i, d in enumerate(self.hidden, start=1):
            params[f"fc{i}.weight"] = _he((d, d_in), d_in, gen, device, dtype)
            params[f"fc{i}.bias"] = torch.zeros(d, dtype=dtype, device=device)
            if self.bn:
                params[f"bn{i}.weight"] = torch.ones(d, dtype=dtype, device=device)
                params[f"bn{i}.bias"] = torch.zeros(d, dtype=dtype, device=device)
            d_in = d
        if self.ways:
            self._head_init(params, d_in, gen, device, dtype)
        return params

    def features(self, params: dict, x: torch.Tensor, hook: Hook | None = None,
                 head: bool = True) -> dict[str, torch.Tensor]:
        """Every hidden layer's output ``layer1..`` ``(batch, d_l)``, ``embedding``, ``logits``."""
        h = x.flatten(1)
        if h.shape[1] != self.in_features:
            raise ValueError(f"MLP expects {self.in_features} input features, got input of shape "
                             f"{tuple(x.shape)} ({h.shape[1]} features)")
        self.check_params(params)
        out = {}
        for i in range(1, len(self.hidden) + 1):
            pre = F.linear(h, params[f"fc{i}.weight"], params[f"fc{i}.bias"])
            if hook is not None:
                pre = hook(f"layer{i}", h, pre)
            if self.bn:
                pre = batch_norm(pre, params[f"bn{i}.weight"], params[f"bn{i}.bias"])
            h = F.relu(pre)
            out[f"layer{i}"] = h
        if not (head and self.ways):
            out["embedding"] = h
            return out
        return self._head(params, h, hook, out)
