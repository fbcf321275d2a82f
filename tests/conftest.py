"""Test harness: offline guard, headless plotting, and notebooks collected from their jupytext sources."""

import os

os.environ["TUTOR_NO_NETWORK"] = "1"      # tutor installs a socket guard (also in notebook kernels)
os.environ["TUTOR_HEADLESS"] = "1"        # widgets draw at their defaults ...
os.environ["TUTOR_WIDGET_SWEEP"] = "1"    # ... and at every control's extremes (tutor.widgets)
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["TUTOR_PROGRESS"] = "0"          # no progress bars: they flood the kernel's output channel
