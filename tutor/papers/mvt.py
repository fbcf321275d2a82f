"""MVT-style variance transfer: augment a few-shot class with variations borrowed from other classes.

Seong-Jin Park, Seungju Han, Ji-Won Baek, Insoo Kim, Juhwan Song, Haebeom Lee, Jae-Joon Han, Sung Ju
Hwang. *Meta Variance Transfer: Learning to Augment from the Others.* ICML 2020 (PMLR 119:7510-7520).
No official code and no full paper text are public. What is verified is the abstract (a model meta-
trained to move factors of variation from one class to another; the moved variations make virtual
feature-space samples that stand in for future, differently-varied queries *during training*) and
the abstract of the related Samsung patent (an extra feature for a target class computed from the
mean and variation vectors of a donor class and of the target class).  **Everything below is our
"MVT-style" reconstruction** (``shared/papers/mvt.md`` §3.2-3.6); the equation labels are the notes'
sections, not the paper's equation numbers, which we cannot check.

Notation (one episode): encoder f_theta, h = f_theta(x) in R^d; N target classes with K shots,
mu_c the mean support embedding of class c; D donor classes (base classes disjoint from the targets,
at meta-training *and* at meta-test) with M_d images each, mu_d and sigma_d their mean and std.

* **Donor deviations** (§3.2): ``v_{d,j} = h_{d,j} - mu_d``, ``z_{d,j} = v_{d,j} / sigma_d``.
                                                                             -> donor_deviations
* **Transfer** T_phi (§3.3), three nested variants:
  (a) naive additive ``v~ = v``                                              -> naive_transfer
  (b) gated, target-conditioned (default) ``v~ = sigmoid(MLP_phi([mu_c; v])) * v``
                                                                             -> gated_transfer
  (c) statistics matching ``v~ = sigma^_c * z``, ``sigma^_c = softplus(MLP_phi([mu_c; sigma_d]))``
                                                                             -> stats_transfer
  control: isotropic Gaussian noise with the norm of v                      -> matched_noise
* **Virtual samples** ``h^_{c,m} = mu_c + v~_{c,m}``                           -> virtual_samples
* **Prototypes** (§3.4): option Q ``p_c = mu_c`` (default); option P
  ``p_c = (K mu_c + sum_m h^_{c,m}) / (K + M)``                              -> augmented_prototype_logits
* **Losses** (§3.4): ``L_Q`` = cross-entropy of ``-||f(x) - p_c||^2`` on the queries (the core's
  ``prototype_logits``); ``L_V`` = cross-entropy that keeps each virtual sample in its class,
  ``-log softmax_c'(-||h^_{c,m} - mu_c'||^2)[c]``; ``L = L_Q + lambda_V L_V``; theta and phi trained
  jointly by backprop through the episode.                                    -> virtual_loss, MVT.task_loss
* **Covariance-aware heads** (§3.6, §6.4.2), so that transferred *spread* can act at test time:
  shared Mahalanobis ``-(x - mu_c)^T Sigma^-1 (x - mu_c)`` with Sigma estimated from the transferred
  deviations (shrunk towards a multiple of I), and a per-class diagonal Gaussian.
                                                          -> transferred_covariance, mahalanobis_logits,
                                                             diagonal_logits, class_spread
* **The mean-prototype caveat** (§3.6): zero-mean deviations added to mu_c leave the option-P prototype
  where it was in expectation, so test-time augmentation of a mean prototype cannot help; the 2-D
  shared-covariance toy shows it and shows the Mahalanobis head recovering the oracle.
                                                                   -> toy_episodes, toy_accuracies
* **Shared nuisance** for glyphs (§6.2): rotation, scale, shear, shift, stroke dilation and pixel
  noise, drawn per image from the episode's own seed (every method sees identical test images).
                                                                        -> shared_nuisance, NuisanceEpisodes

* **Why the gate closes under L_V** (ours, issue 18): with ``u = g * v`` the pseudo-query logit is
  ``-||Delta||^2 - 2 Delta.u - ||u||^2``; the last term is the same for every class and cancels in the
  softmax, so L_V is convex in u and zero-mean deviations raise its expectation: under option Q the
  gate is pushed towards closing (the kept seed-0 glyph gate closed to ~1e-5; in the regime-map world
  100 small steps moved it only from 0.5 to 0.36-0.50).  -> virtual_logit_terms, virtual_loss_at_gate,
                                                                gate_openness, MVT.openness
  The control ``transfer="gate_zero"`` (gate fixed at 0) is ProtoNet plus the separation term L_V
  becomes.  Our non-collapsing objective ``transfer="query_matching"``: L_V trains the embedding with
  the gate's gradient stopped, and the gate is trained only to make the transferred deviations explain
  the real queries' deviations ``h_q - mu_c`` (Gaussian likelihood; a closed gate has unbounded loss).
                                                                        -> query_matching_loss
* **A feature-space world** where the premise holds exactly, ``h = mu_c + L n + sigma eps`` with one
  low-rank L shared by all classes (or one per class): the regime map's ground.
                             -> WorldConfig, world_episodes, world_transfer, world_accuracy, train_world_transfer

Deliberate simplifications (all ours): the transfer network is a one-hidden-layer MLP; each virtual
sample uses one donor deviation picked at random (donor class and sample uniform); the gate's last
layer starts at zero (gates 0.5); donors are embedded in their own batch (batch norm statistics of
the support/query batch are the same as ProtoNet's); the covariance heads are not trained, only used
at test; virtual samples are deterministic given the episode seed; the face-recognition variant
(class vectors trained on real plus virtual features, the issue's optional class-vector objective) is
described in the notebook, not implemented.

An asymmetry in every comparison with ProtoNet: a transfer learner embeds D x M_d donor images per
episode (4 x 5 on glyphs) that ProtoNet never sees in that episode.  They are base-class images, which
ProtoNet's own training episodes also draw from, but no ProtoNet arm that may use them was run, so a
transfer arm's gain over ProtoNet could come from those extra images rather than from transfer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tutor.data.episodes import Episode, EpisodeSampler, stack_episodes
from tutor.meta import MetaLearner, ProtoNet, accuracy, prototype_logits
from tutor.validation import as_float, check_episode, check_inputs

__all__ = ["MVTConfig", "TRANSFERS", "HEADS", "donor_deviations", "naive_transfer", "gated_transfer", "gate",
           "stats_transfer", "matched_noise", "pick_deviations", "virtual_samples",
           "augmented_prototype_logits", "virtual_loss", "virtual_logit_terms", "virtual_loss_at_gate",
           "query_matching_loss", "gate_openness", "class_spread", "transferred_covariance",
           "mahalanobis_logits", "diagonal_logits", "transfer_init", "MVT", "shared_nuisance",
           "NuisanceEpisodes", "mvt_samplers", "ToyConfig", "toy_episodes", "toy_transfer", "toy_accuracies",
           "WORLD_TRANSFERS", "WORLD_OBJECTIVES", "WorldConfig", "world_basis", "world_episodes", "world_deviations",
           "world_transfer", "world_accuracy", "world_objective", "train_world_transfer"]

TRANSFERS = ("gated", "naive", "stats", "noise", "gate_zero", "query_matching")
HEADS = ("prototype", "augmented", "mahalanobis", "diagonal")


def _check_test_virtual(head: str, test_virtual: int) -> None:
    """The covariance heads are estimated from transferred samples: they need at least one ("augmented" with none
    is ProtoNet exactly)."""
    if head in ("mahalanobis", "diagonal") and test_virtual < 1:
        raise ValueError(f"head={head!r} is estimated from transferred virtual samples and needs test_virtual >= 1, "
                         f"got test_virtual={test_virtual}; use head='prototype' or 'augmented' for none")


def _check_mvt_episode(episode) -> None:
    """NaN inputs, empty sets and bad labels named as such (also for the donor images)."""
    check_episode(episode)
    if episode.donor_x is not None:
        check_inputs(episode.donor_x, "donor images (donor_x)")


@dataclass
class MVTConfig:
    """Settings of the MVT-style learner (defaults: notes §6.2, sized for a 2-core CPU)."""

    transfer: str = "gated"
    """How a donor deviation becomes a target deviation: one of :data:`TRANSFERS`.  ``"gate_zero"`` is the
    gated transfer with the gate fixed at 0 (ProtoNet plus the L_V separation term: the control);
    ``"query_matching"`` is the gated transfer trained by :func:`query_matching_loss` instead of L_V."""
    virtual: int = 5
    """M, virtual samples per target class and episode."""
    lambda_v: float = 0.5
    """lambda_V, weight of the virtual-sample loss L_V."""
    option: str = "Q"
    """"Q": prototypes stay the support means (virtual samples only in L_V, pseudo-queries);
    "P": prototypes averaged with the virtual samples during training."""
    hidden: int = 64
    """Hidden units of the transfer MLP."""
    head: str = "prototype"
    """Classifier at test: one of :data:`HEADS` (``"augmented"`` is option P at test, the caveat)."""
    test_virtual: int = 20
    """Virtual samples per class used by the test-time heads."""
    shrinkage: float = 0.5
    """Weight of the scaled identity in the transferred covariance (0 = raw estimate)."""
    lambda_m: float = 1.0
    """Weight of the query-matching loss (``transfer="query_matching"`` only)."""

    def __post_init__(self):
        if self.transfer not in TRANSFERS:
            raise ValueError(f"transfer must be one of {TRANSFERS}, got {self.transfer!r}")
        if self.option not in ("P", "Q"):
            raise ValueError(f"option must be 'P' or 'Q', got {self.option!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        for name in ("virtual", "test_virtual", "hidden"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0 or (name == "hidden" and v < 1):
                raise ValueError(f"{name} must be a non-negative integer (hidden >= 1), got {v!r}")
        self.lambda_v = as_float(self.lambda_v, "lambda_v (the weight of the virtual-sample loss)", 0.0)
        self.lambda_m = as_float(self.lambda_m, "lambda_m (the weight of the query-matching loss)", 0.0)
        _check_test_virtual(self.head, self.test_virtual)
        self.shrinkage = as_float(self.shrinkage, "shrinkage", 0.0)
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError(f"shrinkage must lie in [0, 1], got {self.shrinkage}")


# --------------------------------------------------------------------------------------------
# donor statistics and the transfer module (§3.2-3.3)
# --------------------------------------------------------------------------------------------
def donor_deviations(h_donors: torch.Tensor, eps: float = 1e-5):
    """``h_donors (D, M_d, d)`` -> deviations ``v (D, M_d, d)``, means ``mu_d (D, d)``, stds ``sigma_d (D, d)``.

    ``sigma_d`` needs ``M_d >= 2`` (a one-sample class has no spread)."""
    if h_donors.dim() != 3:
        raise ValueError(f"donor features must be (donors, samples, dim), got shape {tuple(h_donors.shape)}")
    if h_donors.shape[1] < 2:
        raise ValueError(f"donor classes need at least 2 samples each to have a spread, got {h_donors.shape[1]}")
    mu_d = h_donors.mean(1)                                                   # (D, d)
    v = h_donors - mu_d[:, None]                                              # (D, M_d, d)
    sigma_d = (v.pow(2).mean(1) + eps).sqrt()                                 # (D, d)
    return v, mu_d, sigma_d


def pick_deviations(donors: int, samples: int, targets: int, m: int, gen: torch.Generator) -> torch.Tensor:
    """Random (donor, sample) indices for ``m`` virtual samples of each target: ``(targets, m, 2)``."""
    if donors < 1 and m > 0:
        raise ValueError("virtual samples need at least one donor class")
    d = torch.randint(0, max(donors, 1), (targets, m), generator=gen)
    j = torch.randint(0, max(samples, 1), (targets, m), generator=gen)
    return torch.stack([d, j], -1)


def transfer_init(dim: int, hidden: int = 64, gen: torch.Generator | int = 0, dtype=torch.float32) -> dict:
    """phi: a one-hidden-layer MLP ``[2d] -> hidden -> d``; the last layer starts at zero."""
    gen = gen if isinstance(gen, torch.Generator) else torch.Generator().manual_seed(int(gen))
    w1 = torch.randn(hidden, 2 * dim, generator=gen, dtype=dtype) * math.sqrt(2.0 / (2 * dim))
    return {"w1": w1, "b1": torch.zeros(hidden, dtype=dtype), "w2": torch.zeros(dim, hidden, dtype=dtype),
            "b2": torch.zeros(dim, dtype=dtype)}


def _mlp(phi: dict, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    h = F.relu(torch.cat([a, b], -1) @ phi["w1"].T + phi["b1"])
    return h @ phi["w2"].T + phi["b2"]


def naive_transfer(v: torch.Tensor) -> torch.Tensor:
    """(a) ``v~ = v``: the donor deviation re-applied unchanged (FTL / analogy-style baseline)."""
    return v


def gate(phi: dict, mu_c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``g = sigmoid(MLP_phi([mu_c; v]))``, in (0, 1): meant to pass the coordinates of v that are nuisance
    (trained by L_V on glyphs it closes instead; see ``virtual_logit_terms``)."""
    return torch.sigmoid(_mlp(phi, mu_c, v))


def gated_transfer(phi: dict, mu_c: torch.Tensor, v: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
    """(b) ``v~ = g (.) v``; ``mu_c, v (..., d)``.  ``g`` overrides the learned gate (tests: 0 and 1)."""
    return (gate(phi, mu_c, v) if g is None else g) * v


def stats_transfer(phi: dict, mu_c: torch.Tensor, v: torch.Tensor, sigma_d: torch.Tensor,
                   sigma_c: torch.Tensor | None = None) -> torch.Tensor:
    """(c) ``v~ = sigma^_c (.) z`` with ``z = v / sigma_d``; ``sigma^_c = softplus(MLP_phi([mu_c; sigma_d]))``
    unless the target spread ``sigma_c`` is given.  All ``(..., d)``."""
    if sigma_c is None:
        sigma_c = F.softplus(_mlp(phi, mu_c, sigma_d))
    return sigma_c * (v / sigma_d)


def matched_noise(v: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Control: isotropic Gaussian directions with the norm of each deviation, ``(..., d)``."""
    e = torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device)
    return e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12) * v.norm(dim=-1, keepdim=True)


def virtual_samples(mu_c: torch.Tensor, v_tilde: torch.Tensor) -> torch.Tensor:
    """``h^_{c,m} = mu_c + v~_{c,m}``: ``mu_c (N, d)``, ``v_tilde (N, M, d)`` -> ``(N, M, d)``."""
    return mu_c[:, None] + v_tilde


# --------------------------------------------------------------------------------------------
# prototypes, losses, heads (§3.4, §3.6)
# --------------------------------------------------------------------------------------------
def augmented_prototype_logits(support_emb, support_y, query_emb, ways, h_virtual):
    """Option P: prototypes ``(K mu_c + sum_m h^_{c,m}) / (K + M)`` -> logits ``(queries, ways)``.

    Implemented with the core's ``prototype_logits`` by treating the virtual samples ``(ways, M, d)``
    as extra support examples; ``M = 0`` gives ProtoNet exactly."""
    m = h_virtual.shape[1]
    if m == 0:
        return prototype_logits(support_emb, support_y, query_emb, ways)
    vy = torch.arange(ways, device=support_y.device).repeat_interleave(m)
    return prototype_logits(torch.cat([support_emb, h_virtual.flatten(0, 1)]), torch.cat([support_y, vy]),
                            query_emb, ways)


def virtual_loss(h_virtual: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``L_V``: each virtual sample ``(N, M, d)`` classified against the support means ``mu (N, d)``."""
    n, m, _ = h_virtual.shape
    logits = -torch.cdist(h_virtual.flatten(0, 1), mu).pow(2)                 # (N*M, N)
    return F.cross_entropy(logits, torch.arange(n, device=mu.device).repeat_interleave(m))


# --------------------------------------------------------------------------------------------
# why the gate collapses under L_V, and an objective that cannot collapse
# --------------------------------------------------------------------------------------------
def virtual_logit_terms(mu: torch.Tensor, u: torch.Tensor):
    """The pseudo-query logit of ``h^ = mu_c + u`` for class c', split into its three terms.

    ``-||mu_c + u - mu_c'||^2 = -||Delta||^2 - 2 Delta . u - ||u||^2`` with ``Delta = mu_c - mu_c'``.
    ``mu (N, d)``, ``u (N, M, d)`` -> ``separation (N, 1, N)``, ``linear (N, M, N)``, ``norm (N, M, 1)``;
    their sum is the logit matrix of :func:`virtual_loss`.  The ``norm`` term is the same for every
    class c', so it cancels in the softmax: what L_V sees of u is a log-sum-exp of functions *linear*
    in u, i.e. convex in u, and by Jensen zero-mean deviations can only raise its expectation."""
    delta = mu[:, None, :] - mu[None, :, :]                                   # (N, N', d): Delta_{c c'}
    separation = -delta.pow(2).sum(-1)[:, None, :]
    linear = -2 * torch.einsum("cnd,cmd->cmn", delta, u)
    norm = -u.pow(2).sum(-1, keepdim=True)
    return separation, linear, norm


def virtual_loss_at_gate(mu: torch.Tensor, v: torch.Tensor, g) -> torch.Tensor:
    """L_V with the gate *fixed* at ``g`` (a number or a tensor broadcastable to ``v``): the transferred
    deviations are ``g * v``.  ``mu (N, d)``, ``v (N, M, d)``.  ``g = 0`` gives the separation term
    ``-log softmax(-||mu_c - mu_c'||^2)[c]`` alone (the ``gate_zero`` control's extra loss)."""
    return virtual_loss(virtual_samples(mu, g * v), mu)


def query_matching_loss(v_tilde: torch.Tensor, query_dev: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Gaussian likelihood of the real queries' deviations under the transferred ones (our objective).

    ``var_j = mean(v~_j^2) + eps`` over all transferred deviations ``v_tilde (..., d)`` (a zero-mean
    diagonal Gaussian shared by the episode's classes); ``query_dev (Q, d)`` are ``h_q - mu_{y_q}``.
    Returns the mean over queries of ``0.5 sum_j (r_j^2 / var_j + log var_j)`` (the NLL up to a constant).
    For fixed ``r`` it is minimised at ``var_j = mean_q r_j^2`` and grows without bound as the transferred
    variance goes to zero (``r != 0``): closing the gate is the *worst* answer, unlike under L_V."""
    d = v_tilde.shape[-1]
    if query_dev.shape[-1] != d:
        raise ValueError(f"query deviations have dim {query_dev.shape[-1]}, transferred deviations {d}")
    var = v_tilde.reshape(-1, d).pow(2).mean(0) + eps
    return 0.5 * (query_dev.reshape(-1, d).pow(2) / var + var.log()).sum(-1).mean()


def gate_openness(v_tilde: torch.Tensor, v: torch.Tensor) -> float:
    """``mean |v~| / mean |v|`` (norms over the last dim): 0 = closed gate, 1 = naive transfer."""
    return (v_tilde.norm(dim=-1).mean() / v.norm(dim=-1).mean().clamp_min(1e-12)).item()


def class_spread(emb: torch.Tensor, y: torch.Tensor, ways: int, eps: float = 1e-5) -> torch.Tensor:
    """Per-class variance ``(ways, d)`` of labelled embeddings; needs at least 2 examples per class."""
    counts = torch.bincount(y, minlength=ways)
    if (counts < 2).any():
        raise ValueError(f"a per-class spread needs at least 2 examples per class (shots >= 2), got counts "
                         f"{counts.tolist()}; with one shot use transferred variation instead")
    onehot = F.one_hot(y, ways).to(emb.dtype)                                 # (n, ways)
    mu = onehot.T @ emb / counts[:, None]
    return (onehot.T @ (emb - mu[y]).pow(2)) / (counts[:, None] - 1) + eps


def transferred_covariance(v_tilde: torch.Tensor, shrinkage: float = 0.5, eps: float = 1e-6) -> torch.Tensor:
    """Shared covariance ``(d, d)`` of transferred deviations ``(..., d)`` (about zero), shrunk as
    ``(1 - s) S + s (tr S / d) I``."""
    v = v_tilde.reshape(-1, v_tilde.shape[-1])
    if v.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 transferred deviations, got {v.shape[0]}")
    s = v.T @ v / v.shape[0]
    d = s.shape[0]
    iso = (torch.trace(s) / d + eps) * torch.eye(d, dtype=s.dtype, device=s.device)
    return (1 - shrinkage) * s + shrinkage * iso


def mahalanobis_logits(query: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """``-(x - mu_c)^T Sigma^-1 (x - mu_c)``: ``query (Q, d)``, ``mu (N, d)``, ``cov (d, d)`` -> ``(Q, N)``."""
    chol = torch.linalg.cholesky(cov)
    diff = query[:, None] - mu[None]                                          # (Q, N, d)
    white = torch.linalg.solve_triangular(chol, diff.reshape(-1, diff.shape[-1]).T, upper=False)
    return -white.pow(2).sum(0).view(query.shape[0], mu.shape[0])


def diagonal_logits(query: torch.Tensor, mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Per-class diagonal Gaussian log-likelihood (up to a constant): ``var (N, d)`` -> ``(Q, N)``."""
    diff = query[:, None] - mu[None]                                          # (Q, N, d)
    return -0.5 * (diff.pow(2) / var[None] + var.log()[None]).sum(-1)


# --------------------------------------------------------------------------------------------
# the learner: ProtoNet from the core plus the transfer module
# --------------------------------------------------------------------------------------------
class MVT(MetaLearner):
    """MVT-style learner on top of the core's :class:`~tutor.meta.ProtoNet`.

    Meta-parameters ``{"net": encoder, "transfer": phi}``.  Episodes must carry donors
    (``EpisodeSampler(..., donors=D, donor_shots=M_d)``) with ``M_d >= 2``.
    """

    def __init__(self, model, config: MVTConfig | None = None):
        self.proto = ProtoNet(model)
        self.model = model
        self.config = config or MVTConfig()
        dim = getattr(model, "embedding_dim", None) or getattr(model, "hidden", None)
        if isinstance(dim, (tuple, list)):
            dim = dim[-1]
        self.dim = int(dim)

    def init(self, gen=0, device=None, dtype=torch.float32) -> dict:
        gen = gen if isinstance(gen, torch.Generator) else torch.Generator().manual_seed(int(gen))
        meta = self.proto.init(gen, device, dtype)
        meta["transfer"] = {k: t.to(device).requires_grad_() for k, t in
                            transfer_init(self.dim, self.config.hidden, gen, dtype).items()}
        return meta

    def _embed(self, meta, episode):
        n = episode.support_x.shape[0]
        emb = self.model.embed(meta["net"], torch.cat([episode.support_x, episode.query_x]))
        return emb[:n], emb[n:]

    def _donors(self, meta, episode):
        if episode.donor_x is None:
            raise ValueError("MVT needs episodes with donor classes: build the EpisodeSampler with donors >= 1")
        dx = episode.donor_x                                                  # (D, M_d, *X)
        h = self.model.embed(meta["net"], dx.flatten(0, 1)).view(dx.shape[0], dx.shape[1], -1)
        return donor_deviations(h)

    def _picked(self, meta, episode, mu, m: int):
        """Donor deviations picked for ``m`` virtual samples per target: ``vv (N, m, d)``, their
        donors' stds ``(N, m, d)``, the targets' means repeated ``(N, m, d)`` and the generator."""
        v, _, sigma_d = self._donors(meta, episode)
        gen = torch.Generator().manual_seed(int(episode.seed) if episode.seed is not None else 0)
        idx = pick_deviations(v.shape[0], v.shape[1], mu.shape[0], m, gen).to(mu.device)
        vv = v[idx[..., 0], idx[..., 1]]                                      # (N, m, d)
        return vv, sigma_d[idx[..., 0]], mu[:, None].expand_as(vv), gen

    def transferred(self, meta, episode, mu, m: int) -> torch.Tensor:
        """Transferred deviations ``v~ (N, m, d)`` for the targets' means ``mu (N, d)``."""
        vv, sd, mu_rep, gen = self._picked(meta, episode, mu, m)
        kind = self.config.transfer
        if kind == "naive":
            return naive_transfer(vv)
        if kind in ("gated", "query_matching"):
            return gated_transfer(meta["transfer"], mu_rep, vv)
        if kind == "gate_zero":
            return gated_transfer(meta["transfer"], mu_rep, vv, g=torch.zeros_like(vv))
        if kind == "stats":
            return stats_transfer(meta["transfer"], mu_rep, vv, sd)
        return matched_noise(vv, gen)

    def openness(self, meta, episodes, m: int | None = None) -> float:
        """:func:`gate_openness` over ``episodes`` (mean of per-episode ratios), no gradients."""
        m = m or self.config.test_virtual
        ratios = []
        with torch.no_grad():
            for ep in episodes:
                hs, _ = self._embed(meta, ep)
                mu = prototype_logits_means(hs, ep.support_y, ep.classes.shape[-1])
                vv = self._picked(meta, ep, mu, m)[0]
                ratios.append(gate_openness(self.transferred(meta, ep, mu, m), vv))
        return sum(ratios) / len(ratios)

    def task_loss(self, meta, episode):
        _check_mvt_episode(episode)
        ways = episode.classes.shape[-1]
        hs, hq = self._embed(meta, episode)
        mu = prototype_logits_means(hs, episode.support_y, ways)              # (N, d)
        if self.config.transfer == "query_matching":
            return self._query_matching_loss(meta, episode, hs, hq, mu, ways)
        h_virtual = virtual_samples(mu, self.transferred(meta, episode, mu, self.config.virtual))
        if self.config.option == "P":
            logits = augmented_prototype_logits(hs, episode.support_y, hq, ways, h_virtual)
        else:
            logits = prototype_logits(hs, episode.support_y, hq, ways)
        loss = F.cross_entropy(logits, episode.query_y)                       # L_Q
        if self.config.virtual and self.config.lambda_v:
            loss = loss + self.config.lambda_v * virtual_loss(h_virtual, mu)  # + lambda_V L_V
        return loss, {"loss": loss.detach(), "accuracy": accuracy(logits.detach(), episode.query_y)}

    def _query_matching_loss(self, meta, episode, hs, hq, mu, ways):
        """``L_Q + lambda_V L_V + lambda_M L_match``: L_V trains theta only (phi enters it detached);
        L_match (:func:`query_matching_loss`) trains phi only (features enter it detached)."""
        logits = prototype_logits(hs, episode.support_y, hq, ways)
        loss = F.cross_entropy(logits, episode.query_y)                       # L_Q
        if self.config.virtual:
            vv, _, mu_rep, _ = self._picked(meta, episode, mu, self.config.virtual)
            if self.config.lambda_v:
                phi_stopped = {k: t.detach() for k, t in meta["transfer"].items()}
                h_virtual = virtual_samples(mu, gated_transfer(phi_stopped, mu_rep, vv))
                loss = loss + self.config.lambda_v * virtual_loss(h_virtual, mu)
            if self.config.lambda_m:
                v_phi = gated_transfer(meta["transfer"], mu_rep.detach(), vv.detach())
                r = (hq - mu[episode.query_y]).detach()
                loss = loss + self.config.lambda_m * query_matching_loss(v_phi, r)
        return loss, {"loss": loss.detach(), "accuracy": accuracy(logits.detach(), episode.query_y)}

    def test_logits(self, meta, episode, head: str | None = None) -> torch.Tensor:
        """Query logits with the chosen test-time head (default ``config.head``)."""
        head = head or self.config.head
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        _check_test_virtual(head, self.config.test_virtual)
        _check_mvt_episode(episode)
        ways = episode.classes.shape[-1]
        hs, hq = self._embed(meta, episode)
        if head == "prototype":
            return prototype_logits(hs, episode.support_y, hq, ways)
        mu = prototype_logits_means(hs, episode.support_y, ways)
        v_t = self.transferred(meta, episode, mu, self.config.test_virtual)   # (N, M, d)
        if head == "augmented":
            return augmented_prototype_logits(hs, episode.support_y, hq, ways, virtual_samples(mu, v_t))
        if head == "mahalanobis":
            return mahalanobis_logits(hq, mu, transferred_covariance(v_t, self.config.shrinkage))
        var = v_t.pow(2).mean(1)                                              # (N, d), per class
        s = self.config.shrinkage
        return diagonal_logits(hq, mu, (1 - s) * var + s * var.mean(-1, keepdim=True) + 1e-6)

    def evaluate(self, meta, episode, head: str | None = None) -> dict:
        with torch.no_grad():
            logits = self.test_logits(meta, episode, head)
            return {"loss": F.cross_entropy(logits, episode.query_y).item(),
                    "accuracy": accuracy(logits, episode.query_y).item()}


def prototype_logits_means(support_emb: torch.Tensor, support_y: torch.Tensor, ways: int) -> torch.Tensor:
    """``mu_c``: the class means ``(ways, d)`` that ProtoNet's prototypes are."""
    onehot = F.one_hot(support_y, ways).to(support_emb.dtype)
    return onehot.T @ support_emb / onehot.sum(0)[:, None]


# --------------------------------------------------------------------------------------------
# glyph episodes with a shared nuisance (§6.2)
# --------------------------------------------------------------------------------------------
def shared_nuisance(images: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """The same *kind* of variation for every class: ``(n, 1, H, W)`` -> ``(n, 1, H, W)``.

    Per image: rotation up to 20 deg x strength, inverse scale in [1 - 0.15 s, 1 + 0.2 s], shear up to
    0.3 s, shift up to 0.12 s (grid units), stroke dilation with probability 0.3 s, pixel noise 0.05 s.
    ``strength = 0`` returns the images unchanged."""
    if strength < 0:
        raise ValueError(f"nuisance strength must be >= 0, got {strength}")
    if strength == 0:
        return images
    n = images.shape[0]
    u = lambda: torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1  # noqa: E731
    angle, shear = u() * 0.35 * strength, u() * 0.3 * strength
    scale = 1 + 0.025 * strength + u() * 0.175 * strength
    shift = torch.stack([u(), u()], 1) * 0.12 * strength
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos * scale, (-sin + shear) * scale
    theta[:, 1, 0], theta[:, 1, 1] = sin * scale, cos * scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False).to(images.dtype)
    out = F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
    dilate = (torch.rand(n, generator=gen) < 0.3 * strength).to(images.dtype)[:, None, None, None]
    out = dilate * F.max_pool2d(out, 3, 1, 1) + (1 - dilate) * out
    noise = torch.randn(out.shape, generator=gen).to(images.dtype) * 0.05 * strength
    return (out + noise).clamp(0, 1)


class NuisanceEpisodes:
    """Wrap an :class:`EpisodeSampler`: every image of an episode (support, query, donors) gets
    :func:`shared_nuisance` drawn from the episode's own seed, so a fixed episode looks the same to
    every method.  Has ``sample`` and ``batch`` like the sampler (works with ``meta_train`` and
    ``fixed_episodes``).  The sampler's images may be ``uint8`` (0-255, as the glyph cache stores them,
    a quarter of the memory): each episode is converted to float in [0, 1] (``x / 255``, the same values
    as ``load_glyphs``'s float bank) before the nuisance."""

    def __init__(self, sampler: EpisodeSampler, strength: float = 1.0):
        if strength < 0:
            raise ValueError(f"nuisance strength must be >= 0, got {strength}")
        self.sampler, self.strength = sampler, strength

    def sample(self, gen=0) -> Episode:
        ep = self.sampler.sample(gen)
        g = torch.Generator().manual_seed(int(ep.seed))

        def warp(x):
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x
            return shared_nuisance(x.flatten(0, -4), g, self.strength).view_as(x)

        return Episode(warp(ep.support_x), ep.support_y, warp(ep.query_x), ep.query_y, ep.classes,
                       None if ep.donor_x is None else warp(ep.donor_x), ep.params, ep.seed)

    def batch(self, tasks: int, gen=0) -> Episode:
        gen = gen if isinstance(gen, torch.Generator) else torch.Generator().manual_seed(int(gen))
        return stack_episodes([self.sample(gen) for _ in range(tasks)])


def mvt_samplers(images: torch.Tensor, base: list[int], novel: list[int], ways: int = 5, shots: int = 1,
                 queries: int = 10, test_queries: int = 15, donors: int = 4, donor_shots: int = 5,
                 strength: float = 1.0) -> tuple[NuisanceEpisodes, NuisanceEpisodes]:
    """Meta-training episodes on ``base`` classes (donors: other base classes) and evaluation episodes
    on ``novel`` classes whose donors are still base classes (novel classes never supply variation)."""
    overlap = set(base) & set(novel)
    if overlap:
        raise ValueError(f"the donor pool (base classes) overlaps the target classes: {sorted(overlap)[:5]}...; "
                         "donors must be disjoint from the targets")
    if donors < 1:
        raise ValueError(f"donors must be >= 1 for variance transfer, got {donors}")
    if donor_shots < 2:
        raise ValueError(f"donor_shots must be >= 2 (a donor needs a spread), got {donor_shots}")
    if donors > len(base) - ways:
        raise ValueError(f"donors={donors} asks for more donor classes than the {len(base) - ways} base classes "
                         f"left outside a {ways}-way training episode")
    train = EpisodeSampler(images, base, ways, shots, queries, donors, donor_shots)
    test = EpisodeSampler(images, novel, ways, shots, test_queries, donors, donor_shots, donor_classes=base)
    return NuisanceEpisodes(train, strength), NuisanceEpisodes(test, strength)


# --------------------------------------------------------------------------------------------
# the 2-D shared-covariance toy (§3.6, §6.1), vectorised over episodes, float64
# --------------------------------------------------------------------------------------------
@dataclass
class ToyConfig:
    """The 2-D toy of notes §3.6 (defaults there)."""

    ways: int = 5
    """Target classes per episode."""
    shots: int = 1
    """Support points per target."""
    queries: int = 50
    """Query points per target."""
    donors: int = 10
    """Donor classes."""
    donor_samples: int = 20
    """Samples per donor class."""
    virtual: int = 20
    """Virtual samples per target."""
    mean_std: float = 2.5
    """Std of the class means around the origin."""
    stds: tuple[float, float] = (3.0, 0.4)
    """Axis stds of the shared covariance."""
    angle: float = 0.6
    """Rotation of the shared covariance (radians)."""
    per_class_cov: bool = False
    """Each class draws its own random rotation instead of sharing one (transfer then misleads)."""

    def __post_init__(self):
        for name in ("ways", "shots", "queries", "donors", "donor_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.virtual, int) or self.virtual < 0:
            raise ValueError(f"virtual must be a non-negative integer, got {self.virtual!r}")
        if self.donor_samples < 2:
            raise ValueError("donor_samples must be >= 2: a donor needs a spread")


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)   # (..., 2, 2)


def toy_episodes(cfg: ToyConfig, episodes: int, seed: int = 0) -> dict:
    """Seeded toy episodes: ``support (E, N, K, 2)``, ``query (E, N, Q, 2)``, ``donor (E, D, Md, 2)``,
    ``cov (E, N, 2, 2)`` (the targets' true covariances), float64."""
    g = torch.Generator().manual_seed(seed)
    d64 = torch.float64
    n_cls = cfg.ways + cfg.donors
    if cfg.per_class_cov:
        angles = torch.rand(episodes, n_cls, generator=g, dtype=d64) * math.pi
    else:
        angles = torch.full((episodes, n_cls), cfg.angle, dtype=d64)
    chol = _rotation(angles) @ torch.diag(torch.tensor(cfg.stds, dtype=d64))  # (E, C, 2, 2)
    means = torch.randn(episodes, n_cls, 2, generator=g, dtype=d64) * cfg.mean_std

    def draw(cls, n):
        z = torch.randn(episodes, len(cls), n, 2, generator=g, dtype=d64)
        return means[:, cls, None] + z @ chol[:, cls].transpose(-1, -2)

    tgt, don = list(range(cfg.ways)), list(range(cfg.ways, n_cls))
    return {"support": draw(tgt, cfg.shots), "query": draw(tgt, cfg.queries), "donor": draw(don, cfg.donor_samples),
            "cov": chol[:, tgt] @ chol[:, tgt].transpose(-1, -2), "means": means[:, tgt]}


def toy_transfer(donor: torch.Tensor, ways: int, m: int, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Transferred deviations ``(E, N, m, 2)`` from donors ``(E, D, Md, 2)``: ``"naive"``, ``"stats"``
    (divide each axis by the donor's std, multiply by the mean donor std: a per-axis rescaling, so the
    correlation -- the rotation of the shared covariance -- is kept; with a covariance shared by all
    classes it is close to naive), ``"noise"`` (isotropic, matched norm) or ``"none"`` (zeros)."""
    if kind not in ("naive", "stats", "noise", "none"):
        raise ValueError(f"toy transfer must be 'naive', 'stats', 'noise' or 'none', got {kind!r}")
    v, _, sigma_d = donor_deviations(donor.flatten(0, 1))
    e, d_cls, md = donor.shape[:3]
    v, sigma_d = v.view(e, d_cls, md, 2), sigma_d.view(e, d_cls, 2)
    di = torch.randint(0, d_cls, (e, ways, m), generator=gen)
    ji = torch.randint(0, md, (e, ways, m), generator=gen)
    ei = torch.arange(e)[:, None, None]
    vv = v[ei, di, ji]                                                        # (E, N, m, 2)
    if kind == "naive":
        return naive_transfer(vv)
    if kind == "stats":
        return stats_transfer({}, None, vv, sigma_d[ei, di], sigma_c=sigma_d.mean(1)[:, None, None])
    if kind == "noise":
        return matched_noise(vv, gen)
    return torch.zeros_like(vv)


def toy_accuracies(cfg: ToyConfig, episodes: int = 500, seed: int = 0, transfer: str = "naive",
                   data: dict | None = None) -> dict:
    """Per-episode accuracy ``(E,)`` of four classifiers on the same seeded episodes:
    ``"euclidean"`` (mean prototype), ``"augmented"`` (prototype averaged with the virtual samples,
    option P), ``"mahalanobis"`` (shared covariance from the transferred deviations) and ``"oracle"``
    (the true covariance of each class).  Also returns the data and the virtual samples."""
    data = data if data is not None else toy_episodes(cfg, episodes, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    sup, qry = data["support"], data["query"]                                # (E, N, K, 2), (E, N, Q, 2)
    e, n = sup.shape[:2]
    mu = sup.mean(2)                                                          # (E, N, 2)
    v_t = toy_transfer(data["donor"], n, cfg.virtual, transfer, gen)          # (E, N, M, 2)
    virt = mu[:, :, None] + v_t
    y = torch.arange(n).repeat_interleave(qry.shape[2])
    p_aug = (cfg.shots * mu + virt.sum(2)) / (cfg.shots + cfg.virtual)
    flat = v_t.flatten(1, 2)                                                  # (E, N*M, 2)
    if flat.shape[1] >= 2 and transfer != "none":
        cov = flat.transpose(1, 2) @ flat / flat.shape[1] + 1e-6 * torch.eye(2, dtype=flat.dtype)
    else:
        cov = torch.eye(2, dtype=sup.dtype).expand(e, 2, 2)
    prec, prec_true = torch.linalg.inv(cov), torch.linalg.inv(data["cov"])    # (E, 2, 2), (E, N, 2, 2)
    logdet_true = torch.logdet(data["cov"])                                   # (E, N)
    out = {k: [] for k in ("euclidean", "augmented", "mahalanobis", "oracle")}
    for s in range(0, e, 200):                                                # chunks bound the memory
        sl = slice(s, s + 200)
        q = qry[sl].flatten(1, 2)                                             # (e, N*Q, 2)
        diff = q[:, :, None] - mu[sl, None]                                   # (e, NQ, N, 2)
        scores = {"euclidean": -diff.pow(2).sum(-1),
                  "augmented": -(q[:, :, None] - p_aug[sl, None]).pow(2).sum(-1),
                  "mahalanobis": -torch.einsum("eqni,eij,eqnj->eqn", diff, prec[sl], diff),
                  "oracle": -torch.einsum("eqni,enij,eqnj->eqn", diff, prec_true[sl], diff) - logdet_true[sl, None]}
        for k, logits in scores.items():
            out[k].append((logits.argmax(-1) == y).double().mean(-1))
    return {**{k: torch.cat(v) for k, v in out.items()}, "mu": mu, "virtual": virt, "prototype_augmented": p_aug,
            "cov": cov, "data": data}


# --------------------------------------------------------------------------------------------
# the feature-space world of the regime map: h = mu_c + L n + sigma eps (issue 18, §3)
# --------------------------------------------------------------------------------------------
WORLD_TRANSFERS = ("none", "naive", "noise", "rotated", "learned", "support")
WORLD_OBJECTIVES = ("query_matching", "virtual_loss")


@dataclass
class WorldConfig:
    """A fixed feature space where MVT's premise is exactly true (or, with ``shared=False``, false).

    Every class c has a mean ``mu_c ~ N(0, mean_std^2 I)``; a sample is ``mu_c + L n + noise eps`` with
    ``n ~ N(0, I_rank)``, ``eps ~ N(0, I_dim)`` and ``L = nuisance * (an orthonormal dim x rank basis)``:
    ONE basis for every class of a world (``shared=True``), or each class its own (``shared=False``)."""

    dim: int = 32
    """Feature dimension d."""
    rank: int = 3
    """Rank of the nuisance loadings L."""
    nuisance: float = 2.5
    """Std of each nuisance factor (0: no nuisance, only isotropic noise)."""
    noise: float = 1.0
    """Std of the isotropic noise eps."""
    mean_std: float = 0.9
    """Std of the class means."""
    ways: int = 5
    """Target classes per episode."""
    shots: int = 1
    """Support samples per target."""
    queries: int = 15
    """Query samples per target."""
    donors: int = 10
    """Donor classes per episode (fresh classes of the same world, never the targets)."""
    donor_samples: int = 20
    """Samples per donor class."""
    shared: bool = True
    """One nuisance basis for all classes (MVT's premise) or one per class (the premise fails)."""

    def __post_init__(self):
        for name in ("dim", "rank", "ways", "shots", "queries", "donors", "donor_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.rank > self.dim:
            raise ValueError(f"rank must be <= dim, got rank {self.rank} > dim {self.dim}")
        if self.donor_samples < 2:
            raise ValueError("donor_samples must be >= 2: a donor needs a spread")
        for name in ("nuisance", "noise", "mean_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def _orthonormal(shape_lead: tuple, dim: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """Random orthonormal ``(..., dim, k)`` frames (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(*shape_lead, dim, k, generator=gen))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def world_basis(cfg: WorldConfig, seed: int) -> torch.Tensor:
    """The world's shared nuisance basis ``(dim, rank)`` (orthonormal), fixed by ``seed``."""
    return _orthonormal((), cfg.dim, cfg.rank, torch.Generator().manual_seed(int(seed)))


def world_episodes(cfg: WorldConfig, episodes: int, basis: torch.Tensor, gen: torch.Generator) -> dict:
    """``support (E, N, K, d)``, ``query (E, N, Q, d)``, ``donor (E, D, Md, d)``: fresh classes per episode,
    nuisance loadings ``cfg.nuisance * basis`` (shared) or a fresh basis per class (``shared=False``)."""
    n_cls = cfg.ways + cfg.donors
    means = torch.randn(episodes, n_cls, cfg.dim, generator=gen) * cfg.mean_std
    if cfg.shared:
        loadings = (cfg.nuisance * basis).expand(episodes, n_cls, cfg.dim, cfg.rank)
    else:
        loadings = cfg.nuisance * _orthonormal((episodes, n_cls), cfg.dim, cfg.rank, gen)

    def draw(cls: slice, n: int) -> torch.Tensor:
        c = means[:, cls].shape[1]
        factors = torch.randn(episodes, c, n, cfg.rank, generator=gen)
        eps = torch.randn(episodes, c, n, cfg.dim, generator=gen)
        return means[:, cls, None] + factors @ loadings[:, cls].transpose(-1, -2) + cfg.noise * eps

    tgt, don = slice(0, cfg.ways), slice(cfg.ways, n_cls)
    return {"support": draw(tgt, cfg.shots), "query": draw(tgt, cfg.queries), "donor": draw(don, cfg.donor_samples)}


def world_deviations(data: dict, m: int, gen: torch.Generator):
    """Donor deviations picked for ``m`` virtual samples per target: ``v (E, N, m, d)``, and ``mu (E, N, d)``."""
    donor = data["donor"]
    e, d_cls, md, dim = donor.shape
    v = donor - donor.mean(2, keepdim=True)
    di = torch.randint(0, d_cls, (e, data["support"].shape[1], m), generator=gen)
    ji = torch.randint(0, md, di.shape, generator=gen)
    return v[torch.arange(e)[:, None, None], di, ji], data["support"].mean(2)


def world_transfer(data: dict, kind: str, m: int, gen: torch.Generator, phi: dict | None = None):
    """Transferred deviations ``(E, N*m, d)`` (or the support's own deviations for ``"support"``) and the
    donor deviations they came from.  ``"naive"``: raw donor deviations; ``"noise"``: isotropic, matched
    norm; ``"rotated"``: donor deviations turned by a random orthogonal matrix per episode (same spectrum,
    wrong directions); ``"learned"``: the gate ``phi`` applied as in :func:`gated_transfer`;
    ``"support"``: the pooled within-class deviations of the support (needs ``shots >= 2``, no donors)."""
    if kind not in WORLD_TRANSFERS:
        raise ValueError(f"world transfer must be one of {WORLD_TRANSFERS}, got {kind!r}")
    v, mu = world_deviations(data, m, gen)
    e, n, _, dim = v.shape
    if kind == "support":
        sup = data["support"]
        if sup.shape[2] < 2:
            raise ValueError("the support's own spread needs shots >= 2")
        return (sup - mu[:, :, None]).flatten(1, 2), v.flatten(1, 2)
    if kind == "naive":
        out = v
    elif kind == "noise":
        out = matched_noise(v, gen)
    elif kind == "rotated":
        rot = _orthonormal((e,), dim, dim, gen)                               # (E, d, d)
        out = (v.flatten(1, 2) @ rot.transpose(-1, -2)).view_as(v)
    elif kind == "learned":
        if phi is None:
            raise ValueError("the learned transfer needs phi")
        out = gated_transfer(phi, mu[:, :, None].expand_as(v), v)
    else:
        out = torch.zeros_like(v)
    return out.flatten(1, 2), v.flatten(1, 2)


def world_accuracy(data: dict, v_tilde: torch.Tensor | None, shrinkage: float = 1.0, chunk: int = 100) -> torch.Tensor:
    """Per-episode query accuracy ``(E,)`` of the shared-Mahalanobis head whose covariance is
    :func:`transferred_covariance` of ``v_tilde (E, n, d)`` with ``shrinkage`` (plus a ridge of 1e-4 times
    the mean variance, so a rank-deficient estimate stays invertible); ``v_tilde=None`` is the
    Euclidean prototype (ProtoNet on these features).  ``shrinkage=1`` is Euclidean too (the covariance is
    a multiple of I)."""
    sup, qry = data["support"], data["query"]
    mu = sup.mean(2)                                                          # (E, N, d)
    e, n, q, dim = qry.shape
    y = torch.arange(n).repeat_interleave(q)
    out = []
    for s in range(0, e, chunk):
        sl = slice(s, s + chunk)
        diff = qry[sl].flatten(1, 2)[:, :, None] - mu[sl, None]               # (e, NQ, N, d)
        if v_tilde is None:
            dist = diff.pow(2).sum(-1)
        else:
            vt = v_tilde[sl]                                                  # (e, n, d), about zero
            cov = vt.transpose(1, 2) @ vt / vt.shape[1]
            iso = (torch.diagonal(cov, dim1=1, dim2=2).mean(-1) + 1e-6)[:, None, None] * torch.eye(dim)
            cov = (1 - shrinkage) * cov + shrinkage * iso + 1e-4 * iso        # a small ridge keeps it invertible
            prec = torch.cholesky_inverse(torch.linalg.cholesky(cov))         # (e, d, d)
            dist = torch.einsum("eqni,eij,eqnj->eqn", diff, prec, diff)
        out.append((dist.argmin(-1) == y).float().mean(-1))
    return torch.cat(out)


def world_objective(objective: str, phi: dict, data: dict, m: int, gen: torch.Generator) -> torch.Tensor:
    """Mean over a batch of world episodes of ``"query_matching"`` (:func:`query_matching_loss`, the
    query deviations ``h_q - mu_c``) or ``"virtual_loss"`` (L_V, the objective that closes the gate)."""
    if objective not in WORLD_OBJECTIVES:
        raise ValueError(f"objective must be one of {WORLD_OBJECTIVES}, got {objective!r}")
    v, mu = world_deviations(data, m, gen)
    vt = gated_transfer(phi, mu[:, :, None].expand_as(v), v)                 # (E, N, m, d)
    if objective == "query_matching":
        r = (data["query"] - mu[:, :, None]).flatten(1, 2)                    # (E, NQ, d)
        return torch.stack([query_matching_loss(a, b) for a, b in zip(vt, r)]).mean()
    return torch.stack([virtual_loss(virtual_samples(mu_c, a), mu_c)
                        for a, mu_c in zip(vt, mu)]).mean()


def train_world_transfer(cfg: WorldConfig, basis: torch.Tensor, objective: str = "query_matching", steps: int = 200,
                         lr: float = 1e-2, seed: int = 0, batch: int = 16, virtual: int = 20,
                         hidden: int = 32) -> tuple[dict, list]:
    """Meta-train the gate phi on fresh episodes of the world (base classes) with ``objective``; the
    features are fixed, so phi is the only thing learned.  Returns ``(phi, losses)``."""
    gen = torch.Generator().manual_seed(int(seed))
    phi = {k: t.requires_grad_() for k, t in transfer_init(cfg.dim, hidden, gen).items()}
    opt = torch.optim.Adam(list(phi.values()), lr=lr)
    losses = []
    for _ in range(steps):
        loss = world_objective(objective, phi, world_episodes(cfg, batch, basis, gen), virtual, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {k: t.detach() for k, t in phi.items()}, losses
