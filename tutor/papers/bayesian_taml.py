"""Bayesian TAML: learning to balance meta-learning for imbalanced and out-of-distribution tasks.

Hae Beom Lee*, Hayeon Lee*, Donghyun Na*, Saehoon Kim, Minseop Park, Eunho Yang, Sung Ju Hwang.
*Learning to Balance: Bayesian Meta-Learning for Imbalanced and Out-of-distribution Tasks.*
ICLR 2020 (arXiv:1905.12917).  Official code: haebeom-lee/l2b (TensorFlow 1.12; it does not run on a
current stack).  This module is a PyTorch port built on the shared core: the balanced inner loop *is*
:func:`tutor.meta.inner_loop` with per-example ``weights`` and a per-parameter ``lr`` dict.
Notation and equation numbers follow our notes ``shared/papers/bayesian_taml.md`` §3.

* **Balancing variables** (§3.1), from latents ``phi = (omega~, gamma~, z~)``::

      omega = softmax(omega~)   (C,)          class weights                     -> balancing_variables
      gamma_l = exp(gamma~_l)   one per layer  step multipliers
      W_l0[k] = W_l[k] (1 + z~w_lk),  b_l0[k] = b_l[k] + z~b_lk   per unit/channel -> modulate
* **Balanced inner loop** (§3.1)::

      L_omega(theta) = sum_c omega_c (C / N) sum_{i: y_i = c} l(theta; x_i, y_i)  -> class_weighted_loss
      theta_k = theta_{k-1} - gamma_l * alpha (.) grad L_omega(theta_{k-1})       -> balanced_inner_loop
  i.e. ``inner_loop(weights = C * omega[y], lr = {name: gamma_layer * alpha_name})``.
* **Inference network** (§3.3): instance encoder, StatPool = [mean, variance, normalised
  cardinality (N_c - 1)/(K_max - 1)], a shared dense(3 -> 4)+ReLU "interact" layer at class and task
  level, a class-set encoder, and (mu, raw sigma) heads; sigma = softplus(raw sigma).
                                                      -> stat_pool, cardinality, encode_task
* **Variational objective** (§3.2): one reparameterised sample ``phi = mu + sigma * eps`` per task
  (``rsample``; the posterior sees the support set only)::

      J = mean_m CE(f_{theta_K(phi)}(x~_m), y~_m) + beta_KL * KL(q || N(0, I)) / (N + M)  -> TAML.task_loss
      KL = sum_j [ -log sigma_j + (sigma_j^2 + mu_j^2)/2 - 1/2 ]                         -> kl_to_standard_normal
  beta_KL = 1 in the paper (the library default).
* **Prediction** (§3.2): ``p(y | x, D) ~ (1/S) sum_s softmax(f_{theta_K(phi_s)}(x))``, each sample a
  whole inner loop; or the posterior-mean ("naive") plug-in.                       -> TAML.predict

Switches (``TamlConfig``): ``omega`` ("off", "learned", or the fixed baselines "inverse",
omega_c ~ 1/N_c summing to 1, and "inverse_scaled", the same shape at the uniform weighting's total
scale), ``gamma``, ``z``, ``bayesian`` (False: posterior means, no sampling, no KL) and
``alpha`` ("scalar" fixed: MAML; "per_parameter" learned: Meta-SGD).  All off is exactly MAML or
Meta-SGD (tested).  The switches are stored with a checkpoint (:func:`save_taml`); loading into a
learner with other switches raises (the official code silently evaluated such models as MAML).

Official-code details kept: the classifier head is zero-initialised and *not* meta-learned (built
per task with ``C`` outputs, so any number of ways works; Meta-SGD's head alpha is one learned row
tiled over the classes); z modulates hidden layers only; gamma is shared by a layer's weight and
bias; 5 second-order inner steps in meta-training, 10 at meta-test; Adam with gradients clipped to
+-3; batch-norm parameters (Conv4) are meta-learned but never adapted; transductive batch norm.

Deliberate simplifications and deviations (stated in notebook 03):

1. Vector tasks with an MLP learner (16-32-32-C) and a shrunk encoder (notes §7.1) instead of
   CIFAR-FS / miniImageNet with Conv4; Conv4 and a conv instance encoder are supported.
2. Tasks are looped with their true sizes (the official code zero-pads the support sets of a
   meta-batch and divides by the padded N, also in the KL).
3. mu heads are zero-initialised and the raw-sigma bias starts at -3 (sigma ~ 0.05), so Deterministic
   TAML starts exactly at Meta-SGD and Bayesian TAML within that small noise of it (official: sigma ~
   softplus(0) = 0.69; ``sigma_init=0.0`` selects it).  Training moves the latents far from 0.
4. Conv4's batch norm keeps a learnable scale (official: offset only); so does the MLP's (``bn=True``,
   the experiment's learner).  Under batch norm the z shift and the size |1 + z~| of the z scale
   cancel in the forward pass at theta_0; the *sign* of 1 + z~ does not (a unit with 1 + z~ < 0 is
   negated before its ReLU), so z reaches the starting function through those signs as well as the
   inner-loop gradients (also true of the official model; notebook 03 measures it on its live model).
5. beta_KL is an explicit argument; the notebook's live run uses the value chosen on ID validation
   tasks (0.1 in the shipped run: a labelled deviation, notes §7).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from tutor.data.episodes import Episode
from tutor.meta import InnerResult, MetaLearner, inner_loop, leaves
from tutor.nets import MLP, Conv4, layer_of
from tutor.train import EvalResult, load_checkpoint, mean_ci, save_checkpoint
from tutor.validation import as_float, as_int, check_episode, check_inputs

__all__ = ["TamlConfig", "PRESETS", "preset", "TAML", "stat_pool", "cardinality", "interact",
           "init_encoder", "encode_task", "kl_to_standard_normal", "balancing_variables", "modulate",
           "step_sizes", "class_weighted_loss", "balanced_inner_loop", "zero_head", "task_metrics",
           "evaluate_metrics", "evaluate_steps", "save_taml", "load_taml", "SWITCHES"]

SWITCHES = ("omega", "gamma", "z", "bayesian", "alpha")
OMEGA_MODES = ("off", "learned", "inverse", "inverse_scaled")


@dataclass
class TamlConfig:
    """Switches and hyper-parameters of Bayesian TAML (defaults: the paper's model on the MLP learner)."""

    omega: str = "learned"
    """Class weights: "learned" (TAML), "off" (uniform: MAML/Meta-SGD), "inverse" (fixed omega_c ~ 1/N_c,
    summing to 1) or "inverse_scaled" (the same 1/N_c shape at the uniform weighting's total scale:
    omega_c = N / (C^2 N_c), i.e. the mean over classes of each class's mean loss)."""
    gamma: bool = True
    """Per-layer step multipliers gamma_l = exp(gamma~_l)."""
    z: bool = True
    """Modulation of the initialisation (1 + z~) W, b + z~ on hidden layers."""
    bayesian: bool = True
    """Sample the latents and add the KL; False = Deterministic TAML (posterior means, no KL)."""
    alpha: str = "per_parameter"
    """"per_parameter": learned Meta-SGD step tensors; "scalar": MAML's fixed scalar step."""
    inner_lr: float = 0.3
    """Initial value of alpha (elementwise for Meta-SGD, the fixed scalar for MAML)."""
    inner_steps: int = 5
    """Second-order inner steps in meta-training (official 5)."""
    eval_steps: int = 10
    """Inner steps at meta-test (official 10, first order: no meta-gradient is needed there)."""
    beta_kl: float = 1.0
    """Weight of KL/(N + M) in the objective (paper: 1)."""
    mc_test: int = 10
    """S, Monte Carlo samples (whole inner loops) at meta-test (official 10)."""
    k_max: int = 25
    """Largest shot count of the sampler; cardinality (N_c - 1)/(K_max - 1) is 1 there."""
    sigma_init: float = -3.0
    """Initial bias of every raw-sigma output (-3: sigma ~ 0.05; official 0: sigma ~ 0.69)."""
    instance_dims: tuple = (32, 32)
    """Instance encoder widths (MLP learner); the conv encoder uses conv(10)-conv(10)-dense(last)."""
    class_dims: tuple = (64, 16)
    """Class-set encoder NN2 widths (hidden, output)."""
    head_hidden: int = 32
    """Width of the dense+ReLU layer in front of each (mu, raw sigma) head."""
    interact_dim: int = 4
    """Output width of the "interact" layer that mixes [mean, var, N~] of each feature."""
    gamma_max: float | None = None
    """Optional clamp on exp(gamma~) (off, as in the paper)."""

    def __post_init__(self):
        if self.omega not in OMEGA_MODES:
            raise ValueError(f"omega must be one of {OMEGA_MODES}, got {self.omega!r}")
        if self.alpha not in ("scalar", "per_parameter"):
            raise ValueError(f"alpha must be 'scalar' (MAML) or 'per_parameter' (Meta-SGD), got {self.alpha!r}")
        self.beta_kl = as_float(self.beta_kl, "beta_kl", 0.0)
        for name, least in (("inner_steps", 0), ("eval_steps", 0), ("mc_test", 1), ("k_max", 2)):
            setattr(self, name, as_int(getattr(self, name), name, least))
        self.inner_lr = as_float(self.inner_lr, "inner_lr", 0.0, strict=True)
        if self.gamma_max is not None:
            self.gamma_max = as_float(self.gamma_max, "gamma_max (or None)", 0.0, strict=True)

    @property
    def latents(self) -> tuple[str, ...]:
        """The latent variables the encoder infers under these switches."""
        return tuple(n for n, on in (("omega", self.omega == "learned"), ("gamma", self.gamma), ("z", self.z)) if on)

    def switches(self) -> dict:
        return {k: getattr(self, k) for k in SWITCHES}


PRESETS = {
    "MAML": dict(omega="off", gamma=False, z=False, bayesian=False, alpha="scalar"),
    "Meta-SGD": dict(omega="off", gamma=False, z=False, bayesian=False),
    "Meta-SGD 1/N": dict(omega="inverse", gamma=False, z=False, bayesian=False),
    "Meta-SGD 1/N (uniform scale)": dict(omega="inverse_scaled", gamma=False, z=False, bayesian=False),
    "omega-TAML": dict(omega="learned", gamma=False, z=False, bayesian=False),
    "Deterministic TAML": dict(bayesian=False),
    "Bayesian TAML": dict(),
}


def preset(name: str, **overrides) -> TamlConfig:
    """The config of a named method (a key of ``PRESETS``) with optional overrides (e.g. beta_kl)."""
    if name not in PRESETS:
        raise ValueError(f"unknown method {name!r}; choose from {list(PRESETS)}")
    return TamlConfig(**{**PRESETS[name], **overrides})


# --------------------------------------------------------------------------------------------
# the learner's layers, the zero head and z
# --------------------------------------------------------------------------------------------
def _hidden_layers(model) -> list[tuple[str, str, int]]:
    """(layer, parameter prefix, units) of every hidden layer that z modulates."""
    if isinstance(model, Conv4):
        return [(f"layer{i}", f"conv{i}", model.hidden) for i in range(1, model.blocks + 1)]
    if isinstance(model, MLP):
        return [(f"layer{i}", f"fc{i}", d) for i, d in enumerate(model.hidden, start=1)]
    raise TypeError(f"Bayesian TAML supports tutor.nets.MLP and Conv4 learners, got {type(model).__name__}")


def layer_names(model) -> list[str]:
    """Layers that get one gamma each: the hidden layers and the head (MLP 16-32-32-C: 3)."""
    return [layer for layer, _, _ in _hidden_layers(model)] + ["head"]


def z_dim(model) -> int:
    """2 * (units of all hidden layers): one scale and one shift per unit or channel."""
    return 2 * sum(units for _, _, units in _hidden_layers(model))


def zero_head(model, ways: int, like: torch.Tensor) -> dict:
    """The classifier head of one task: zeros ``(ways, embedding_dim)`` and ``(ways,)`` (not meta-learned)."""
    return {"head.weight": like.new_zeros(ways, model.embedding_dim), "head.bias": like.new_zeros(ways)}


def modulate(model, theta: dict, z: torch.Tensor | None) -> dict:
    """theta_0 = theta * z: ``W[k] * (1 + z_scale[k])`` and ``b[k] + z_shift[k]`` per unit/channel k.

    ``z`` is ``(z_dim,)`` laid out layer by layer as [scales (units), shifts (units)]; ``None`` = 0.
    """
    if z is None:
        return dict(theta)
    if z.shape != (z_dim(model),):
        raise ValueError(f"z must have shape ({z_dim(model)},) for this learner, got {tuple(z.shape)}")
    out, i = dict(theta), 0
    for _, prefix, units in _hidden_layers(model):
        scale, shift = z[i:i + units], z[i + units:i + 2 * units]
        i += 2 * units
        w = theta[f"{prefix}.weight"]                                      # (units, ...) fan-in dims
        out[f"{prefix}.weight"] = w * (1 + scale).view(-1, *[1] * (w.dim() - 1))
        out[f"{prefix}.bias"] = theta[f"{prefix}.bias"] + shift
    return out


def _adapted(name: str) -> bool:
    """Batch-norm parameters are meta-learned but never adapted in the inner loop (official code)."""
    return not name.startswith("bn")


def step_sizes(alpha, gamma: dict | None, names) -> dict:
    """The inner loop's lr dict ``{name: gamma[layer(name)] * alpha[name]}``.

    ``alpha`` is a scalar tensor (MAML) or ``{name: tensor}`` (Meta-SGD); ``gamma`` is ``{layer:
    scalar}`` or ``None`` (all 1).
    """
    out = {}
    for n in names:
        a = alpha[n] if isinstance(alpha, dict) else alpha
        out[n] = a if gamma is None else gamma[layer_of(n)] * a
    return out


# --------------------------------------------------------------------------------------------
# the balanced inner loop
# --------------------------------------------------------------------------------------------
def class_weighted_loss(losses: torch.Tensor, y: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """L_omega = sum_c omega_c (C/N) sum_{i: y_i = c} l_i for per-example losses ``(N,)`` and omega ``(C,)``.

    Uniform omega (1/C) gives the ordinary mean loss; omega_c ~ 1/N_c gives every class equal total weight.
    Because omega sums to 1, the 1/N_c weighting also shrinks the total weight of the support set to
    HM(N_c)/AM(N_c) of the uniform one (a smaller effective step on imbalanced tasks: 0.21x for shots
    (1, 25, 25, 25, 25)); the "inverse_scaled" mode keeps the 1/N_c shape at the uniform total.
    """
    ways, n = omega.shape[0], losses.shape[0]
    per_class = torch.zeros(ways, dtype=losses.dtype, device=losses.device).index_add(0, y, losses)  # (C,)
    return (omega * per_class).sum() * ways / n


def balanced_inner_loop(model, theta: dict, alpha, x: torch.Tensor, y: torch.Tensor, ways: int,
                        omega: torch.Tensor | None = None, gamma: dict | None = None,
                        z: torch.Tensor | None = None, steps: int = 5, first_order: bool = False,
                        keep_trajectory: bool = False) -> InnerResult:
    """Adapt ``theta`` (hidden layers) plus a zero head to the support set ``(x (N, *X), y (N,))``.

    ``omega (C,)`` class weights (``None``: uniform), ``gamma {layer: scalar}`` (``None``: 1),
    ``z (z_dim,)`` (``None``: 0).  This is :func:`tutor.meta.inner_loop` with per-example weights
    ``C * omega[y]`` (its ``mean_i(w_i l_i)`` is then exactly :func:`class_weighted_loss`) and the
    per-parameter steps ``gamma_l * alpha``.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"support inputs and labels disagree: {x.shape[0]} vs {y.shape[0]} examples")
    params = {**modulate(model, theta, z), **zero_head(model, ways, next(iter(theta.values())))}
    weights = None if omega is None else ways * omega[y]                                  # (N,)
    lr = step_sizes(alpha, gamma, [n for n in params if _adapted(n)])
    return inner_loop(model, params, x, y, steps, lr, first_order=first_order, weights=weights,
                      adapt=_adapted, keep_trajectory=keep_trajectory)


# --------------------------------------------------------------------------------------------
# the inference network (set encoder)
# --------------------------------------------------------------------------------------------
def cardinality(counts: torch.Tensor, k_max: int) -> torch.Tensor:
    """Normalised set size N~ = (N - 1)/(K_max - 1): 0 at one shot, 1 at K_max (above K_max: > 1)."""
    return (counts - 1) / (k_max - 1)


def stat_pool(h: torch.Tensor, card: torch.Tensor) -> torch.Tensor:
    """StatPool of one set of features ``h (n, d)``: ``(d, 3)`` = [mean, variance (biased), N~].

    The biased variance is 0, not NaN, for a one-element set.
    """
    mean = h.mean(0)                                                       # (d,)
    var = (h - mean).pow(2).mean(0)                                        # (d,)
    return torch.stack([mean, var, card.to(h.dtype).expand_as(mean)], -1)  # (d, 3)


def interact(psi: dict, key: str, pooled: torch.Tensor) -> torch.Tensor:
    """Shared dense(3 -> 4) + ReLU on each feature's [mean, var, N~], flattened: ``(..., d, 3) -> (..., 4d)``."""
    return F.relu(F.linear(pooled, psi[f"{key}.weight"], psi[f"{key}.bias"])).flatten(-2)


def _dense(gen, d_in, d_out, dtype, device, std=None):
    w = torch.randn(d_out, d_in, generator=gen, dtype=dtype) * (std if std is not None else math.sqrt(2.0 / d_in))
    return w.to(device), torch.zeros(d_out, dtype=dtype, device=device)


def init_encoder(model, config: TamlConfig, gen: torch.Generator | int = 0, device=None,
                 dtype=torch.float32) -> dict:
    """psi: the inference network's parameters (empty when no latent is switched on)."""
    if not isinstance(gen, torch.Generator):
        gen = torch.Generator().manual_seed(int(gen))
    if not config.latents:
        return {}
    psi = {}

    def dense(name, d_in, d_out, std=None):
        psi[f"{name}.weight"], psi[f"{name}.bias"] = _dense(gen, d_in, d_out, dtype, device, std)

    if isinstance(model, Conv4):                 # conv3x3(10)-ReLU-pool-conv3x3(10)-ReLU-pool-dense
        c = model.in_channels
        for i, (ci, co) in enumerate(((c, 10), (10, 10)), start=1):
            psi[f"inst_conv{i}.weight"] = (torch.randn(co, ci, 3, 3, generator=gen, dtype=dtype)
                                           * math.sqrt(2.0 / (ci * 9))).to(device)
            psi[f"inst_conv{i}.bias"] = torch.zeros(co, dtype=dtype, device=device)
        side = model.image_size // 4
        dense("inst1", 10 * side * side, config.instance_dims[-1])
        d_inst = config.instance_dims[-1]
    else:
        _hidden_layers(model)
        d = model.in_features
        for i, width in enumerate(config.instance_dims, start=1):
            dense(f"inst{i}", d, width)
            d = width
        d_inst = d
    k = config.interact_dim
    dense("class_interact", 3, k)
    hid, out = config.class_dims
    dense("class1", k * d_inst, hid)
    dense("class2", hid, out)
    dense("task_interact", 3, k)
    sizes = {"omega": (k * d_inst, 1), "gamma": (k * out, len(layer_names(model))), "z": (k * out, z_dim(model))}
    for name in config.latents:
        d_in, d_out = sizes[name]
        dense(f"{name}_hidden", d_in, config.head_hidden)
        dense(f"{name}_mu", config.head_hidden, d_out)
        psi[f"{name}_mu.weight"].zero_()                       # mu heads start at 0: training starts at Meta-SGD
        dense(f"{name}_sigma", config.head_hidden, d_out, std=0.01)
        psi[f"{name}_sigma.bias"].fill_(config.sigma_init)
    return {k_: v.requires_grad_() for k_, v in psi.items()}


def _instance_features(psi: dict, x: torch.Tensor) -> torch.Tensor:
    """NN1 on every support example: ``(N, *X) -> (N, d_inst)``."""
    if "inst_conv1.weight" in psi:
        h = x
        for i in (1, 2):
            h = F.max_pool2d(F.relu(F.conv2d(h, psi[f"inst_conv{i}.weight"], psi[f"inst_conv{i}.bias"], padding=1)), 2)
        return F.linear(h.flatten(1), psi["inst1.weight"], psi["inst1.bias"])
    h, i = x.flatten(1), 1
    while f"inst{i}.weight" in psi:
        h = F.linear(h, psi[f"inst{i}.weight"], psi[f"inst{i}.bias"])
        if f"inst{i + 1}.weight" in psi:
            h = F.relu(h)
        i += 1
    return h


def _gaussian_head(psi: dict, name: str, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dense+ReLU, then parallel (mu, raw sigma) outputs; sigma = softplus(raw) (no ReLU on either)."""
    a = F.relu(F.linear(h, psi[f"{name}_hidden.weight"], psi[f"{name}_hidden.bias"]))
    mu = F.linear(a, psi[f"{name}_mu.weight"], psi[f"{name}_mu.bias"])
    sigma = F.softplus(F.linear(a, psi[f"{name}_sigma.weight"], psi[f"{name}_sigma.bias"]))
    return mu, sigma


def encode_task(psi: dict, config: TamlConfig, x: torch.Tensor, y: torch.Tensor, ways: int) -> dict:
    """q(phi | D): ``{latent: (mu, sigma)}`` for the switched-on latents, from the support set only.

    omega~ ``(C,)`` from each class code s_c; gamma~ ``(L,)`` and z~ ``(z_dim,)`` from the task code v.
    """
    counts = torch.bincount(y, minlength=ways)                                   # (C,)
    if counts.shape[0] != ways or (counts == 0).any():
        raise ValueError(f"every class needs at least one support example (ways={ways}); support "
                         f"counts per class {counts.tolist()}")
    if not config.latents:
        return {}
    card = cardinality(counts.to(x.dtype), config.k_max)                         # (C,)
    h = _instance_features(psi, x)                                               # (N, d_inst)
    pooled = torch.stack([stat_pool(h[y == c], card[c]) for c in range(ways)])   # (C, d_inst, 3)
    s = interact(psi, "class_interact", pooled)                                  # (C, 4 d_inst)
    u = F.linear(F.relu(F.linear(s, psi["class1.weight"], psi["class1.bias"])),
                 psi["class2.weight"], psi["class2.bias"])                        # (C, d_out)
    v = interact(psi, "task_interact", stat_pool(u, card.mean()))                # (4 d_out,)
    out = {}
    if "omega" in config.latents:
        mu, sigma = _gaussian_head(psi, "omega", s)                              # (C, 1)
        out["omega"] = (mu.squeeze(-1), sigma.squeeze(-1))
    for name in ("gamma", "z"):
        if name in config.latents:
            out[name] = _gaussian_head(psi, name, v)
    return out


def kl_to_standard_normal(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over all dimensions (analytic)."""
    return (-torch.log(sigma) + (sigma.pow(2) + mu.pow(2)) / 2 - 0.5).sum()


def balancing_variables(latents: dict, config: TamlConfig, model, counts: torch.Tensor) -> tuple:
    """(omega (C,) or None, gamma {layer: scalar} or None, z (z_dim,) or None) from sampled latents.

    ``counts (C,)`` are the support sizes N_c (used by the fixed "inverse" weighting only).
    """
    omega = None
    if config.omega == "learned":
        omega = torch.softmax(latents["omega"], 0)
    elif config.omega in ("inverse", "inverse_scaled"):
        inv = 1.0 / counts.double()                                             # (C,)
        if config.omega == "inverse":                                           # sums to 1
            omega = inv / inv.sum()
        else:                                                                   # total weight N, as uniform
            omega = inv * counts.double().sum() / counts.shape[0] ** 2
        omega = omega.to(counts.dtype if counts.is_floating_point() else torch.get_default_dtype())
    gamma = None
    if config.gamma:
        g = torch.exp(latents["gamma"])
        if config.gamma_max is not None:
            g = g.clamp(max=config.gamma_max)
        gamma = dict(zip(layer_names(model), g))
    z = latents.get("z") if config.z else None
    return omega, gamma, z


# --------------------------------------------------------------------------------------------
# the meta-learner
# --------------------------------------------------------------------------------------------
class TAML(MetaLearner):
    """Bayesian TAML and its baselines (MAML, Meta-SGD, Meta-SGD 1/N, ablations) through one code path.

    Meta-parameters: ``{"net": theta (hidden layers; the head is a per-task zero), "lr" or
    "fixed_lr": alpha, "enc": psi}``.
    """

    def __init__(self, model, config: TamlConfig | None = None):
        self.config = config or TamlConfig()
        _hidden_layers(model)                      # raises for unsupported learners
        self.model = model

    # -- parameters --------------------------------------------------------------------------
    def init(self, gen=0, device=None, dtype=torch.float32) -> dict:
        if not isinstance(gen, torch.Generator):
            gen = torch.Generator().manual_seed(int(gen))
        net = {k: v for k, v in self.model.init(gen, device, dtype).items() if not k.startswith("head")}
        cfg = self.config
        if cfg.alpha == "scalar":                  # MAML: one fixed step size
            lr = {"fixed_lr": {"all": torch.tensor(cfg.inner_lr, device=device, dtype=dtype)}}
        else:                                      # Meta-SGD: learned, shaped like each adapted tensor
            alpha = {k: torch.full_like(v, cfg.inner_lr) for k, v in net.items() if _adapted(k)}
            d = self.model.embedding_dim           # the head's alpha: one row, tiled over the classes
            alpha["head.weight"] = torch.full((1, d), cfg.inner_lr, device=device, dtype=dtype)
            alpha["head.bias"] = torch.full((1,), cfg.inner_lr, device=device, dtype=dtype)
            lr = {"lr": {k: v.detach().requires_grad_() for k, v in alpha.items()}}
        return {"net": net, **lr, "enc": init_encoder(self.model, cfg, gen, device, dtype)}

    def alpha(self, meta: dict):
        want = "fixed_lr" if self.config.alpha == "scalar" else "lr"
        if want not in meta:
            have = "a fixed scalar alpha (MAML)" if "fixed_lr" in meta else (
                "learned per-parameter alphas (Meta-SGD)" if "lr" in meta else f"the keys {sorted(meta)}")
            raise ValueError(f"these meta-parameters hold {have}, but the learner has alpha={self.config.alpha!r}; "
                             f"use the learner (preset) they were trained with")
        return meta["fixed_lr"]["all"] if want == "fixed_lr" else meta["lr"]

    # -- posterior and latents -----------------------------------------------------------------
    def posterior(self, meta: dict, episode: Episode) -> dict:
        """``{latent: (mu, sigma)}`` of q(phi | support set)."""
        return encode_task(meta["enc"], self.config, episode.support_x, episode.support_y, episode.ways)

    def sample_latents(self, post: dict, gen: torch.Generator | None = None, mean: bool = False) -> dict:
        """phi = mu + sigma * eps (reparameterised), or mu for the deterministic / naive prediction."""
        if mean or not self.config.bayesian:
            return {k: mu for k, (mu, _) in post.items()}
        return {k: mu + sigma * torch.randn(mu.shape, generator=gen, dtype=mu.dtype, device=mu.device)
                for k, (mu, sigma) in post.items()}

    def kl(self, post: dict) -> torch.Tensor:
        """KL(q || N(0, I)) over every switched-on latent dimension (0 for deterministic models)."""
        if not self.config.bayesian or not post:
            return torch.zeros(())
        return sum(kl_to_standard_normal(mu, sigma) for mu, sigma in post.values())

    def _gen(self, episode: Episode, offset: int = 0) -> torch.Generator | None:
        if episode.seed is None:
            return None
        return torch.Generator(device=episode.support_x.device).manual_seed(int(episode.seed) + offset)

    # -- inner loop ----------------------------------------------------------------------------
    def adapt(self, meta: dict, episode: Episode, latents: dict | None = None, steps: int | None = None,
              first_order: bool = False, keep_trajectory: bool = False) -> InnerResult:
        """Balanced inner loop on the episode's support set with the balancing variables of ``latents``."""
        counts = torch.bincount(episode.support_y, minlength=episode.ways).to(episode.support_x.dtype)
        omega, gamma, z = balancing_variables(latents or {}, self.config, self.model, counts)
        return balanced_inner_loop(self.model, meta["net"], self.alpha(meta), episode.support_x,
                                   episode.support_y, episode.ways, omega, gamma, z,
                                   self.config.inner_steps if steps is None else steps,
                                   first_order=first_order, keep_trajectory=keep_trajectory)

    def task_loss(self, meta: dict, episode: Episode) -> tuple[torch.Tensor, dict]:
        """One task's meta-loss: query CE after one sampled inner loop + beta_KL KL/(N + M)."""
        check_episode(episode)             # NaN inputs, empty sets, bad labels: named as such, not as a rate
        post = self.posterior(meta, episode)
        latents = self.sample_latents(post, self._gen(episode))
        adapted = self.adapt(meta, episode, latents).params
        logits = self.model(adapted, episode.query_x)                            # (M, C)
        ce = F.cross_entropy(logits, episode.query_y)
        kl = self.kl(post).to(ce)
        if not torch.isfinite(kl):
            raise FloatingPointError(f"non-finite KL ({kl.item()}); the posterior sigma collapsed or exploded: "
                                     f"lower the meta learning rate or raise sigma_init ({self.config.sigma_init})")
        if not torch.isfinite(ce):
            raise FloatingPointError(f"non-finite query loss ({ce.item()}); lower inner_lr ({self.config.inner_lr}) "
                                     "or set gamma_max to bound exp(gamma)")
        n_total = episode.support_x.shape[0] + episode.query_x.shape[0]
        loss = ce + self.config.beta_kl * kl / n_total
        return loss, {"loss": loss.detach(), "accuracy": (logits.argmax(-1) == episode.query_y).float().mean(),
                      "kl": kl.detach()}

    # -- prediction ----------------------------------------------------------------------------
    def frozen(self, meta: dict) -> dict:
        return {k: {n: t.detach() for n, t in v.items()} for k, v in meta.items()}

    def predict(self, meta: dict, episode: Episode, x: torch.Tensor | None = None, samples: int | None = None,
                mean: bool = False, steps: int | None = None, gen: torch.Generator | None = None) -> torch.Tensor:
        """Class probabilities ``(M, C)`` for ``x`` (default: the queries) at meta-test.

        Bayesian: the average of ``samples`` (default ``mc_test``) softmaxes, each after its own inner
        loop; ``mean=True`` (or a deterministic model) plugs in the posterior mean once.
        """
        steps = self.config.eval_steps if steps is None else steps
        return self.predict_steps(meta, episode, (steps,), x, samples, mean, gen)[steps]

    def predict_steps(self, meta: dict, episode: Episode, steps=(5, 10), x: torch.Tensor | None = None,
                      samples: int | None = None, mean: bool = False,
                      gen: torch.Generator | None = None) -> dict[int, torch.Tensor]:
        """``{k: probs (M, C)}`` after ``k`` inner steps for every ``k`` in ``steps``, from one inner loop
        per Monte Carlo sample (the same latents for every ``k``); ``predict`` is the one-``k`` case."""
        steps = tuple(sorted({int(k) for k in steps}))
        if not steps or steps[0] < 0:
            raise ValueError(f"steps must be a non-empty collection of integers >= 0, got {steps}")
        if samples is not None:            # 0 or negative: an error, never a silent fallback to mc_test
            samples = as_int(samples, "samples (Monte-Carlo samples per prediction)", 1)
        check_episode(episode, query=x is None)
        if x is not None:
            check_inputs(x, "x (the inputs to predict)")
        frozen = self.frozen(meta)
        x = episode.query_x if x is None else x
        with torch.no_grad():
            post = self.posterior(frozen, episode)
        single = mean or not self.config.bayesian or not post
        S = 1 if single else (self.config.mc_test if samples is None else samples)
        gen = gen if gen is not None else self._gen(episode, offset=1)
        probs = dict.fromkeys(steps, 0.0)
        for _ in range(S):
            latents = self.sample_latents(post, gen, mean=single)
            traj = self.adapt(frozen, episode, latents, steps=steps[-1], first_order=True,
                              keep_trajectory=len(steps) > 1)
            for k in steps:
                params = traj.trajectory[k] if len(steps) > 1 else traj.params
                with torch.no_grad():
                    probs[k] = probs[k] + torch.softmax(self.model(params, x), -1)
        return {k: p / S for k, p in probs.items()}

    def evaluate(self, meta: dict, episode: Episode, samples: int | None = None, mean: bool = False) -> dict:
        """Meta-test scores of one task: accuracy, macro accuracy, tail-class recall, NLL."""
        probs = self.predict(meta, episode, samples=samples, mean=mean)
        return task_metrics(probs, episode)

    def readouts(self, meta: dict, episode: Episode) -> dict:
        """Posterior read-outs: E[omega], E[gamma] (exp of the mean), ||E[z~]||, and the sigmas."""
        with torch.no_grad():
            post = self.posterior(self.frozen(meta), episode)
        out = {}
        if "omega" in post:
            out["omega"] = torch.softmax(post["omega"][0], 0)
            out["sigma_omega"] = post["omega"][1]
        if "gamma" in post:
            out["gamma"] = torch.exp(post["gamma"][0])
            out["sigma_gamma"] = post["gamma"][1]
        if "z" in post:
            out["z_norm"] = post["z"][0].norm()
            out["sigma_z"] = post["z"][1]
        return out


def task_metrics(probs: torch.Tensor, episode: Episode) -> dict:
    """``accuracy``, ``macro_accuracy`` (mean per-class recall), ``tail_recall`` (recall of the
    class(es) with the fewest support examples, averaged over ties) and ``loss`` (NLL of ``probs``).

    On a class-balanced task every class ties for "fewest", so ``tail_recall`` equals ``macro_accuracy``
    there: summaries of tail-class recall should use imbalanced tasks only (the driver does)."""
    y, ways = episode.query_y, episode.ways
    correct = (probs.argmax(-1) == y).to(probs.dtype)                            # (M,)
    recall = torch.zeros(ways, dtype=probs.dtype).index_add(0, y.cpu(), correct.cpu())
    recall = recall / torch.bincount(y.cpu(), minlength=ways).clamp(min=1)       # (C,)
    counts = torch.bincount(episode.support_y.cpu(), minlength=ways)
    tail = counts == counts.min()
    nll = -torch.log(probs.gather(1, y[:, None]).clamp_min(1e-12)).mean()
    return {"accuracy": float(correct.mean()), "macro_accuracy": float(recall.mean()),
            "tail_recall": float(recall[tail].mean()), "loss": float(nll)}


def evaluate_metrics(learner: TAML, meta: dict, episodes: list, workers: int = 1, **kwargs) -> dict:
    """Every metric of :func:`task_metrics` on fixed episodes: ``{metric: EvalResult}`` (Student-t CIs)."""
    if not episodes:
        raise ValueError("evaluate_metrics needs at least one episode")
    p = leaves(meta, trainable=False)[0]

    def score(ep):
        return learner.evaluate(meta, ep.to(p.device, p.dtype), **kwargs)

    rows = list(learner._executor(workers).map(score, episodes)) if workers > 1 else [score(e) for e in episodes]
    out = {}
    for metric in rows[0]:
        values = [r[metric] for r in rows]
        m, ci = mean_ci(values) if len(values) > 1 else (values[0], float("nan"))
        out[metric] = EvalResult(values, m, ci, "accuracy" if metric != "loss" else metric)
    return out


def evaluate_steps(learner: TAML, meta: dict, episodes: list, steps=(5, 10), workers: int = 1,
                   **kwargs) -> dict[int, dict[str, list[float]]]:
    """Per-task metrics of :func:`task_metrics` after each number of inner steps in ``steps``:
    ``{k: {metric: [one value per episode]}}`` (one inner loop per Monte Carlo sample serves every k)."""
    if not episodes:
        raise ValueError("evaluate_steps needs at least one episode")
    p = leaves(meta, trainable=False)[0]

    def score(ep):
        ep = ep.to(p.device, p.dtype)
        return {k: task_metrics(pr, ep) for k, pr in learner.predict_steps(meta, ep, steps, **kwargs).items()}

    rows = list(learner._executor(workers).map(score, episodes)) if workers > 1 else [score(e) for e in episodes]
    return {k: {m: [r[k][m] for r in rows] for m in rows[0][k]} for k in rows[0]}


# --------------------------------------------------------------------------------------------
# checkpoints that remember their switches
# --------------------------------------------------------------------------------------------
def save_taml(path, learner: TAML, meta: dict, info: dict | None = None, *, overwrite: bool = False):
    """Save meta-parameters with the learner's full config (switches included); an existing file is
    replaced only with ``overwrite=True``."""
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(learner.config).items()}
    return save_checkpoint(path, meta, {**(info or {}), "config": cfg}, overwrite=overwrite)


RUNTIME_FIELDS = ("inner_lr", "inner_steps", "eval_steps", "beta_kl", "mc_test", "sigma_init", "gamma_max")
"""TamlConfig fields that may differ between a checkpoint and the learner that loads it (initial values and
meta-test settings); every other field (the switches, k_max, the encoder widths) defines the model."""


def load_taml(path, learner: TAML, device=None) -> tuple[dict, dict]:
    """Load a checkpoint for ``learner``; raises if any model-defining config field (every field but
    :data:`RUNTIME_FIELDS`: the switches, ``k_max``, the encoder widths) differs from the checkpoint's, if the
    checkpoint has no config (not written by :func:`save_taml`), or if its tensors do not fit the learner."""
    meta, info = load_checkpoint(path, device)
    saved = info.get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"checkpoint {path} has no TAML config (info['config']); it was not written by save_taml, "
                         "so its switches cannot be checked: re-create it with save_taml")
    current = asdict(learner.config)
    for name in sorted(set(current) - set(RUNTIME_FIELDS), key=list(current).index):
        want = list(current[name]) if isinstance(current[name], tuple) else current[name]
        if name not in saved or saved[name] != want:
            raise ValueError(f"checkpoint {path} was trained with {name}={saved.get(name, 'unset')!r} but the learner "
                             f"has {name}={want!r}; evaluate a model with the config it was trained with "
                             f"(TamlConfig({name}={saved.get(name)!r}))")
    expected = learner.init(0, device=device)

    def shapes(d, prefix=""):
        return {f"{prefix}{k}": (shapes(v, f"{prefix}{k}.") if isinstance(v, dict) else tuple(v.shape))
                for k, v in d.items()}
    if shapes(meta) != shapes(expected):
        raise ValueError(f"checkpoint {path} holds tensors of other names or shapes than the learner's "
                         f"(model {type(learner.model).__name__}); load it into the network it was trained with")
    return meta, info
