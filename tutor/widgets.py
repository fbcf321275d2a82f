"""Widgets with a headless fallback.

:func:`interactive` is the one helper every notebook uses.  In a live front end (JupyterLab,
Notebook, VS Code) it returns ipywidgets controls wired to a drawing function.  Headless -- under
nbval, in a static export, or when ``TUTOR_HEADLESS=1`` -- it calls the function **once at the
default values**, so the figure still appears in the output and the cell is tested.

**Which one, with no flag.**  Live ipywidgets executed with no front end can make the executing client
(nbclient: ``jupyter nbconvert --execute``, ``jupytext --execute``, papermill, the course book's
build) wait for good, so the live path is taken only when a widget front end is attached
(:func:`front_end_attached`): a front end has opened ipywidgets' control comm, or the kernel was started
*for a notebook* by a Jupyter server (JupyterLab, Notebook 7) or VS Code -- they set
``JPY_SESSION_NAME`` in the kernel's environment, nbclient does not (an export started from a notebook
cell inherits the variable; that case is recognised, see :func:`front_end_attached`) -- or Colab.
``TUTOR_HEADLESS=1`` forces the static drawing; ``TUTOR_HEADLESS=0`` forces live widgets in a kernel
(for a front end the rules above miss).

**Sweep.**  With ``TUTOR_WIDGET_SWEEP=1`` (the test suite sets it) the headless path also calls the
function at every control's minimum and maximum, at every dropdown option and at the other value
of every toggle (one control at a time, the others at their defaults), closing each figure
unshown.  A callback that raises fails the cell with an error naming the control and its value.
"""

from __future__ import annotations

import functools
import os
import sys

import matplotlib.pyplot as plt

__all__ = ["interactive", "is_headless", "front_end_attached", "is_sweeping", "sweep_values", "slider", "dropdown",
           "toggle"]


def is_headless() -> bool:
    """True without a live widget front end (see the module docstring for the rules and the override)."""
    flag = os.environ.get("TUTOR_HEADLESS", "")
    if flag not in ("", "0"):
        return True
    try:
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return True
    return flag != "0" and not front_end_attached()


def front_end_attached() -> bool:
    """Whether a widget front end is attached to this kernel (False under nbclient/nbconvert/papermill)."""
    ipywidgets = sys.modules.get("ipywidgets")
    if ipywidgets is not None and getattr(ipywidgets.Widget, "_control_comm", None) is not None:
        return True           # a front end's widget manager opened the control comm
    if "google.colab" in sys.modules:
        return True
    session = os.environ.get("JPY_SESSION_NAME", "")
    return bool(session) and not _inherited("JPY_SESSION_NAME", session)


@functools.cache
def _inherited(name: str, value: str) -> bool:
    """True when the process that launched this kernel has ``name=value`` itself: the variable was inherited
    (e.g. ``!jupyter nbconvert --execute`` run from a notebook cell), not set by a server for this kernel.
    The launcher is ``JPY_PARENT_PID`` (set by jupyter_client for every kernel it starts) or the parent."""
    try:
        import psutil  # a dependency of ipykernel

        pid = int(os.environ.get("JPY_PARENT_PID") or os.getppid())
        return psutil.Process(pid).environ().get(name) == value
    except Exception:   # no such process, no permission, no psutil: trust the variable
        return False


def is_sweeping() -> bool:
    """True when headless widgets should also draw at every control's extremes (``TUTOR_WIDGET_SWEEP=1``)."""
    return os.environ.get("TUTOR_WIDGET_SWEEP", "") not in ("", "0")


class _Control:
    """A widget description that also knows its default value and its extremes (for the headless path)."""

    def __init__(self, kind: str, default, low=None, high=None, **kwargs):
        self.kind, self.default, self.low, self.high, self.kwargs = kind, default, low, high, kwargs

    def extremes(self) -> list:
        """The values the sweep draws besides the default: min and max, every option, the other toggle value."""
        if self.kind == "dropdown":
            values = list(self.kwargs["options"])
        elif self.kind == "toggle":
            values = [not self.default]
        else:
            values = [self.low, self.high]
        return [v for v in values if v != self.default]

    def build(self, name: str):
        import ipywidgets as w

        kwargs = dict(self.kwargs)
        desc = kwargs.pop("description", name)
        style = {"description_width": "initial"}
        if self.kind == "int":
            return w.IntSlider(value=self.default, description=desc, style=style,
                               continuous_update=False, **kwargs)
        if self.kind == "float":
            return w.FloatSlider(value=self.default, description=desc, style=style,
                                 continuous_update=False, **kwargs)
        if self.kind == "log":
            return w.FloatLogSlider(value=self.default, description=desc, style=style,
                                    continuous_update=False, **kwargs)
        if self.kind == "dropdown":
            return w.Dropdown(value=self.default, description=desc, style=style, **kwargs)
        if self.kind == "toggle":
            return w.Checkbox(value=self.default, description=desc, style=style, **kwargs)
        raise ValueError(f"unknown control kind {self.kind!r}")


def slider(default, low, high, step=None, log: bool = False, description: str | None = None) -> _Control:
    """A numeric slider (int when all of default/low/high are ints; ``log=True`` for a log scale)."""
    if not low <= default <= high:
        raise ValueError(f"slider default {default} is outside [{low}, {high}]")
    extra = {"description": description} if description else {}
    if log:
        import math

        return _Control("log", default, low, high, min=math.log10(low), max=math.log10(high),
                        step=step or 0.1, **extra)
    if all(isinstance(v, int) for v in (default, low, high)):
        return _Control("int", default, low, high, min=low, max=high, step=step or 1, **extra)
    return _Control("float", float(default), float(low), float(high), min=low, max=high,
                    step=step or (high - low) / 100, **extra)


def dropdown(default, options, description: str | None = None) -> _Control:
    """A choice among ``options``."""
    if default not in options:
        raise ValueError(f"dropdown default {default!r} is not among {list(options)}")
    extra = {"description": description} if description else {}
    return _Control("dropdown", default, options=list(options), **extra)


def toggle(default: bool, description: str | None = None) -> _Control:
    """A checkbox."""
    extra = {"description": description} if description else {}
    return _Control("toggle", bool(default), **extra)


def sweep_values(controls: dict) -> list[tuple[str, object]]:
    """``(control name, value)`` for every draw of the sweep (each control alone at an extreme)."""
    return [(k, v) for k, c in controls.items() if isinstance(c, _Control) for v in c.extremes()]


def interactive(draw, **controls):
    """Live controls for ``draw(**values)`` in a front end; one drawing at the defaults headless.

    ``draw`` should make a matplotlib figure (and may return it).  Controls are made with
    :func:`slider`, :func:`dropdown` and :func:`toggle`; plain values are passed through fixed.
    Returns the ipywidgets ``interactive`` object (live) or ``draw``'s return value (headless; with
    ``TUTOR_WIDGET_SWEEP=1`` the extremes are drawn too, see the module docstring).
    """
    defaults = {k: (c.default if isinstance(c, _Control) else c) for k, c in controls.items()}
    if is_headless():
        out = draw(**defaults)
        plt.show()
        if is_sweeping():
            name = getattr(draw, "__name__", "the widget")
            for key, value in sweep_values(controls):
                try:
                    draw(**{**defaults, key: value})
                except Exception as e:
                    plt.close("all")
                    raise RuntimeError(f"widget {name} failed with {key}={value!r} (the other controls at their "
                                       f"defaults): {type(e).__name__}: {e}") from e
                plt.close("all")
        return out
    import ipywidgets as w

    widgets = {k: (c.build(k) if isinstance(c, _Control) else w.fixed(c)) for k, c in controls.items()}

    def _draw(**values):
        draw(**values)
        plt.show()

    return w.interactive(_draw, **widgets)
