"""Refuse outgoing network connections (offline guarantee for tests and notebooks).

Loopback and Unix sockets stay allowed (Jupyter kernels talk over them).
"""

from __future__ import annotations

import ipaddress
import socket

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


class NetworkAccessError(RuntimeError):
    """Raised when code tries to open a network connection while the guard is installed."""


def _is_local(sock: socket.socket, address) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # Unix sockets and the like
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: resolving it would already be network access


def _guarded_connect(self, address):
    if not _is_local(self, address):
        raise NetworkAccessError(f"tutor runs offline: a connection to {address!r} was refused "
                                 "(TUTOR_NO_NETWORK=1 is set)")
    return _original_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(self, address):
        raise NetworkAccessError(f"tutor runs offline: a connection to {address!r} was refused "
                                 "(TUTOR_NO_NETWORK=1 is set)")
    return _original_connect_ex(self, address)


def install() -> None:
    """Patch ``socket.socket.connect`` so that non-loopback connections raise."""
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex


def uninstall() -> None:
    socket.socket.connect = _original_connect
    socket.socket.connect_ex = _original_connect_ex
