"""Procedural task families: sinusoid regression and Gaussian-class vector tasks.

Both are generated on the fly from a seed, so nothing is downloaded or stored.

* :class:`SinusoidTasks` -- the MAML regression benchmark (Finn et al., 2017):
  ``y = A sin(x - phi)``, ``A ~ U[0.1, 5]``, ``phi ~ U[0, pi]``, ``x ~ U[-5, 5]``.
* :class:`GaussianClassTasks` -- ``C``-way classification of points in ``R^dim``: class centres
  ``~ N(0, centre_std^2 I)`` in a 2-D *signal plane*, within-class std ``class_std`` there, and
  nuisance noise of std ``nuisance_std`` in every other dimension.  The in-distribution (``"id"``)
  signal plane is dims 0-1; the out-of-distribution (``"ood"``) variant moves the signal to dims
  2-3 (with a random rotation inside that plane per task), so dims 0-1 become nuisance.  Supports
  balanced and any-shot (imbalanced) episodes.
"""

from __future__ import annotations

import math

import torch

from tutor.data.episodes import Episode, _as_generator, _check_positive

__all__ = ["SinusoidTasks", "GaussianClassTasks"]


class SinusoidTasks:
    """Sinusoid regression tasks ``y = A sin(x - phi)``; examples are ``(n, 1)`` tensors."""

    def __init__(self, amplitude=(0.1, 5.0), phase=(0.0, math.pi), x_range=(-5.0, 5.0)):
        for name, (lo, hi) in {"amplitude": amplitude, "phase": phase, "x_range": x_range}.items():
            if not lo <= hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range

    def function(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The task's true curve at ``x``; ``params = (amplitude, phase)``."""
        return params[0] * torch.sin(x - params[1])

    def sample(self, shots: int, queries: int, gen=0) -> Episode:
        """One task: ``shots`` support and ``queries`` query points, ``x`` of shape ``(n, 1)``."""
        _check_positive(shots=shots, queries=queries)
        gen = _as_generator(gen)
        u = lambda lo_hi, *shape: lo_hi[0] + (lo_hi[1] - lo_hi[0]) * torch.rand(*shape, generator=gen)  # noqa: E731
        params = torch.stack([u(self.amplitude, ()), u(self.phase, ())])
        x = u(self.x_range, shots + queries, 1)
        y = self.function(params, x)
        return Episode(x[:shots], y[:shots], x[shots:], y[shots:],
                       torch.zeros(0, dtype=torch.long), params=params)

    def batch(self, tasks: int, shots: int, queries: int, gen=0) -> Episode:
        """``tasks`` tasks stacked along a leading dimension."""
        from tutor.data.episodes import stack_episodes

        _check_positive(tasks=tasks)
        gen = _as_generator(gen)
        return stack_episodes([self.sample(shots, queries, gen) for _ in range(tasks)])


class GaussianClassTasks:
    """Gaussian-class vector tasks with an in-distribution and a shifted OOD variant.

    Args:
        dim: input dimension (>= 4, so both signal planes exist).
        variant: ``"id"`` (signal in dims 0-1) or ``"ood"`` (signal in dims 2-3, rotated per task).
        centre_std, class_std, nuisance_std: see the module docstring.
    """

    def __init__(self, dim: int = 16, variant: str = "id", centre_std: float = 2.0,
                 class_std: float = 0.5, nuisance_std: float = 1.5):
        if dim < 4:
            raise ValueError(f"dim must be >= 4 (two signal planes), got {dim}")
        if variant not in ("id", "ood"):
            raise ValueError(f"variant must be 'id' or 'ood', got {variant!r}")
        from tutor.validation import as_float

        for name, value in (("centre_std", centre_std), ("class_std", class_std), ("nuisance_std", nuisance_std)):
            as_float(value, name, 0.0)
        self.dim, self.variant = dim, variant
        self.centre_std, self.class_std, self.nuisance_std = centre_std, class_std, nuisance_std

    def _points(self, centres: torch.Tensor, counts: list[int], gen) -> tuple[torch.Tensor, torch.Tensor]:
        n = sum(counts)
        y = torch.cat([torch.full((k,), c) for c, k in enumerate(counts)])
        x = torch.randn(n, self.dim, generator=gen) * self.nuisance_std
        signal = centres[y] + torch.randn(n, 2, generator=gen) * self.class_std   # (n, 2)
        plane = slice(0, 2) if self.variant == "id" else slice(2, 4)
        x[:, plane] = signal
        return x, y

    def sample(self, ways: int, shots, queries: int, gen=0) -> Episode:
        """One episode; ``shots`` is an int or a list of per-class shot counts (any-shot)."""
        _check_positive(ways=ways, queries=queries)
        shots = [shots] * ways if isinstance(shots, int) else list(shots)
        if len(shots) != ways:
            raise ValueError(f"got {len(shots)} shot counts for {ways} ways")
        for k in shots:
            _check_positive(shots=k)
        gen = _as_generator(gen)
        centres = torch.randn(ways, 2, generator=gen) * self.centre_std
        if self.variant == "ood":
            a = torch.rand((), generator=gen) * 2 * math.pi
            rot = torch.stack([torch.stack([a.cos(), -a.sin()]), torch.stack([a.sin(), a.cos()])])
            centres = centres @ rot.T
        sx, sy = self._points(centres, shots, gen)
        qx, qy = self._points(centres, [queries] * ways, gen)
        return Episode(sx, sy, qx, qy, torch.arange(ways))

    def sample_any_shot(self, ways: int, max_shots: int, queries: int, gen=0,
                        imbalanced_fraction: float = 0.5) -> Episode:
        """Any-shot episode: as :class:`~tutor.data.episodes.AnyShotSampler` draws shot counts."""
        _check_positive(max_shots=max_shots)
        gen = _as_generator(gen)
        if torch.rand((), generator=gen).item() < imbalanced_fraction:
            shots = torch.randint(1, max_shots + 1, (ways,), generator=gen).tolist()
        else:
            shots = [int(torch.randint(1, max_shots + 1, (), generator=gen))] * ways
        return self.sample(ways, shots, queries, gen)
