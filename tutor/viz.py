"""Plotting helpers (matplotlib).  They read plain data -- histories, episodes, evaluation results --
and never reach into algorithm internals.  Every function returns the matplotlib ``Figure``."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["glyph_gallery", "show_episode", "learning_curves", "bars_with_ci", "decision_regions",
           "regime_plot", "to_numpy"]


def to_numpy(t) -> np.ndarray:
    """Any tensor (any device, with or without grad) as a NumPy array."""
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().float().numpy()
    return np.asarray(t)


def _image(ax, img, title=None):
    img = to_numpy(img)
    ax.imshow(img[0] if img.ndim == 3 else img, cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)


def glyph_gallery(bank, classes=None, instances: int = 8, n_classes: int = 6, seed: int = 0):
    """A grid: one row per class (label: character and script), ``instances`` columns."""
    if classes is None:
        rng = np.random.default_rng(seed)
        classes = rng.choice(bank.num_classes, size=min(n_classes, bank.num_classes), replace=False)
    classes = list(classes)
    instances = min(instances, bank.num_instances)
    fig, axes = plt.subplots(len(classes), instances, figsize=(1.1 * instances, 1.2 * len(classes)),
                             squeeze=False)
    for r, c in enumerate(classes):
        for j in range(instances):
            _image(axes[r, j], bank.images[c, j])
        axes[r, 0].set_ylabel(f"{bank.chars[c]}\n{bank.scripts[c].title()}", rotation=0,
                              labelpad=28, fontsize=9, va="center")
    fig.suptitle("glyph classes (rows) and their instances (columns)", fontsize=10)
    fig.tight_layout()
    return fig


def show_episode(episode, max_queries: int = 5):
    """Support set (one column per class) above a few query examples of each class."""
    ways = episode.classes.shape[-1]
    sy, qy = to_numpy(episode.support_y), to_numpy(episode.query_y)
    shots = max(int((sy == c).sum()) for c in range(ways))
    queries = min(max_queries, max(int((qy == c).sum()) for c in range(ways)))
    rows = shots + queries
    fig, axes = plt.subplots(rows, ways, figsize=(1.2 * ways, 1.2 * rows), squeeze=False)
    for c in range(ways):
        s_idx, q_idx = np.flatnonzero(sy == c), np.flatnonzero(qy == c)[:queries]
        for r in range(rows):
            ax = axes[r, c]
            ax.axis("off")
            if r < len(s_idx):
                _image(ax, episode.support_x[s_idx[r]], f"support {c}" if r == 0 else None)
                ax.axis("on")
                for side in ax.spines.values():
                    side.set_color("tab:blue")
                    side.set_linewidth(2)
            elif shots <= r < shots + len(q_idx):
                _image(ax, episode.query_x[q_idx[r - shots]], "query" if r == shots else None)
    fig.suptitle(f"{ways}-way episode: support (blue frame) and query examples", fontsize=10)
    fig.tight_layout()
    return fig


def learning_curves(histories: dict, key: str = "loss", smooth: int = 20, ax=None):
    """One curve per method (``{name: History}``), moving-average smoothed."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, h in histories.items():
        y = np.asarray(getattr(h, key), float)
        x = np.asarray(h.step)
        if smooth > 1 and len(y) >= smooth:
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
            x = x[smooth - 1:]
        ax.plot(x, y, label=name)
    ax.set_xlabel("meta-training step")
    ax.set_ylabel(f"query {key} (meta-batch, smoothed)")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig or ax.figure


def bars_with_ci(results: dict, ylabel: str = "test accuracy (%)", scale: float = 100.0, ax=None,
                 title: str | None = None):
    """Bars of ``{name: EvalResult}`` means with 95% CI error bars."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.4 * len(results) + 2, 3.5))
    names = list(results)
    means = [results[n].mean * scale for n in names]
    cis = [results[n].ci95 * scale for n in names]
    bars = ax.bar(names, means, yerr=cis, capsize=6, color=plt.cm.tab10.colors[:len(names)])
    for b, m in zip(bars, means):
        ax.text(b.get_x() + b.get_width() / 2, m, f"{m:.1f}", ha="center", va="bottom", fontsize=9)
    lo = min(m - c for m, c in zip(means, cis))
    ax.set_ylim(max(0.0, lo - 10), min(scale, max(m + c for m, c in zip(means, cis)) + 5))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return fig or ax.figure


def decision_regions(predict, x: torch.Tensor, y: torch.Tensor, ax=None, resolution: int = 150,
                     margin: float = 0.5, title: str | None = None, queries=None):
    """Colour a 2-D plane by ``predict(points (n, 2)) -> labels (n,)`` and overlay labelled points.

    ``queries`` is an optional ``(x, y)`` pair drawn as hollow markers.
    """
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4))
    pts = to_numpy(x)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"decision_regions needs 2-D points (n, 2), got shape {pts.shape}")
    allpts = pts if queries is None else np.concatenate([pts, to_numpy(queries[0])])
    lo, hi = allpts.min(0) - margin, allpts.max(0) + margin
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    labels = to_numpy(predict(grid)).reshape(gx.shape)
    k = int(max(labels.max(), to_numpy(y).max())) + 1
    cmap = plt.get_cmap("tab10", 10)
    ax.contourf(gx, gy, labels, levels=np.arange(-0.5, k), cmap=cmap, vmin=-0.5, vmax=9.5, alpha=0.25)
    ax.scatter(pts[:, 0], pts[:, 1], c=to_numpy(y), cmap=cmap, vmin=-0.5, vmax=9.5, edgecolor="k", s=60,
               label="support")
    if queries is not None:
        q = to_numpy(queries[0])
        ax.scatter(q[:, 0], q[:, 1], facecolors="none", edgecolors=cmap(to_numpy(queries[1]).astype(int)),
                   s=30, label="query")
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    return fig or ax.figure


def regime_plot(regime: dict, operating_point=None, ax=None, scale: float = 1.0, xlog: bool | None = None,
                label: str | None = None):
    """A regime map: the paired gain of the method over its baseline against the factor.

    ``regime`` is the dict a driver stores under ``"regime"`` (``tutor.experiments.regime``). Draws the
    mean difference per factor value with its Student-t 95% band over seeds, the seeds as dots, the zero
    line, and the paper's operating point (``operating_point``, a factor value) as a dashed line. The
    y-axis is ``method - baseline`` times ``scale``; its label says which direction is better.
    """
    from tutor.experiments.regime import summarise_regime

    points = summarise_regime(regime)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
    numeric = all(isinstance(p.value, (int, float)) and not isinstance(p.value, bool) for p in points)
    xs = [p.value for p in points] if numeric else list(range(len(points)))
    means = np.array([p.mean for p in points]) * scale
    cis = np.nan_to_num(np.array([p.ci95 for p in points]) * scale)
    line = ax.plot(xs, means, "o-", label=label or f"{regime['method']} - {regime['baseline']}")[0]
    ax.fill_between(xs, means - cis, means + cis, color=line.get_color(), alpha=0.2)
    for x, p in zip(xs, points):
        ax.scatter([x] * len(p.diffs), np.array(p.diffs) * scale, s=10, color=line.get_color(), alpha=0.5)
    ax.axhline(0, color="k", lw=0.8)
    if operating_point is not None:
        at = operating_point if numeric else [str(p.value) for p in points].index(str(operating_point))
        ax.axvline(at, color="gray", ls="--", lw=1)
        ax.annotate("paper's setting", (at, ax.get_ylim()[1]), fontsize=8, color="gray", ha="left", va="top")
    if not numeric:
        ax.set_xticks(xs, [str(p.value) for p in points])
    if xlog if xlog is not None else (numeric and min(xs) > 0 and max(xs) / min(xs) >= 20):
        ax.set_xscale("log")
    better = "higher" if regime["higher_is_better"] else "lower"
    ax.set_xlabel(regime["factor"])
    ax.set_ylabel(f"{regime['metric']}: method - baseline\n({better} is better for the method)")
    ax.set_title(f"regime map: {regime['method']} vs {regime['baseline']} ({len(points[0].diffs)} seeds, 95% t)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    return fig or ax.figure
