"""Refuse outgoing network access (offline guarantee for tests and notebooks).

Guarded: TCP/UDP ``connect``/``connect_ex``, UDP ``sendto`` and host-name look-ups
(``socket.getaddrinfo``, ``gethostbyname``), so a download by host name fails with this guard's
message, not a resolver error.  Loopback, ``localhost`` and Unix sockets stay allowed (Jupyter
kernels talk over them).
"""

from __future__ import annotations

import ipaddress
import socket

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex
_original_sendto = socket.socket.sendto
_original_getaddrinfo = socket.getaddrinfo
_original_gethostbyname = socket.gethostbyname


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


def _local_host(host) -> bool:
    if host is None or host in ("localhost", "", b"localhost"):
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.endswith(".localhost")


def _refuse(what) -> None:
    raise NetworkAccessError(f"tutor runs offline: {what} was refused (TUTOR_NO_NETWORK=1 is set)")


def _guarded_sendto(self, data, *args):
    address = args[-1]
    if not _is_local(self, address):
        _refuse(f"sending to {address!r}")
    return _original_sendto(self, data, *args)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _local_host(host):
        _refuse(f"looking up the host {host!r}")
    return _original_getaddrinfo(host, *args, **kwargs)


def _guarded_gethostbyname(host):
    if not _local_host(host):
        _refuse(f"looking up the host {host!r}")
    return _original_gethostbyname(host)


def install() -> None:
    """Patch the socket module so that non-loopback connections, sends and look-ups raise."""
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.socket.sendto = _guarded_sendto
    socket.getaddrinfo = _guarded_getaddrinfo
    socket.gethostbyname = _guarded_gethostbyname


def uninstall() -> None:
    socket.socket.connect = _original_connect
    socket.socket.connect_ex = _original_connect_ex
    socket.socket.sendto = _original_sendto
    socket.getaddrinfo = _original_getaddrinfo
    socket.gethostbyname = _original_gethostbyname
