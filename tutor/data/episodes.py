"""Few-shot episodes: N-way K-shot, any-shot (imbalanced) and donor classes.

An *episode* (a task) draws ``ways`` classes from a class pool, relabels them ``0..ways-1`` in a
random order, and splits each class's instances into a *support* set (``shots`` per class, used by
the inner loop) and a *query* set (``queries`` per class, used to score the adapted learner).

All samplers take a seed or a ``torch.Generator``; the same seed gives the same episodes on every
machine.  Samplers check their settings up front and raise ``ValueError`` naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch

__all__ = ["Episode", "EpisodeSampler", "AnyShotSampler", "stack_episodes", "fixed_episodes"]


@dataclass
class Episode:
    """One task (or a batch of tasks stacked along a leading dimension).

    Shapes for one task (``S`` support, ``Q`` query examples, ``*X`` the example shape):
        support_x ``(S, *X)``, support_y ``(S,)`` in ``0..ways-1``,
        query_x ``(Q, *X)``, query_y ``(Q,)``,
        classes ``(ways,)``: the pool's class index behind each episode label,
        donor_x ``(D, M, *X)`` or ``None``: examples of ``D`` donor classes disjoint from the targets,
        params ``(P,)`` or ``None``: the generating parameters of a procedural task (e.g. a
        sinusoid's amplitude and phase; ``classes`` is then empty),
        seed ``()`` int64 or ``None``: a random seed drawn with the episode, for learners that draw
        noise (Meta-Dropout), so results do not depend on whether tasks are looped or threaded
        (under ``mode="vmap"`` the noise comes from torch's global RNG instead: vmap cannot use
        one generator per task).
    A batch from :func:`stack_episodes` has one more leading dimension ``(tasks, ...)``.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor
    donor_x: torch.Tensor | None = None
    params: torch.Tensor | None = None
    seed: torch.Tensor | None = None

    @property
    def ways(self) -> int:
        return self.classes.shape[-1]

    def to(self, device=None, dtype=None) -> Episode:
        """Move every tensor to ``device``; cast floating tensors to ``dtype`` if given."""
        moved = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if t is None:
                moved[f.name] = None
            elif t.is_floating_point() and dtype is not None:
                moved[f.name] = t.to(device=device, dtype=dtype)
            else:
                moved[f.name] = t.to(device=device)
        return replace(self, **moved)

    def __len__(self) -> int:  # number of tasks in a stacked batch
        if self.classes.dim() != 2:
            raise TypeError("len() is defined for stacked batches of episodes only")
        return self.classes.shape[0]

    def __getitem__(self, i: int) -> Episode:
        """Task ``i`` of a stacked batch."""
        return Episode(*(None if getattr(self, f.name) is None else getattr(self, f.name)[i]
                         for f in fields(self)))


def stack_episodes(episodes: Sequence[Episode]) -> Episode:
    """Stack same-shaped episodes into a batch with a leading ``tasks`` dimension."""
    if not episodes:
        raise ValueError("cannot stack an empty list of episodes")
    shapes = {tuple(e.support_x.shape) for e in episodes}
    if len(shapes) != 1:
        raise ValueError(f"episodes have different support shapes {sorted(shapes)}; any-shot "
                         "episodes cannot be stacked: loop over them instead")
    out = {}
    for f in fields(Episode):
        ts = [getattr(e, f.name) for e in episodes]
        out[f.name] = None if ts[0] is None else torch.stack(ts)
    return Episode(**out)


def _as_generator(seed_or_gen) -> torch.Generator:
    if isinstance(seed_or_gen, torch.Generator):
        return seed_or_gen
    return torch.Generator().manual_seed(int(seed_or_gen))


def _check_positive(**kwargs) -> None:
    for name, v in kwargs.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


class EpisodeSampler:
    """N-way K-shot episodes with Q queries per class from a pool of classes.

    Args:
        images: ``(classes, instances, *X)`` tensor (e.g. a :class:`GlyphBank`'s images) -- the
            same instance count for every class.
        classes: the class indices (rows of ``images``) this sampler may use, e.g. a split.
        ways, shots, queries: the episode shape.
        donors: number of donor classes per episode, disjoint from the episode's targets (MVT).
        donor_shots: examples per donor class.
        donor_classes: pool to draw donors from (default: ``classes``).
    """

    def __init__(self, images: torch.Tensor, classes: Sequence[int], ways: int, shots: int,
                 queries: int, donors: int = 0, donor_shots: int = 5,
                 donor_classes: Sequence[int] | None = None):
        if images.dim() < 3:
            raise ValueError(f"images must be (classes, instances, *example_shape), got shape "
                             f"{tuple(images.shape)}")
        _check_positive(ways=ways, shots=shots, queries=queries)
        if not isinstance(donors, int) or donors < 0:
            raise ValueError(f"donors must be a non-negative integer, got {donors!r}")
        classes = [int(c) for c in classes]
        if len(set(classes)) != len(classes):
            raise ValueError("classes contains duplicates")
        if any(c < 0 or c >= images.shape[0] for c in classes):
            raise ValueError(f"class indices must lie in [0, {images.shape[0]}), got "
                             f"{min(classes)}..{max(classes)}")
        if ways > len(classes):
            raise ValueError(f"ways={ways} is more than the {len(classes)} classes in this pool")
        instances = images.shape[1]
        if shots + queries > instances:
            raise ValueError(f"shots + queries = {shots} + {queries} = {shots + queries} is more "
                             f"than the {instances} instances per class")
        self.donor_pool = classes if donor_classes is None else [int(c) for c in donor_classes]
        if donors:
            _check_positive(donor_shots=donor_shots)
            if donor_shots > instances:
                raise ValueError(f"donor_shots={donor_shots} is more than the {instances} "
                                 "instances per class")
            pool = set(self.donor_pool)
            available = len(pool) - min(ways, len(pool & set(classes)))  # worst case over episodes
            if donors > available:
                raise ValueError(f"donors={donors} needs that many classes outside the episode's "
                                 f"{ways} targets, but only {available} are available")
        self.images = images
        self.classes = torch.tensor(classes)
        self.ways, self.shots, self.queries = ways, shots, queries
        self.donors, self.donor_shots = donors, donor_shots

    def _pick(self, class_ids: torch.Tensor, counts: Sequence[int], gen) -> list[torch.Tensor]:
        """For each class, a random subset of its instances of the requested size."""
        n = self.images.shape[1]
        return [torch.randperm(n, generator=gen)[:k] for _, k in zip(class_ids, counts)]

    def _donors(self, targets: torch.Tensor, gen) -> torch.Tensor | None:
        if not self.donors:
            return None
        pool = torch.tensor([c for c in self.donor_pool if c not in set(targets.tolist())])
        if len(pool) < self.donors:
            raise ValueError(f"donors={self.donors} but only {len(pool)} donor classes are "
                             "disjoint from this episode's targets")
        chosen = pool[torch.randperm(len(pool), generator=gen)[:self.donors]]
        rows = [self.images[c, torch.randperm(self.images.shape[1], generator=gen)[:self.donor_shots]]
                for c in chosen.tolist()]
        return torch.stack(rows)                          # (donors, donor_shots, *X)

    def _episode(self, targets: torch.Tensor, shots: Sequence[int], gen) -> Episode:
        picks = self._pick(targets, [k + self.queries for k in shots], gen)
        sx, sy, qx, qy = [], [], [], []
        for label, (c, idx, k) in enumerate(zip(targets.tolist(), picks, shots)):
            sx.append(self.images[c, idx[:k]])
            qx.append(self.images[c, idx[k:]])
            sy.append(torch.full((k,), label))
            qy.append(torch.full((self.queries,), label))
        donors = self._donors(targets, gen)
        seed = torch.randint(0, 2**62, (), generator=gen)
        return Episode(torch.cat(sx), torch.cat(sy), torch.cat(qx), torch.cat(qy), targets, donors,
                       seed=seed)

    def sample(self, gen=0) -> Episode:
        """One episode, drawn with ``gen`` (a ``torch.Generator`` or a seed)."""
        gen = _as_generator(gen)
        targets = self.classes[torch.randperm(len(self.classes), generator=gen)[:self.ways]]
        return self._episode(targets, [self.shots] * self.ways, gen)

    def batch(self, tasks: int, gen=0) -> Episode:
        """``tasks`` episodes stacked: support_x ``(tasks, ways*shots, *X)``."""
        _check_positive(tasks=tasks)
        gen = _as_generator(gen)
        return stack_episodes([self.sample(gen) for _ in range(tasks)])


class AnyShotSampler(EpisodeSampler):
    """Any-shot episodes (Bayesian TAML): shots per class drawn in ``[1, max_shots]``.

    With probability ``imbalanced_fraction`` a task is *class-imbalanced* (each class draws its own
    shot count); otherwise every class shares one drawn count (*task imbalance only*).  Queries are
    balanced (``queries`` per class).  Support sizes differ between tasks, so episodes are returned
    as a list rather than a stacked tensor.
    """

    def __init__(self, images, classes, ways: int, max_shots: int, queries: int,
                 imbalanced_fraction: float = 0.5, **kwargs):
        super().__init__(images, classes, ways, max_shots, queries, **kwargs)
        if not 0.0 <= imbalanced_fraction <= 1.0:
            raise ValueError(f"imbalanced_fraction must lie in [0, 1], got {imbalanced_fraction}")
        self.max_shots = max_shots
        self.imbalanced_fraction = imbalanced_fraction

    def sample(self, gen=0) -> Episode:
        gen = _as_generator(gen)
        targets = self.classes[torch.randperm(len(self.classes), generator=gen)[:self.ways]]
        if torch.rand((), generator=gen).item() < self.imbalanced_fraction:
            shots = torch.randint(1, self.max_shots + 1, (self.ways,), generator=gen).tolist()
        else:
            shots = [int(torch.randint(1, self.max_shots + 1, (), generator=gen))] * self.ways
        return self._episode(targets, shots, gen)

    def batch(self, tasks: int, gen=0) -> list[Episode]:
        _check_positive(tasks=tasks)
        gen = _as_generator(gen)
        return [self.sample(gen) for _ in range(tasks)]


def fixed_episodes(sampler: EpisodeSampler, n: int, seed: int = 12345) -> list[Episode]:
    """``n`` reproducible evaluation episodes: every method is scored on exactly these."""
    _check_positive(n=n)
    gen = _as_generator(seed)
    return [sampler.sample(gen) for _ in range(n)]
