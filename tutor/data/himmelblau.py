"""The 8-task synthetic environment of Continual Trajectory Shifting (Shin et al., ICML 2021).

Eight 2-D tasks, each a weighted, rotated and shifted Himmelblau function (constants from the
official code, ``synthetic/set_env.py`` and ``env.npz``).  Task ``t`` has centre
``c_t = (5, 5) + 7 (sin(2 pi t / 8), cos(2 pi t / 8))`` and rotation angle ``a_t``; with
``d = x - c_t``::

    u = (cos a_t d1 - sin a_t d2) / 3,   v = (sin a_t d1 + cos a_t d2) / 3
    L_t(x) = c0 (u^2 + v - 11)^2 + c2 (u + v^2 - 7)^2

so every task has four global minima of value 0.
"""

from __future__ import annotations

import math

import torch

__all__ = ["HimmelblauTasks", "C0", "C2", "ANGLES"]

C0 = 0.7384512135082113
C2 = 0.9954126045755818
ANGLES = (0.9192431493036517, 1.115065426203848, 4.415228705528784, 5.9905628979208485,
          3.9030251182851323, 4.017727223291247, 3.1372847487749387, 0.28030319393389896)


class HimmelblauTasks:
    """The CTS toy environment: ``losses(x)`` maps points ``(..., tasks, 2)`` to ``(..., tasks)``."""

    num_tasks = 8
    dim = 2

    def __init__(self, dtype=torch.float64, device=None):
        t = torch.arange(8, dtype=dtype, device=device)
        self.centres = torch.stack([5 + 7 * torch.sin(2 * math.pi * t / 8),
                                    5 + 7 * torch.cos(2 * math.pi * t / 8)], 1)     # (8, 2)
        self.angles = torch.tensor(ANGLES, dtype=dtype, device=device)               # (8,)

    def losses(self, x: torch.Tensor) -> torch.Tensor:
        """Loss of every task at its own point: ``x (..., 8, 2) -> (..., 8)``."""
        if x.shape[-2:] != (8, 2):
            raise ValueError(f"points must have shape (..., 8, 2) (one 2-D point per task), got {tuple(x.shape)}")
        d = x - self.centres
        cos, sin = torch.cos(self.angles), torch.sin(self.angles)
        u = (cos * d[..., 0] - sin * d[..., 1]) / 3
        v = (sin * d[..., 0] + cos * d[..., 1]) / 3
        return C0 * (u ** 2 + v - 11) ** 2 + C2 * (u + v ** 2 - 7) ** 2

    def minima(self, task: int) -> torch.Tensor:
        """The four zero-loss points of ``task`` ``(4, 2)``: Himmelblau's minima mapped back."""
        base = torch.tensor([[3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186],
                             [3.584428, -1.848126]], dtype=self.centres.dtype)
        a = self.angles[task]
        rot = torch.stack([torch.stack([torch.cos(a), -torch.sin(a)]), torch.stack([torch.sin(a), torch.cos(a)])])
        return (3 * base) @ rot + self.centres[task]       # (u, v) = rot d / 3  =>  d = 3 rot^T (u, v)
