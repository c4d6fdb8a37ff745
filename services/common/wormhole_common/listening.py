"""Listening sockets for the services' public ports.

`::` (the default) is one IPv6 socket with IPV6_V6ONLY off, so IPv4 clients reach it too, as
IPv4-mapped addresses (::ffff:a.b.c.d) that every per-address count reads as the IPv4 address.
trio's own `open_tcp_listeners` always sets IPV6_V6ONLY, so `::` is handled here; any other
host (an IPv4 address, an IPv6 address: that family only; a name) is left to trio. A kernel
without IPv6 gets 0.0.0.0 instead, with one log line.
"""

from __future__ import annotations

import errno
import logging
import socket

import trio

log = logging.getLogger(__name__)

DUAL_STACK = "::"
IPV4_ANY = "0.0.0.0"
# socket() says so where the kernel has no IPv6 at all (ipv6.disable=1); bind() where :: is
# not an address this host has
NO_IPV6 = {errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.EADDRNOTAVAIL}
MAX_BACKLOG = 0xFFFF  # as trio asks: the kernel caps it at net.core.somaxconn


def endpoint(host: str, port: int) -> str:
    """`host:port` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bound(listeners: list[trio.SocketListener]) -> str:
    """Where `listeners` really listen (after a fallback, or a name resolved), for the log."""
    names = (endpoint(*listener.socket.getsockname()[:2]) for listener in listeners)
    return ", ".join(dict.fromkeys(names))


def dual_stack_socket(port: int) -> socket.socket | None:
    """A socket bound to [::]:`port` that takes IPv4 too; None where the kernel has no IPv6.
    Raises OSError for anything else (the port is in use, say)."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno in NO_IPV6:
            return None
        raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((DUAL_STACK, port))
    except OSError as exc:
        sock.close()
        if exc.errno in NO_IPV6:
            return None
        raise
    return sock


async def open_listeners(port: int, host: str, *,
                         backlog: int | None = None) -> list[trio.SocketListener]:
    """Listening sockets for `host:port` (see the module's docstring for `::`)."""
    if host == DUAL_STACK:
        sock = dual_stack_socket(port)
        if sock is not None:
            sock.listen(backlog if backlog is not None else MAX_BACKLOG)
            return [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
        log.warning("this machine has no IPv6: listening on %s (IPv4 only) instead of %s",
                    IPV4_ANY, DUAL_STACK)
        host = IPV4_ANY
    return await trio.open_tcp_listeners(port, host=host, backlog=backlog)
