"""Multi-task data: the synthetic asymmetric regression of Deep-AMTFL and imbalanced one-vs-rest glyphs.

* :func:`synthetic_regression` -- T regression tasks built from shared latent bases, in an *easy*
  (low-noise) and a *hard* (high-noise) group whose bases overlap (our notes on Deep-AMTFL §6.1):
  true bases ``L* (d, k)`` with N(0, 1) entries; task t uses bases ``t mod k`` and ``(t + 1) mod k``
  with coefficients ``U(0.5, 1.5) * (+-1)``; ``x ~ N(0, I)``, ``y = x L* s_t + sigma_t eps``.
* :func:`imbalanced_glyphs` -- C glyph classes as C one-vs-rest tasks with a decreasing number of
  training images per class (a laptop analogue of the paper's MNIST-Imbalanced).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MultiTaskData", "synthetic_regression", "ImbalancedData", "imbalanced_glyphs"]


@dataclass
class MultiTaskData:
    """Stacked tasks: ``x_train (T, n, d)``, ``y_train (T, n)``, test likewise; ground truth."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    bases: torch.Tensor      # L* (d, k)
    codes: torch.Tensor      # S* (k, T)
    noise: torch.Tensor      # sigma_t (T,)

    @property
    def num_tasks(self) -> int:
        return self.x_train.shape[0]

    @property
    def hard(self) -> torch.Tensor:
        """Boolean mask of the high-noise tasks."""
        return self.noise > self.noise.min()


def synthetic_regression(seed: int = 0, tasks: int = 12, dim: int = 20, bases: int = 4, n_train: int = 25,
                         n_test: int = 200, sigma_easy: float = 0.5, sigma_hard: float = 4.0,
                         n_hard: int | None = None, dtype=torch.float32) -> MultiTaskData:
    """The synthetic asymmetric multi-task regression (easy tasks first, then ``n_hard`` hard ones)."""
    n_hard = tasks // 2 if n_hard is None else n_hard
    if not 0 <= n_hard <= tasks:
        raise ValueError(f"n_hard must lie in [0, tasks={tasks}], got {n_hard}")
    if min(tasks, dim, bases, n_train, n_test) < 1 or bases < 2:
        raise ValueError("tasks, dim, n_train, n_test must be >= 1 and bases >= 2")
    if sigma_easy < 0 or sigma_hard < 0:
        raise ValueError("noise levels must be >= 0")
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(dim, bases, generator=g)
    S = torch.zeros(bases, tasks)
    for t in range(tasks):
        for b in (t % bases, (t + 1) % bases):
            sign = 1.0 if torch.rand((), generator=g) < 0.5 else -1.0
            S[b, t] = sign * (0.5 + torch.rand((), generator=g).item())
    sigma = torch.tensor([sigma_easy] * (tasks - n_hard) + [sigma_hard] * n_hard)
    W = L @ S                                                   # (d, T)

    def draw(n):
        x = torch.randn(tasks, n, dim, generator=g)
        y = torch.einsum("tnd,dt->tn", x, W) + sigma[:, None] * torch.randn(tasks, n, generator=g)
        return x, y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return MultiTaskData(*(t.to(dtype) for t in (xtr, ytr, xte, yte, L, S, sigma)))


@dataclass
class ImbalancedData:
    """C-class glyph data: ``x_train (N, 1, s, s)``, ``y_train (N,)``, test likewise; ``counts (C,)``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    counts: torch.Tensor
    chars: list[str]


def imbalanced_glyphs(seed: int = 0, classes: int = 10, counts=(14, 12, 10, 8, 6, 5, 4, 3, 2, 2),
                      test_per_class: int = 6, size: int = 14, pixel_noise: float = 0.0) -> ImbalancedData:
    """``classes`` random glyph classes; class c gets ``counts[c]`` training images and
    ``test_per_class`` disjoint test images (``counts[c] + test_per_class <= 20``)."""
    from tutor.data.glyphs import load_glyphs

    counts = list(counts)
    if len(counts) != classes:
        raise ValueError(f"need one count per class: {len(counts)} counts for {classes} classes")
    bank = load_glyphs(size=size)
    if max(counts) + test_per_class > bank.num_instances or min(counts) < 1:
        raise ValueError(f"each class needs 1 <= count and count + test_per_class <= {bank.num_instances}; "
                         f"got counts {counts} with test_per_class={test_per_class}")
    if classes > bank.num_classes:
        raise ValueError(f"classes={classes} is more than the {bank.num_classes} glyph classes")
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(bank.num_classes, generator=g)[:classes]
    xtr, ytr, xte, yte = [], [], [], []
    for c, (cls, n) in enumerate(zip(chosen.tolist(), counts)):
        perm = torch.randperm(bank.num_instances, generator=g)
        xtr.append(bank.images[cls, perm[:n]])
        xte.append(bank.images[cls, perm[n:n + test_per_class]])
        ytr += [c] * n
        yte += [c] * test_per_class
    xtr, xte = torch.cat(xtr), torch.cat(xte)
    if pixel_noise:
        xtr = xtr + pixel_noise * torch.randn(xtr.shape, generator=g)
        xte = xte + pixel_noise * torch.randn(xte.shape, generator=g)
    return ImbalancedData(xtr, torch.tensor(ytr), xte, torch.tensor(yte), torch.tensor(counts),
                          [bank.chars[i] for i in chosen.tolist()])
