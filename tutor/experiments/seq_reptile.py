"""A real multilingual experiment for Sequential Reptile, offline: CLDR names in many languages.

    python -m tutor.experiments.seq_reptile pretrain           # writes runs/seq_reptile_mlm.pt (the shipped
        # one is data/checkpoints/seq_reptile_mlm.pt: --out data/checkpoints/seq_reptile_mlm.pt --overwrite)
    python -m tutor.experiments.seq_reptile --seeds 0 1 2 3 4 --out data/results/seq_reptile.json --overwrite

**"Multilingual model".**  A small character-level encoder (embedding 32, two width-5 convolutions of
64 channels with a residual connection; ``CharEncoder``) pretrained by masked-character prediction
(15% of the characters of a name masked, at least one) on the names of territories, languages,
currencies and scripts of 41 CLDR locales (``tutor.data.cldr.pretraining_corpus``).  10% of every
locale's names are held out and never trained on: the masked-character loss there measures
forgetting, as the paper measures the masked-LM loss of the fine-tuned mBERT.

**Tasks.**  Entity typing ("is this string the name of a territory, a language or a currency?") in
each of the 9 TyDi-QA languages (ar bn en fi id ko ru sw te), 32 names per class for training, 16
for validation, 48 for testing (``tutor.data.cldr.build_typing_tasks``); zero-shot evaluation on 8
languages never fine-tuned on (de es hi tr vi el fa ta).  Validation and test names of every
language are also excluded from pretraining.

**Methods, same budget** (``budget`` mini-batch gradients of 16 names, i.e. the same number of
names seen) and **the same tuning grid** (the AdamW learning rate from 1e-3 ... 0.3, chosen by mean
validation accuracy at a separate tuning seed; the grid was widened twice, from 3e-4 ... 1e-2, until no
method's choice sat on its edge):

* MTL: AdamW on the summed loss of one batch per language (mixed batches), ``budget / T`` steps;
* PCGrad, GradVac: the same, with the per-language gradients combined by ``tutor.papers.seq_reptile``;
* Seq-Reptile: trajectories of K = 36 AdamW steps across languages (random permutations), then
  ``phi <- phi - eta (phi - theta_K)`` with eta = 0.5;
* Parallel Reptile: K / T = 4 AdamW steps per language from phi, then interpolation to their mean;
* STL: one model per language, ``budget / T`` AdamW steps on its own batches.

Fine-tuned: the encoder and a new typing head (3 classes) on the mean-pooled features; the
pretrained masked-character head is kept fixed for the forgetting measurement.  Measured: per-
language test accuracy, zero-shot accuracy, forgetting (held-out masked-character loss after minus
before), and the mean pairwise inter-language gradient cosine at ``phi`` during training (on fixed
probe batches of training names).  Our choices (the paper's are unknown or are for mBERT): every
architecture and size above, K, eta, the order sampler, Adam state reset per trajectory, weight
decay 0.01, the budget.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tutor.data.cldr import (
    TYDI_LANGUAGES,
    CharVocab,
    build_typing_tasks,
    build_vocab,
    encode,
    pretraining_corpus,
)
from tutor.divergence import DivergenceGuard
from tutor.outputs import add_output_arguments, atomic_write_json, dry_run_report, resolve_output
from tutor.papers.seq_reptile import (
    InnerOptimizer,
    gradvac,
    mean_inter_task_cosine,
    mtl_gradient,
    parallel_reptile_step,
    pcgrad,
    random_order,
    seq_reptile_step,
)
from tutor.train import progress_enabled
from tutor.validation import as_float, as_int, cli_float, cli_int

__all__ = ["ZERO_SHOT", "OTHER_LOCALES", "METHODS", "CLDRConfig", "CLDRData", "build_data", "init_encoder",
           "features", "mlm_loss", "typing_logits", "Flat", "pretrain", "load_pretrained", "TypingOracle",
           "finetune", "evaluate_model", "run_seed", "tune", "main", "CHECKPOINT"]

ZERO_SHOT = ("de", "es", "hi", "tr", "vi", "el", "fa", "ta")
OTHER_LOCALES = ("fr", "pt", "it", "pl", "uk", "nl", "sv", "cs", "hu", "ro", "he", "th", "mr", "ur", "ms",
                 "ka", "hy", "kk", "az", "ne", "gu", "kn", "ml", "pa")
METHODS = ("MTL", "PCGrad", "GradVac", "Seq-Reptile", "Parallel Reptile", "STL")
CHECKPOINT = Path(__file__).resolve().parents[2] / "data" / "checkpoints" / "seq_reptile_mlm.pt"


@dataclass
class CLDRConfig:
    """The experiment's settings (defaults: the shipped results; the notebook may shrink ``budget``)."""

    languages: tuple = TYDI_LANGUAGES               # fine-tuning tasks
    zero_shot: tuple = ZERO_SHOT                    # evaluated only
    other_locales: tuple = OTHER_LOCALES            # pretraining only
    categories: tuple = ("territories", "languages", "currencies")   # the typing labels
    n_train: int = 32                               # names per class and language for fine-tuning
    n_val: int = 16                                 # ... for choosing the learning rate
    n_test: int = 48                                # ... for scoring
    max_len: int = 32                               # characters after NFD (98% of names fit)
    emb: int = 32                                   # character embedding width
    hidden: int = 64                                # convolution channels
    width: int = 5                                  # convolution width
    mask_rate: float = 0.15                         # masked-character rate (pretraining and forgetting)
    pretrain_steps: int = 5000                      # Adam steps of masked-character pretraining
    pretrain_batch: int = 128
    pretrain_lr: float = 3e-3
    budget: int = 1800                              # mini-batch gradients per fine-tuning run
    batch: int = 16                                 # names per mini-batch (the paper's NER batch)
    K: int = 36                                     # Seq-Reptile inner steps (4 per language)
    eta: float = 0.5                                # Reptile outer rate
    weight_decay: float = 0.01                      # AdamW weight decay
    lr_grid: tuple = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)  # the one tuning grid for every method
    probes: int = 8                                 # gradient-cosine measurements per run
    probe_size: int = 48                            # training names per language in a probe batch
    heldout_eval: int = 2000                        # held-out pretraining names scored for forgetting

    def __post_init__(self):
        for name in ("budget", "batch", "K", "probes", "pretrain_steps"):
            setattr(self, name, as_int(getattr(self, name), f"CLDRConfig.{name}", 1))
        self.eta = as_float(self.eta, "CLDRConfig.eta", 0.0, strict=True)
        if not 0 < self.eta <= 1:
            raise ValueError(f"CLDRConfig.eta must be in (0, 1], got {self.eta}")
        if self.K % len(self.languages):
            raise ValueError(f"CLDRConfig.K={self.K} must be a multiple of the {len(self.languages)} languages")
        if self.budget < self.K:                    # Seq-Reptile would make no outer step: an untrained "result"
            raise ValueError(f"CLDRConfig.budget={self.budget} must be >= K={self.K} (one Seq-Reptile outer step); "
                             "a smaller budget would report the untrained start")


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
@dataclass
class CLDRData:
    """Encoded splits: ``train[lang] = (x (n, max_len) long, y (n,) long)``; the same for val, test and
    zero-shot test; ``heldout = (x, masked x, mask)`` for the forgetting measurement."""

    vocab: CharVocab
    train: dict
    val: dict
    test: dict
    zero_shot: dict
    heldout: tuple
    pretrain_x: torch.Tensor = field(repr=False, default=None)


def _mask(x: torch.Tensor, rate: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a ``rate`` of the characters of every row (at least one): ``(masked x, mask (n, L) bool)``."""
    real = x != CharVocab.PAD
    mask = (torch.rand(x.shape, generator=gen) < rate) & real
    first = torch.multinomial(real.float(), 1, generator=gen).squeeze(1)        # one real position per row
    mask[torch.arange(x.shape[0]), first] = True
    return x.masked_fill(mask, CharVocab.MASK), mask


def build_data(cfg: CLDRConfig, vocab: CharVocab | None = None, with_pretraining: bool = False) -> CLDRData:
    """Typing splits for the fine-tuning and zero-shot languages and the held-out pretraining names."""
    ft = build_typing_tasks(cfg.languages, cfg.categories, cfg.n_train, cfg.n_val, cfg.n_test)
    zs = build_typing_tasks(cfg.zero_shot, cfg.categories, 0, cfg.n_val, cfg.n_test) if cfg.zero_shot else {}
    scored = set()
    for task in list(ft.values()) + list(zs.values()):
        scored |= set(task.val.strings) | set(task.test.strings)
    locales = tuple(dict.fromkeys(cfg.languages + cfg.zero_shot + cfg.other_locales))
    corpus, held = pretraining_corpus(locales, exclude=scored)
    vocab = vocab or build_vocab(corpus)

    def enc(split):
        return encode(split.strings, vocab, cfg.max_len), torch.tensor(split.labels)
    gen = torch.Generator().manual_seed(12345)                     # fixed: the same masks for every run
    held = [held[i] for i in torch.randperm(len(held), generator=gen)[:cfg.heldout_eval].tolist()]
    hx = encode(held, vocab, cfg.max_len)
    hm, mask = _mask(hx, cfg.mask_rate, gen)
    return CLDRData(vocab, {k: enc(t.train) for k, t in ft.items()}, {k: enc(t.val) for k, t in ft.items()},
                    {k: enc(t.test) for k, t in ft.items()}, {k: enc(t.test) for k, t in zs.items()},
                    (hx, hm, mask), encode(corpus, vocab, cfg.max_len) if with_pretraining else None)


# --------------------------------------------------------------------------------------------
# the network (a pure function of a parameter dict)
# --------------------------------------------------------------------------------------------
def init_encoder(vocab_size: int, cfg: CLDRConfig, gen: torch.Generator) -> dict:
    """Parameters of the character encoder and its masked-character head."""
    E, H, W = cfg.emb, cfg.hidden, cfg.width

    def he(*shape, fan):
        return torch.randn(*shape, generator=gen) * (2 / fan) ** 0.5
    return {"emb": torch.randn(vocab_size, E, generator=gen) * 0.3,
            "conv1.weight": he(H, E, W, fan=E * W), "conv1.bias": torch.zeros(H),
            "conv2.weight": he(H, H, W, fan=H * W), "conv2.bias": torch.zeros(H),
            "mlm.weight": torch.randn(vocab_size, H, generator=gen) / H ** 0.5, "mlm.bias": torch.zeros(vocab_size)}


def features(p: dict, x: torch.Tensor) -> torch.Tensor:
    """Per-character features ``(n, L, H)`` of ids ``x (n, L)``."""
    e = F.embedding(x, p["emb"]).transpose(1, 2)                                   # (n, E, L)
    pad = p["conv1.weight"].shape[-1] // 2
    h1 = F.relu(F.conv1d(e, p["conv1.weight"], p["conv1.bias"], padding=pad))
    h2 = F.relu(F.conv1d(h1, p["conv2.weight"], p["conv2.bias"], padding=pad)) + h1
    return h2.transpose(1, 2)


def mlm_loss(p: dict, x: torch.Tensor, masked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the masked characters (nats per masked character)."""
    h = features(p, masked)[mask]                                                  # (masked, H)
    return F.cross_entropy(h @ p["mlm.weight"].T + p["mlm.bias"], x[mask])


def typing_logits(p: dict, x: torch.Tensor) -> torch.Tensor:
    """Class logits ``(n, C)`` from the mean of the features over the real characters."""
    h = features(p, x)
    real = (x != CharVocab.PAD).unsqueeze(-1).to(h.dtype)
    pooled = (h * real).sum(1) / real.sum(1).clamp_min(1)
    return pooled @ p["head.weight"].T + p["head.bias"]


class Flat:
    """A fixed order of named tensors <-> one flat vector (the form ``tutor.papers.seq_reptile`` uses)."""

    def __init__(self, params: dict):
        self.names = sorted(params)
        self.shapes = [params[k].shape for k in self.names]
        self.sizes = [math.prod(s) for s in self.shapes]

    def flatten(self, params: dict) -> torch.Tensor:
        return torch.cat([params[k].reshape(-1) for k in self.names])

    def unflatten(self, vec: torch.Tensor) -> dict:
        return {k: v.view(s) for k, v, s in zip(self.names, vec.split(self.sizes), self.shapes)}


# --------------------------------------------------------------------------------------------
# pretraining
# --------------------------------------------------------------------------------------------
def pretrain(cfg: CLDRConfig, seed: int = 0, progress: bool | None = None) -> tuple[dict, CLDRData, list]:
    """Masked-character pretraining on the CLDR corpus; returns ``(params, data, loss history)``."""
    data = build_data(cfg, with_pretraining=True)
    gen = torch.Generator().manual_seed(seed)
    p = {k: v.requires_grad_() for k, v in init_encoder(len(data.vocab), cfg, gen).items()}
    opt = torch.optim.Adam(p.values(), lr=cfg.pretrain_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.pretrain_steps)
    n = data.pretrain_x.shape[0]
    history = []
    guard = DivergenceGuard(setting=f"pretrain_lr={cfg.pretrain_lr}", what="the masked-character loss")
    for step in _bar(range(cfg.pretrain_steps), "pretrain", progress):
        x = data.pretrain_x[torch.randint(n, (cfg.pretrain_batch,), generator=gen)]
        xm, mask = _mask(x, cfg.mask_rate, gen)
        loss = mlm_loss(p, x, xm, mask)
        guard(loss, where=f"at step {step}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
    return {k: v.detach() for k, v in p.items()}, data, history


def load_pretrained(path=CHECKPOINT) -> tuple[dict, CharVocab, CLDRConfig]:
    """The shipped pretrained encoder: ``(params, vocab, config)`` (loaded with ``weights_only``)."""
    from tutor.train import load_checkpoint

    params, info = load_checkpoint(path)
    cfg = CLDRConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["config"].items()})
    return {k: v.detach() for k, v in params.items()}, CharVocab(list(info["vocab"])), cfg


def _bar(it, desc, progress):
    if progress is None:
        progress = progress_enabled()
    return tqdm(it, desc=desc, disable=not progress, leave=False, mininterval=0.5)


# --------------------------------------------------------------------------------------------
# fine-tuning
# --------------------------------------------------------------------------------------------
class TypingOracle:
    """Gradient oracle over the languages' training names (``tutor.papers.seq_reptile.GradFn``).

    ``oracle(theta (n, dim), tasks (n,)) -> (n, dim)``: the typing-loss gradient of language
    ``tasks[i]`` at ``theta[i]`` on that language's next mini-batch (each language walks through its own
    reshuffled epochs, drawn from one generator).
    """

    def __init__(self, data: CLDRData, flat: Flat, frozen: dict, languages, batch: int, gen: torch.Generator):
        self.data, self.flat, self.frozen, self.batch, self.gen = data, flat, frozen, batch, gen
        self.languages = list(languages)
        self.num_tasks = len(self.languages)
        for lang in self.languages:
            if data.train[lang][0].shape[0] == 0:
                raise ValueError(f"language {lang!r} has no training names (an empty task)")
        self._queue = {lang: [] for lang in self.languages}
        self.calls = 0
        self.guard = DivergenceGuard(setting="the learning rate", what="the typing loss")   # tutor.divergence

    def next_batch(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        lang = self.languages[t]
        x, y = self.data.train[lang]
        q = self._queue[lang]
        while len(q) < self.batch:
            q += torch.randperm(x.shape[0], generator=self.gen).tolist()
        idx, self._queue[lang] = q[:self.batch], q[self.batch:]
        return x[idx], y[idx]

    def loss(self, theta: torch.Tensor, x, y) -> torch.Tensor:
        return F.cross_entropy(typing_logits({**self.frozen, **self.flat.unflatten(theta)}, x), y)

    def grad_at(self, theta: torch.Tensor, x, y) -> torch.Tensor:
        with torch.enable_grad():
            th = theta.detach().requires_grad_()
            loss = self.loss(th, x, y)
            self.guard(loss, where=f"at gradient call {self.calls}")
            (g,) = torch.autograd.grad(loss, th)
        return g

    def __call__(self, theta: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        tasks = torch.as_tensor(tasks).long()
        bad = tasks[(tasks < 0) | (tasks >= self.num_tasks)]
        if bad.numel():
            raise ValueError(f"unknown task(s) {bad.tolist()}; allowed are 0..{self.num_tasks - 1}")
        out = []
        for i, t in enumerate(tasks.tolist()):
            self.calls += 1
            out.append(self.grad_at(theta[..., i, :], *self.next_batch(t)))
        return torch.stack(out, -2)


def _start(pre: dict, cfg: CLDRConfig, seed: int) -> tuple[Flat, torch.Tensor, dict]:
    """The fine-tuned vector (encoder + fresh typing head, seeded) and the frozen MLM head."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    C, H = len(cfg.categories), cfg.hidden
    tuned = {k: v.clone() for k, v in pre.items() if not k.startswith("mlm.")}
    tuned["head.weight"] = torch.randn(C, H, generator=gen) / H ** 0.5
    tuned["head.bias"] = torch.zeros(C)
    flat = Flat(tuned)
    return flat, flat.flatten(tuned), {k: v for k, v in pre.items() if k.startswith("mlm.")}


def finetune(method: str, pre: dict, data: CLDRData, cfg: CLDRConfig, lr: float, seed: int = 0,
             progress: bool | None = None) -> dict:
    """Fine-tune with ``method`` for ``cfg.budget`` mini-batch gradients.

    Returns ``{"theta": {lang: flat vector} (STL) or flat vector, "flat", "frozen", "cosine": [(calls,
    mean inter-language cosine at phi)], "calls"}``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"the learning rate must be a finite number > 0, got {lr}")
    T = len(cfg.languages)
    need = cfg.K if method in ("Seq-Reptile", "Parallel Reptile") else T
    if cfg.budget < need:
        raise ValueError(f"budget={cfg.budget} is too small for {method}: one step needs {need} mini-batch gradients "
                         f"({'K' if need == cfg.K else 'one per language'}); with less it would report the untrained "
                         f"start. Use budget >= {need}")
    flat, phi, frozen = _start(pre, cfg, seed)
    gen = torch.Generator().manual_seed(seed)
    oracle = TypingOracle(data, flat, frozen, cfg.languages, cfg.batch, gen)
    oracle.guard.setting = f"the learning rate (lr={lr:g})"
    probe = [(data.train[lang][0][:cfg.probe_size], data.train[lang][1][:cfg.probe_size]) for lang in cfg.languages]
    every = max(cfg.budget // cfg.probes, 1)
    cosine = []

    def measure(vec):                                  # every `every` mini-batch gradients (probes not counted)
        if oracle.calls >= len(cosine) * every:
            g = torch.stack([oracle.grad_at(vec, x, y) for x, y in probe])     # (T, dim)
            cosine.append((oracle.calls, mean_inter_task_cosine(g).item()))

    if method == "STL":
        thetas = {}
        for t, lang in enumerate(cfg.languages):
            vec, opt = _adamw(phi.clone(), lr, cfg)
            for _ in range(cfg.budget // T):
                vec.grad = oracle(vec.detach().unsqueeze(0), torch.tensor([t]))[0]
                opt.step()
            thetas[lang] = vec.detach()
        return {"theta": thetas, "flat": flat, "frozen": frozen, "cosine": [], "calls": oracle.calls}
    if method in ("MTL", "PCGrad", "GradVac"):
        vec, opt = _adamw(phi.clone(), lr, cfg)
        targets = torch.zeros(T, T)
        for _ in _bar(range(cfg.budget // T), method, progress):
            measure(vec.detach())
            g = oracle(vec.detach().expand(T, -1), torch.arange(T))                 # (T, dim)
            if method == "MTL":
                vec.grad = mtl_gradient(g)
            elif method == "PCGrad":
                vec.grad = pcgrad(g, torch.randperm(T, generator=gen).tolist())
            else:
                vec.grad, targets = gradvac(g, targets, 0.01, torch.randperm(T, generator=gen).tolist())
            opt.step()
        measure(vec.detach())
        return {"theta": vec.detach(), "flat": flat, "frozen": frozen, "cosine": cosine, "calls": oracle.calls}
    inner = InnerOptimizer("adamw", lr, weight_decay=cfg.weight_decay)
    for _ in _bar(range(cfg.budget // cfg.K), method, progress):
        measure(phi)
        if method == "Seq-Reptile":
            phi, _ = seq_reptile_step(oracle, phi, random_order(T, cfg.K, gen), inner, cfg.eta)
        else:
            phi = parallel_reptile_step(oracle, phi, T, cfg.K // T, inner, cfg.eta)
    measure(phi)
    return {"theta": phi, "flat": flat, "frozen": frozen, "cosine": cosine, "calls": oracle.calls}


def _adamw(vec, lr, cfg):
    vec = vec.requires_grad_()
    return vec, torch.optim.AdamW([vec], lr=lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def _accuracy(params, x, y) -> float:
    return (typing_logits(params, x).argmax(-1) == y).float().mean().item()


@torch.no_grad()
def evaluate_model(run: dict, data: CLDRData, cfg: CLDRConfig, pre: dict, split: str = "test") -> dict:
    """Per-language accuracy on ``split`` ("val" or "test"), zero-shot accuracy (test only; not for STL),
    and forgetting = held-out masked-character loss of the fine-tuned encoder minus the pretrained one's."""
    sets = {"val": data.val, "test": data.test}
    if split not in sets:
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    hx, hm, mask = data.heldout
    before = mlm_loss(pre, hx, hm, mask).item()
    stl = isinstance(run["theta"], dict)

    def params(lang=None):
        vec = run["theta"][lang] if stl else run["theta"]
        return {**run["frozen"], **run["flat"].unflatten(vec)}
    acc = {lang: _accuracy(params(lang), *sets[split][lang]) for lang in cfg.languages}
    out = {"accuracy": acc, "mean_accuracy": sum(acc.values()) / len(acc)}
    if split == "test":
        zs = {} if stl else {lang: _accuracy(params(), *xy) for lang, xy in data.zero_shot.items()}
        after = [mlm_loss(params(lang), hx, hm, mask).item() for lang in (cfg.languages if stl else [None])]
        out.update(zero_shot=zs, mean_zero_shot=(sum(zs.values()) / len(zs)) if zs else None,
                   forgetting=sum(after) / len(after) - before, mlm_before=before,
                   cosine=run["cosine"])
    return out


def tune(pre: dict, data: CLDRData, cfg: CLDRConfig, methods=METHODS, seed: int = 100) -> dict:
    """Every method's learning rate from ``cfg.lr_grid``, by mean validation accuracy at a tuning seed
    (never a scored seed).  Records the table and whether the choice sits on an edge of the grid."""
    table, chosen, edge = {}, {}, {}
    for m in methods:
        table[m] = {str(lr): evaluate_model(finetune(m, pre, data, cfg, lr, seed, progress=False), data, cfg, pre,
                                            "val")["mean_accuracy"] for lr in cfg.lr_grid}
        best = max(cfg.lr_grid, key=lambda lr: table[m][str(lr)])
        chosen[m] = best
        edge[m] = len(cfg.lr_grid) > 1 and best in (cfg.lr_grid[0], cfg.lr_grid[-1])
    return {"grid": list(cfg.lr_grid), "seed": seed, "validation": table, "chosen": chosen, "on_edge": edge}


def run_seed(pre: dict, data: CLDRData, cfg: CLDRConfig, lrs: dict, seed: int, methods=METHODS) -> dict:
    """Every method at its chosen learning rate for one seed: ``{method: evaluate_model(...)}``."""
    return {m: evaluate_model(finetune(m, pre, data, cfg, lrs[m], seed, progress=False), data, cfg, pre)
            for m in methods}


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def _pretrain_main(args) -> int:
    from tutor.train import save_checkpoint

    cfg = CLDRConfig(pretrain_steps=args.steps)
    start = time.perf_counter()
    params, data, history = pretrain(cfg, seed=0)
    hx, hm, mask = data.heldout
    held = mlm_loss(params, hx, hm, mask).item()
    info = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
            "vocab": data.vocab.chars, "heldout_mlm_loss": held,
            "final_train_loss": sum(history[-100:]) / len(history[-100:]),
            "command": "python -m tutor.experiments.seq_reptile pretrain " + " ".join(args.rest),
            "date": datetime.date.today().isoformat(), "torch": str(torch.__version__)}
    seconds = round(time.perf_counter() - start, 1)
    save_checkpoint(args.out_path, params, info, overwrite=args.overwrite)
    out = args.out_path
    print(f"pretrained {cfg.pretrain_steps} steps in {seconds} s; held-out masked-character loss "
          f"{held:.3f} nats (train {info['final_train_loss']:.3f}); vocab {len(data.vocab)}; wrote {out}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    if argv[:1] == ["pretrain"]:
        p = argparse.ArgumentParser(prog="seq_reptile pretrain")
        p.add_argument("--steps", type=cli_int(1), default=CLDRConfig.pretrain_steps)
        add_output_arguments(p, "seq_reptile_mlm.pt")
        args = p.parse_args(argv[1:])
        # never the shipped checkpoint by default: runs/seq_reptile_mlm.pt (checked before any work)
        args.out_path = resolve_output(args.out, "seq_reptile_mlm.pt", overwrite=args.overwrite)
        if args.dry_run:
            return dry_run_report(args, args.out_path)
        args.rest = argv[1:]
        return _pretrain_main(args)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=cli_int(0), nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=cli_int(1), default=CLDRConfig.budget)
    p.add_argument("--lr-grid", type=cli_float(0, strict=True), nargs="+", default=list(CLDRConfig.lr_grid))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                   help=f"any of {list(METHODS)}")
    p.add_argument("--checkpoint", default=str(CHECKPOINT), help="the pretrained encoder to fine-tune (read only)")
    add_output_arguments(p, "seq_reptile.json")
    args = p.parse_args(argv)
    pre, vocab, cfg = load_pretrained(args.checkpoint)
    if args.budget < cfg.K:                         # below one Seq-Reptile outer step: nothing would be trained
        p.error(f"argument --budget: must be >= K={cfg.K} (one Seq-Reptile outer step; the checkpoint's K), "
                f"got {args.budget}")
    out = resolve_output(args.out, "seq_reptile.json", overwrite=args.overwrite)     # checked before any work
    if args.dry_run:
        return dry_run_report(args, out)
    cfg = CLDRConfig(**{**asdict(cfg), "budget": args.budget, "lr_grid": tuple(args.lr_grid)})
    data = build_data(cfg, vocab)
    start = time.perf_counter()
    tuning = tune(pre, data, cfg, args.methods)
    print("learning rates chosen on validation names (tuning seed 100):", tuning["chosen"],
          "on grid edge:", [m for m, e in tuning["on_edge"].items() if e])
    runs = {}
    for seed in args.seeds:
        runs[seed] = run_seed(pre, data, cfg, tuning["chosen"], seed, args.methods)
        print(f"seed {seed}:", {m: round(r["mean_accuracy"] * 100, 1) for m, r in runs[seed].items()},
              f"({time.perf_counter() - start:.0f} s)")
    record = {"command": "python -m tutor.experiments.seq_reptile " + " ".join(argv),
              "date": datetime.date.today().isoformat(), "torch": str(torch.__version__),
              "seconds": round(time.perf_counter() - start, 1),
              "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
              "methods": args.methods, "seeds": args.seeds, "tuning": tuning,
              "runs": {str(s): r for s, r in runs.items()}}
    atomic_write_json(out, record, indent=1)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
