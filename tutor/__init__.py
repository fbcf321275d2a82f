"""tutor: an interactive teaching package for seven meta-learning papers by Haebeom Lee et al.

Importing :mod:`tutor` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless already set) before torch loads,
and, when ``TUTOR_NO_NETWORK=1``, installs a guard that refuses outgoing network connections
(the test-suite sets it so notebooks prove they run offline).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tutor import _netguard  # noqa: E402

if os.environ.get("TUTOR_NO_NETWORK") == "1":
    _netguard.install()

from tutor.runtime import configure_threads, get_device, seed_everything  # noqa: E402

__all__ = ["configure_threads", "get_device", "seed_everything"]
__version__ = "0.1.0"
