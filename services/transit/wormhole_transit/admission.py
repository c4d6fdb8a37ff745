"""Connection limits, and the accept loop in front of them.

The loop replaces `trio.serve_listeners`, which closes every handler's stream with
`aclose_forcefully` (a cancelled scope and a `Cancelled` raised and caught per connection: a
tenth of the relay's CPU per pair in a setup storm). Here the handler's socket is just closed
when the handler returns; running out of descriptors or memory backs off as trio's loop does.

A refused connection is closed at once without a byte: the only signal the protocol has.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import sys
from collections import Counter
from collections.abc import Awaitable, Callable

import trio

from wormhole_transit.stats import TransitStats

log = logging.getLogger(__name__)

Handler = Callable[[trio.SocketStream], Awaitable[None]]
# accept() failing for want of resources: wait a little, as `trio.serve_listeners` does
_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF_SECONDS = 0.1
# ...or because that client is already gone, or a firewall said no: skip it (as trio does)
_IGNORED_ERRNOS = {getattr(errno, name) for name in (
    "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH",
    "EOPNOTSUPP", "ENETUNREACH", "EPERM", "EAGAIN") if hasattr(errno, name)}


async def _serve_one(handler: Handler, stream: trio.SocketStream) -> None:
    try:
        await handler(stream)
    finally:
        stream.socket.close()  # a socket the handler detached (parked) is not closed


async def _accept_loop(listener: trio.SocketListener, handler: Handler, nursery: trio.Nursery,
                       stats: TransitStats) -> None:
    sock = listener.socket
    try:
        while True:
            try:
                accepted, _ = await sock.accept()
            except OSError as exc:
                if exc.errno in _IGNORED_ERRNOS:
                    continue
                stats.refused["accept_failed"] += 1
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                log.warning("accept failed (%s); waiting %.1f s",
                            errno.errorcode.get(exc.errno or 0, exc), ACCEPT_BACKOFF_SECONDS)
                await trio.sleep(ACCEPT_BACKOFF_SECONDS)
                continue
            nursery.start_soon(_serve_one, handler, trio.SocketStream(accepted))
    finally:
        sock.close()


class Admission:
    def __init__(self, stats: TransitStats, *, max_connections: int,
                 max_connections_per_ip: int) -> None:
        self.stats = stats
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.per_ip: Counter[str] = Counter()

    async def serve(
        self, handler: Handler, listeners: list[trio.SocketListener], nursery: trio.Nursery,
        *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on `listeners` until cancelled; each connection runs `handler` in `nursery`,
        which calls `admit` first and `release` when the connection is closed."""
        async with trio.open_nursery() as accepting:
            for listener in listeners:
                # accepted sockets inherit it (Linux, the BSDs, macOS): no call per connection
                listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                accepting.start_soon(_accept_loop, listener, handler, nursery, self.stats)
            task_status.started(listeners)

    def admit(self, stream: trio.SocketStream) -> str | None:
        """The client's address if within the limits; otherwise None, after a FIN."""
        try:
            ip = sys.intern(str(stream.socket.getpeername()[0]))
        except OSError:
            return None  # gone already; the accept loop closes the stream
        reason = self._refusal(ip)
        if reason is not None:
            self._refuse(reason)
            with contextlib.suppress(OSError):
                stream.socket.shutdown(socket.SHUT_WR)  # no byte; the accept loop closes it
            return None
        self.stats.connections_open += 1
        self.per_ip[ip] += 1
        return ip

    def release(self, ip: str) -> None:
        self.stats.connections_open -= 1
        self.per_ip[ip] -= 1
        if not self.per_ip[ip]:
            del self.per_ip[ip]

    def _refusal(self, ip: str) -> str | None:
        if self.stats.connections_open >= self.max_connections:
            return "max_connections"
        if self.per_ip[ip] >= self.max_connections_per_ip:
            return "max_connections_per_ip"
        return None

    def _refuse(self, reason: str) -> None:
        refused = self.stats.refused
        refused[reason] += 1
        if refused[reason] in (1, 10, 100) or refused[reason] % 1000 == 0:
            log.warning("refused %d connections so far: %s", refused[reason], reason)
