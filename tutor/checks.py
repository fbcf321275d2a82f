"""Exercise self-checks: compare a student's function with a reference on test inputs.

Each check prints a pass/fail line with a hint and returns a :class:`CheckResult` that is truthy
on success, so an instructor copy can ``assert`` it while a student copy just reads the message.

Cell-tag convention for exercises in the notebooks (jupytext: ``# %% tags=["exercise"]``):

* ``exercise`` -- the task and a stub the student completes (kept in student copies);
* ``solution`` -- the instructor's solution (removed by ``python -m tutor.course student``);
* ``check``    -- calls a function from this module (kept).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

__all__ = ["CheckResult", "check_function", "check_value"]


@dataclass
class CheckResult:
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return ("PASS: " if self.passed else "NOT YET: ") + self.message


def _close(a, b, atol, rtol) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], atol, rtol) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_close(x, y, atol, rtol) for x, y in zip(a, b))
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True)


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


def _kind_mismatch(got, want) -> str | None:
    """A message when the student's output is of the wrong kind or shape (before comparing values)."""
    if got is None:
        return "returned None: did you forget `return`?"
    if isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(want.shape):
        return f"returned {_describe(got)}; expected {_describe(want)}"
    if isinstance(got, str) and not isinstance(want, str):
        return f"returned a string ({got!r}); expected {_describe(want)}"
    return None


def check_function(student: Callable, reference: Callable, cases: Iterable[tuple], hint: str = "",
                   atol: float = 1e-6, rtol: float = 1e-5, name: str | None = None) -> CheckResult:
    """Call ``student(*case)`` and ``reference(*case)`` on every case and compare the outputs.

    The reference runs first, and each function gets its own deep copy of the case, so a student's
    function that modifies its inputs cannot change the expected answer.  NaN equals NaN.
    """
    name = name or getattr(student, "__name__", "your function")
    cases = list(cases)
    if not cases:
        raise ValueError("check_function needs at least one test case")
    for i, case in enumerate(cases):
        if not isinstance(case, tuple):
            raise TypeError(f"each test case must be a tuple of arguments, got {type(case).__name__} (case {i})")
        want = reference(*copy.deepcopy(case))
        try:
            got = student(*copy.deepcopy(case))
        except NotImplementedError:
            return _report(False, f"{name} is not implemented yet. {hint}")
        except Exception as e:  # the student's code raised: say what and where
            return _report(False, f"{name} raised {type(e).__name__}: {e} on test case {i}. {hint}")
        problem = _kind_mismatch(got, want)
        if problem:
            return _report(False, f"{name} {problem} (test case {i}). {hint}")
        try:
            same = _close(got, want, atol, rtol)
        except (TypeError, ValueError, RuntimeError):
            return _report(False, f"{name} returned {_describe(got)}, which cannot be compared with the expected "
                                  f"{_describe(want)} (test case {i}). {hint}")
        if not same:
            return _report(False, f"{name} gives a different result on test case {i}. {hint}")
    return _report(True, f"{name} matches the reference on all test cases.")


def check_value(value, expected, hint: str = "", atol: float = 1e-6, rtol: float = 1e-5,
                name: str = "your answer") -> CheckResult:
    """Compare a computed value with the expected one."""
    if value is None or value is ...:
        return _report(False, f"{name} is not filled in yet. {hint}")
    try:
        same = _close(value, expected, atol, rtol)
    except (TypeError, ValueError, RuntimeError):
        return _report(False, f"{name} is {_describe(value)}, which cannot be compared with the expected "
                              f"{_describe(expected)}. {hint}")
    if same:
        return _report(True, f"{name} is correct.")
    return _report(False, f"{name} is not right yet. {hint}")


def _report(passed: bool, message: str) -> CheckResult:
    result = CheckResult(passed, message)
    print(repr(result))
    return result
