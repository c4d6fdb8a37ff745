"""Connection limits, checked by the handler of each accepted connection
(`wormhole_common.accepting` owns accepting and the back-off when the process runs out of
file descriptors or memory).

A refused connection is closed at once without a byte: the only signal the protocol has.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections import Counter

import trio
from wormhole_common.accepting import Handler, serve_listeners
from wormhole_common.core.addresses import address_key

from wormhole_transit.core.stats import TransitStats

log = logging.getLogger(__name__)


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
        for listener in listeners:
            # accepted sockets inherit it (Linux, the BSDs, macOS): no call per connection
            listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        await serve_listeners(handler, listeners, nursery, self._accept_failed,
                              task_status=task_status)

    def _accept_failed(self, _exc: OSError) -> None:
        self.stats.refused["accept_failed"] += 1

    def admit(self, stream: trio.SocketStream) -> str | None:
        """The client's address as the per-address limit counts it (`address_key`: an
        IPv4-mapped address as IPv4, IPv6 by its /64) if within the limits; otherwise None,
        after a FIN."""
        try:
            ip = sys.intern(address_key(str(stream.socket.getpeername()[0])))
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
