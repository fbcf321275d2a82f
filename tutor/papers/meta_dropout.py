"""Meta-Dropout: learning to perturb latent features for generalisation.

Hae Beom Lee, Taewook Nam, Eunho Yang, Sung Ju Hwang. *Meta Dropout: Learning to Perturb Latent
Features for Generalization.* ICLR 2020 (arXiv:1905.12914). Official code: haebeom-lee/metadrop
(TensorFlow 1.12); this module is a PyTorch port built on the shared core (:mod:`tutor.meta`).

Equations (numbering follows our notes, ``shared/papers/meta_dropout.md`` §3):

* **Noise generator** (§3.1). For every hidden layer ``l`` a parallel layer with parameters phi
  reads the same input ``h^{l-1}`` and outputs a mean ``mu^l``::

      u^l  = W^l * h^{l-1} + b^l               (main layer, theta)
      mu^l = W_phi^l * h^{l-1} + b_phi^l        (generator, phi)                -> noise_mean
      z^l  = softplus(mu^l + kappa * eps),  eps ~ N(0, I)                        -> multiplier
      h^l  = pool(ReLU(BN(u^l (.) z^l)))        (noise BEFORE batch norm)        -> NoiseHook
      logits = o + s (.) eps',  s = softplus(w_phi^T h^L + b_phi)   (Eq. 3)     -> logit_noise

* **Where noise applies** (§3.1): support examples in the inner loop only.  Query examples use the
  deterministic gate ``softplus(mu)`` and no logit noise.  phi is never adapted in the inner loop.
* **Inner loop with MC** (§3.2): ``theta_k = theta_{k-1} - alpha grad (1/S) sum_s L(theta_{k-1}, z^(s))``,
  S = 1 during meta-training, S > 1 (paper: 30) at meta-test.       -> inner_loop(mc_samples=S)
* **Meta-objective** (§3.2): ``min_{theta, phi} E_tau L_query(theta_K(theta, phi))`` with a clean
  (gated) query forward, second order.                                   -> MetaDropout.task_loss
* **Lower-bound reading** (§3.4): ``log E_z p(y|x,z) >= E_z log p(y|x,z)`` (Jensen): the inner loop
  ascends this bound with the noise distribution as a meta-learned prior.       -> jensen_gap

Variants (one model, switched by ``MetaDropoutConfig.noise``):

* ``"off"``               -- no multiplication, no logit noise: exactly MAML;
* ``"fixed"``             -- ``z = softplus(N(0, 1))``, nothing learned; its logit noise has the
  constant scale ``s = log 2 = softplus(0)`` (what the learned variants start from; our choice --
  the paper does not define logit noise for this ablation; ``logit_noise=False`` removes it);
* ``"input_independent"`` -- ``mu`` a learned per-feature bias (no dependence on x);
* ``"input_dependent"``   -- Meta-Dropout (the generator above);
* ``"gated_independent"`` -- a control (ours, not the paper's): Meta-Dropout's input-dependent gate
  ``softplus(mu(x))`` times an input-*independent* learned noise ``softplus(nu + kappa * eps)``
  (``nu`` a learned per-feature bias), with input-independent logit noise.  It keeps the gate on
  support and query and removes only the input dependence of the noise.
``noise_scale = 0`` gives the "gate only" model (``softplus(mu)`` on support and query).

Deliberate simplifications (also stated in notebook 02):

1. The live experiment uses the MLP learner on 14x14 glyphs (our notes §7.2) instead of Conv4 on
   Omniglot; Conv4 is supported (``Conv4`` learner, conv generator layers) for the full run.
2. 10-way 1-shot glyph tasks and minutes of CPU training instead of 20-way Omniglot and 60k steps.
3. Classes are sampled per task (the official code reuses one class set across a meta-batch).
4. Batch norm uses the current batch's statistics for queries too (transductive, as the official
   code and Finn's MAML); each MC sample is its own forward pass with its own statistics.
5. The BN layers have a learnable scale as well as the offset (the official code: offset only).
6. The BN scale and offset are adapted in the inner loop (``MetaDropoutConfig.adapt_bn=True``, our
   default, as in :class:`tutor.meta.MAML`); the official code meta-learns them without adapting
   them (``adapt_bn=False``).  Every shipped result used the default.
7. No meta-gradient clipping in our runs (the official code clips at +-3: pass ``clip=3.0`` to
   :func:`tutor.train.meta_train` to follow it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tutor.data.episodes import Episode
from tutor.meta import MAML, _query_metrics, detach_params, task_loss_fn
from tutor.nets import MLP, Conv4

__all__ = ["MetaDropoutConfig", "init_generator", "noise_mean", "multiplier", "NoiseHook",
           "MetaDropout", "jensen_gap", "logit_noise", "NOISE_VARIANTS"]

NOISE_VARIANTS = ("off", "fixed", "input_independent", "input_dependent", "gated_independent")


@dataclass
class MetaDropoutConfig:
    """Hyper-parameters of Meta-Dropout (defaults: the fast MLP learner of notebook 02)."""

    noise: str = "input_dependent"
    """One of ``NOISE_VARIANTS``; ``"off"`` is MAML."""
    noise_scale: float = 1.0
    """kappa: scale of the N(0, 1) term inside the softplus; 0 gives the deterministic gate only."""
    logit_noise: bool = True
    """Additive, input-dependent noise on the support logits (the paper's)."""
    inner_lr: float = 0.3
    """alpha, fixed (not learned)."""
    inner_steps: int = 5
    """K inner steps in meta-training (second order)."""
    eval_steps: int = 5
    """Inner steps at meta-test (first order there: no meta-gradient is needed)."""
    mc_train: int = 1
    """S, noise samples averaged in the inner loss during meta-training."""
    mc_test: int = 10
    """S at meta-test (the paper uses 30)."""
    generator_std: float = 0.02
    """Std of the generator's initial weights (official: N(0, 0.02)); biases start at 0."""
    adapt_bn: bool = True
    """Adapt the BN scale/offset in the inner loop (ours); ``False`` as in the official code."""

    def __post_init__(self):
        if self.noise not in NOISE_VARIANTS:
            raise ValueError(f"noise must be one of {NOISE_VARIANTS}, got {self.noise!r}")
        if self.noise_scale < 0 or not math.isfinite(self.noise_scale):
            raise ValueError(f"noise_scale must be a finite number >= 0, got {self.noise_scale}")
        if self.mc_train < 1 or self.mc_test < 1:
            raise ValueError("mc_train and mc_test must be >= 1")


def _layer_shapes(model) -> list[tuple[str, tuple, tuple]]:
    """(layer name, main weight shape, pre-activation feature shape) of each hidden layer."""
    out = []
    if isinstance(model, Conv4):
        c_in, side = model.in_channels, model.image_size
        for i in range(1, model.blocks + 1):
            out.append((f"layer{i}", (model.hidden, c_in, 3, 3), (model.hidden, side, side)))
            c_in, side = model.hidden, side // 2
    elif isinstance(model, MLP):
        d_in = model.in_features
        for i, d in enumerate(model.hidden, start=1):
            out.append((f"layer{i}", (d, d_in), (d,)))
            d_in = d
    else:
        raise TypeError(f"Meta-Dropout supports tutor.nets.Conv4 and MLP, got {type(model).__name__}")
    return out


def init_generator(model, config: MetaDropoutConfig, gen: torch.Generator | int = 0, device=None,
                   dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The generator's parameters phi for ``config.noise`` (empty for ``"off"`` and ``"fixed"``).

    input_dependent: ``gen{l}.weight`` shaped like the main layer's weight (N(0, generator_std)),
    ``gen{l}.bias`` zeros, and ``gen_head.weight (1, embedding_dim)``, ``gen_head.bias (1,)`` for the
    logit noise; input_independent: ``gen{l}.mu`` shaped like the pre-activation features (zeros)
    and ``gen_head.bias``; gated_independent: the input-dependent gate's ``gen{l}.weight``,
    ``gen{l}.bias``, the noise's ``gen{l}.mu`` and ``gen_head.bias``.
    """
    if not isinstance(gen, torch.Generator):
        gen = torch.Generator().manual_seed(int(gen))
    phi = {}
    if config.noise in ("off", "fixed"):
        return phi
    for i, (_, w_shape, f_shape) in enumerate(_layer_shapes(model), start=1):
        if config.noise in ("input_dependent", "gated_independent"):
            w = torch.randn(w_shape, generator=gen, dtype=dtype) * config.generator_std
            phi[f"gen{i}.weight"] = w.to(device)
            phi[f"gen{i}.bias"] = torch.zeros(w_shape[0], dtype=dtype, device=device)
        if config.noise in ("input_independent", "gated_independent"):
            phi[f"gen{i}.mu"] = torch.zeros(f_shape, dtype=dtype, device=device)
    if config.logit_noise:
        if config.noise == "input_dependent":
            phi["gen_head.weight"] = (torch.randn((1, model.embedding_dim), generator=gen, dtype=dtype)
                                      * config.generator_std).to(device)
        phi["gen_head.bias"] = torch.zeros(1, dtype=dtype, device=device)
    return {k: v.requires_grad_() for k, v in phi.items()}


def noise_mean(phi: dict, layer: int, inputs: torch.Tensor, pre: torch.Tensor, variant: str) -> torch.Tensor:
    """mu^l: the generator's output for hidden layer ``layer`` (1-based), shaped like ``pre``."""
    if variant in ("input_dependent", "gated_independent"):   # gated_independent: mu of the gate
        w, b = phi[f"gen{layer}.weight"], phi[f"gen{layer}.bias"]
        return F.conv2d(inputs, w, b, padding=1) if w.dim() == 4 else F.linear(inputs, w, b)
    if variant == "input_independent":
        return phi[f"gen{layer}.mu"].expand_as(pre)
    return torch.zeros_like(pre)   # "fixed": mu = 0


def multiplier(mu: torch.Tensor, noise_scale: float, sample: bool,
               gen: torch.Generator | None = None) -> torch.Tensor:
    """z = softplus(mu + kappa * eps) when sampling, else the deterministic gate softplus(mu)."""
    if not sample or noise_scale == 0:
        return F.softplus(mu)
    eps = torch.randn(mu.shape, generator=gen, dtype=mu.dtype, device=mu.device)
    return F.softplus(mu + noise_scale * eps)


def logit_noise(phi: dict, config: MetaDropoutConfig, embedding: torch.Tensor, logits: torch.Tensor,
                gen: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 3: additive noise on the support logits, ``o + kappa * s (.) eps'`` with ``eps' ~ N(0, I)``.

    ``embedding (n, D)``, ``logits (n, ways)``.  The scale ``s (n, 1)`` is one number per example,
    tiled over the classes: ``softplus(w_phi^T h + b_phi)`` (input-dependent), ``softplus(b_phi)``
    (input-independent) or the constant ``log 2`` (the "fixed" ablation, see the module docstring).
    """
    if config.noise == "input_dependent":
        s = F.softplus(F.linear(embedding, phi["gen_head.weight"], phi["gen_head.bias"]))   # (n, 1)
    elif config.noise in ("input_independent", "gated_independent"):
        s = F.softplus(phi["gen_head.bias"]).expand(logits.shape[0], 1)
    else:
        s = torch.full((logits.shape[0], 1), math.log(2.0), dtype=logits.dtype, device=logits.device)
    eps = torch.randn(logits.shape, generator=gen, dtype=logits.dtype, device=logits.device)
    return logits + config.noise_scale * s * eps


class NoiseHook:
    """The network hook that applies Meta-Dropout to every hidden layer and the head.

    ``sample=True`` (support examples): multiplicative noise on pre-BN features and additive noise
    on the logits.  ``sample=False`` (queries): the deterministic gate ``softplus(mu)`` only.
    ``record`` collects ``{layer: (mu, z, pre)}`` (detached) for plots.
    """

    def __init__(self, phi: dict, config: MetaDropoutConfig, sample: bool,
                 gen: torch.Generator | None = None, record: dict | None = None):
        self.phi, self.config, self.sample, self.gen, self.record = phi, config, sample, gen, record

    def __call__(self, layer: str, inputs: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.noise == "off":
            return pre
        if layer == "head":
            if not (self.sample and cfg.logit_noise) or cfg.noise_scale == 0:
                return pre
            return logit_noise(self.phi, cfg, inputs, pre, self.gen)
        index = int(layer.removeprefix("layer"))
        mu = noise_mean(self.phi, index, inputs, pre, cfg.noise)
        if cfg.noise == "gated_independent":   # gate(x) times input-independent noise
            nu = noise_mean(self.phi, index, inputs, pre, "input_independent")
            z = F.softplus(mu) * multiplier(nu, cfg.noise_scale, self.sample, self.gen)
        else:
            z = multiplier(mu, cfg.noise_scale, self.sample, self.gen)
        if self.record is not None:
            self.record[layer] = (mu.detach(), z.detach(), pre.detach())
        return pre * z


class MetaDropout(MAML):
    """MAML whose inner loop sees support features perturbed by a meta-learned noise generator.

    Meta-parameters: ``{"net": theta, "phi": generator, "fixed_lr": alpha}``.  With
    ``config.noise == "off"`` every method reduces exactly to :class:`tutor.meta.MAML`.
    """

    def __init__(self, model, config: MetaDropoutConfig | None = None):
        self.config = config or MetaDropoutConfig()
        _layer_shapes(model)   # raises for unsupported networks
        super().__init__(model, inner_lr=self.config.inner_lr, inner_steps=self.config.inner_steps,
                         eval_steps=self.config.eval_steps, adapt_bn=self.config.adapt_bn)

    def init(self, gen=0, device=None, dtype=torch.float32) -> dict:
        if not isinstance(gen, torch.Generator):
            gen = torch.Generator().manual_seed(int(gen))
        meta = super().init(gen, device, dtype)
        meta["phi"] = init_generator(self.model, self.config, gen, device, dtype)
        return meta

    def noise_generator(self, episode: Episode, device) -> torch.Generator | None:
        """A generator seeded by the episode (reproducible noise in any batching mode)."""
        if episode.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(int(episode.seed))

    def adapt(self, meta: dict, episode: Episode, steps: int | None = None, first_order: bool | None = None,
              mc_samples: int | None = None, gen: torch.Generator | None = None, **kwargs):
        """Inner loop on the support set with noise on (S = ``mc_samples`` draws per step)."""
        hook = NoiseHook(meta.get("phi", {}), self.config, sample=True, gen=gen)
        return super().adapt(meta, episode, steps, first_order, hook=hook,
                             mc_samples=mc_samples or self.config.mc_train, **kwargs)

    def query_logits(self, meta: dict, adapted: dict, x: torch.Tensor) -> torch.Tensor:
        """Query forward: deterministic gate softplus(mu), no logit noise."""
        return self.model(adapted, x, NoiseHook(meta.get("phi", {}), self.config, sample=False))

    def task_loss(self, meta, episode):
        gen = self.noise_generator(episode, episode.support_x.device)
        adapted = self.adapt(meta, episode, gen=gen).params
        return _query_metrics(self.query_logits(meta, adapted, episode.query_x), episode.query_y,
                              task_loss_fn("ce"), "ce")

    def evaluate(self, meta, episode, mc_samples: int | None = None) -> dict:
        """Meta-test: adapt with S = ``mc_test`` noise draws per inner step, score clean queries."""
        frozen = {k: (detach_params(v) if isinstance(v, dict) else v) for k, v in meta.items()}
        gen = self.noise_generator(episode, episode.support_x.device)
        # MAML ("off") is deterministic: one sample is exact
        samples = 1 if self.config.noise == "off" else (mc_samples or self.config.mc_test)
        adapted = self.adapt(frozen, episode, steps=self.eval_steps, first_order=True,
                             mc_samples=samples, gen=gen).params
        with torch.no_grad():
            _, m = _query_metrics(self.query_logits(frozen, adapted, episode.query_x), episode.query_y,
                                  task_loss_fn("ce"), "ce")
        return {k: float(v) for k, v in m.items()}


def jensen_gap(model, params: dict, phi: dict, config: MetaDropoutConfig, x: torch.Tensor,
               y: torch.Tensor, samples: int = 256,
               gen: torch.Generator | None = None) -> tuple[float, float]:
    """MC estimates of ``log E_z p(y|x,z)`` and ``E_z log p(y|x,z)`` (averaged over examples).

    The first is never below the second (Jensen, §3.4); they are equal without noise.
    """
    logps = []
    with torch.no_grad():
        for _ in range(samples):
            logits = model(params, x, NoiseHook(phi, config, sample=True, gen=gen))
            logps.append(torch.log_softmax(logits, -1).gather(1, y[:, None]).squeeze(1))
    lp = torch.stack(logps)                                   # (samples, n)
    log_mean_p = (torch.logsumexp(lp, 0) - math.log(samples)).mean().item()
    return log_mean_p, lp.mean().item()
