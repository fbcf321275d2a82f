"""Argument checks shared by the public entry points: one clear error that names the setting.

Every function raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, not
allowed) with a message of the form ``"<name> must be ..., got ..."``, so a student sees which
argument to change and what is allowed, instead of an error from deep inside torch.
"""

from __future__ import annotations

import argparse
import math
import numbers

import torch

__all__ = ["as_int", "as_float", "check_episode", "check_labels", "check_inputs", "check_targets", "cli_int",
           "cli_float"]


def as_int(value, name: str, minimum: int | None = None) -> int:
    """``value`` as an ``int`` (integral floats such as ``5.0`` are accepted; ``5.5``, bools and strings
    are not), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, torch.Tensor):
        value = value.item()
    if not math.isfinite(value) or int(value) != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def as_float(value, name: str, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite ``float``, ``>= minimum`` (``> minimum`` when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return value


def cli_int(minimum: int | None = None):
    """An ``argparse`` ``type=`` that parses an integer ``>= minimum``; argparse names the flag in the error
    (``argument --steps: must be an integer >= 1, got 0``) and nothing runs."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}" if minimum is not None else "integer"
    parse.kind, parse.minimum = "int", minimum                 # read by the tests that try every driver flag
    return parse


def cli_float(minimum: float | None = None, strict: bool = False, maximum: float | None = None):
    """An ``argparse`` ``type=`` that parses a finite float ``>= minimum`` (``>`` when ``strict``), ``<= maximum``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if minimum is not None and (value <= minimum if strict else value < minimum):
            raise argparse.ArgumentTypeError(f"must be a number {'>' if strict else '>='} {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be a number <= {maximum}, got {value}")
        return value
    parse.__name__ = "number"
    parse.kind, parse.minimum, parse.strict, parse.maximum = "float", minimum, strict, maximum
    return parse


def check_inputs(x: torch.Tensor, name: str) -> None:
    """Inputs must be a floating-point tensor without NaN or inf."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point (e.g. float32), got {x.dtype}; convert with .float()")
    if x.numel() and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values")


def check_labels(y: torch.Tensor, ways: int | None, name: str) -> None:
    """Class labels: a 1-D integer tensor with values in ``0..ways-1``."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class labels, got {type(y).__name__}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels (torch.long), got {y.dtype}; for regression "
                        "targets use loss='mse'")
    if y.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one label per example), got shape {tuple(y.shape)}")
    if ways is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= ways):
        raise ValueError(f"{name} must lie in 0..{ways - 1} (the network has {ways} outputs), "
                         f"got labels {int(y.min())}..{int(y.max())}")


def check_targets(outputs: torch.Tensor, y: torch.Tensor, loss: str, name: str) -> None:
    """Targets that fit the loss: labels for ``"ce"``, same-shaped floats for ``"mse"``."""
    if loss == "ce":
        check_labels(y, outputs.shape[-1], name)
        if outputs.shape[0] != y.shape[0]:
            raise ValueError(f"{name} has {y.shape[0]} labels for {outputs.shape[0]} outputs")
    elif loss == "mse":
        if not y.is_floating_point():
            raise TypeError(f"{name} must be floating-point regression targets for loss='mse', got {y.dtype}; "
                            "for class labels use loss='ce'")
        if tuple(y.shape) != tuple(outputs.shape):
            raise ValueError(f"{name} must have the network's output shape {tuple(outputs.shape)} for loss='mse', "
                             f"got {tuple(y.shape)} (e.g. use y[:, None] for one output)")


def check_episode(episode, ways: int | None = None, *, query: bool = True) -> None:
    """A classification episode a learner can use: finite floating-point inputs, non-empty support (and query,
    when ``query``) sets, and labels in ``0..ways-1`` (``ways`` defaults to the episode's own ``ways``).

    Learners call this at their entry points, so NaN inputs, an empty query set or an out-of-range label are
    reported as such instead of being blamed on a learning rate or on a missing class.
    """
    ways = getattr(episode, "ways", None) if ways is None else ways
    for part in ("support", "query") if query else ("support",):
        x, y = getattr(episode, f"{part}_x"), getattr(episode, f"{part}_y")
        check_inputs(x, f"{part} inputs ({part}_x)")
        check_labels(y, ways, f"{part} labels ({part}_y)")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{part}_x has {x.shape[0]} examples but {part}_y has {y.shape[0]} labels")
        if x.shape[0] == 0:
            raise ValueError(f"the {part} set is empty ({part}_x has 0 examples): every task needs at least one "
                             f"{part} example")
