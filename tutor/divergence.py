"""One divergence rule for every training loop of the package (core and papers).

A loss that is NaN or infinite, or that stays finite but explodes, means the run has diverged; the
result of such a run must never be reported.  The rule, in one place:

* a non-finite value stops the run at once;
* a finite value stops it when it exceeds :data:`ABSOLUTE_LIMIT` (``1e10``: no loss of this package's
  experiments comes near it -- cross-entropies are a few units, the regression and toy objectives at most
  thousands), or :data:`GROWTH_FACTOR` (``1e6``) times the magnitude of the *first* finite value the loop
  saw (its reference; at least :data:`REFERENCE_FLOOR`, so a loss that starts at 0 is not stopped when it
  moves to 0.01).  Growing a million-fold from the first step is never training, and the check applies
  from the second step on, so a run that diverges at step 1 is stopped at step 2.

Every stop raises ``FloatingPointError`` whose message says what diverged, where, and which setting to lower
(the caller names it, e.g. ``"lr=0.001, inner_lr=0.4"``).  Loops use :class:`DivergenceGuard` (it remembers
the reference); a stateless check of one value (no reference) is :func:`check_loss`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ABSOLUTE_LIMIT", "GROWTH_FACTOR", "REFERENCE_FLOOR", "DivergenceGuard", "check_loss"]

ABSOLUTE_LIMIT = 1e10
GROWTH_FACTOR = 1e6
REFERENCE_FLOOR = 1e-2


def _value(loss) -> float:
    if isinstance(loss, torch.Tensor):
        return float(loss.detach().abs().max().item()) if loss.numel() > 1 else float(loss.detach().item())
    return float(loss)


def check_loss(loss, *, setting: str, what: str = "the loss", where: str = "", reference: float | None = None
               ) -> float:
    """Return ``loss`` as a float, or raise ``FloatingPointError`` when it is non-finite or diverged.

    ``setting`` names what to lower (e.g. ``"the learning rate (lr=0.5)"``); ``where`` says where it
    happened (e.g. ``"at step 3"``); ``reference`` is the first finite value of the run (``None``: only
    the non-finite and absolute checks).  A tensor with several values is checked on its largest magnitude.
    """
    if isinstance(loss, torch.Tensor) and loss.numel() > 1 and not torch.isfinite(loss).all():
        value = float("nan") if torch.isnan(loss).any() else float("inf")
    else:
        value = _value(loss)
    at = f" {where}" if where else ""
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} became {value} (non-finite){at}: the run diverged; lower {setting}")
    limit = ABSOLUTE_LIMIT
    if reference is not None:
        limit = min(limit, GROWTH_FACTOR * max(abs(reference), REFERENCE_FLOOR))
    if abs(value) > limit:
        start = f" from {reference:.3g} (first value)" if reference is not None else ""
        raise FloatingPointError(f"{what} diverged: it grew{start} to {value:.3g}{at}, beyond the divergence "
                                 f"limit {limit:.3g}; lower {setting}")
    return value


class DivergenceGuard:
    """Remembers the first finite value of a loop and applies :func:`check_loss` to every later one.

    >>> guard = DivergenceGuard(setting="the learning rate (lr=0.1)")
    >>> for step in range(steps):
    ...     loss = ...
    ...     guard(loss, where=f"at step {step}")
    """

    def __init__(self, *, setting: str, what: str = "the loss"):
        self.setting, self.what, self.reference = setting, what, None

    def __call__(self, loss, where: str = "") -> float:
        value = check_loss(loss, setting=self.setting, what=self.what, where=where, reference=self.reference)
        if self.reference is None:
            self.reference = value
        return value
