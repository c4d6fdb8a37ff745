"""Connection limits in front of `trio.serve_listeners`, which owns accepting and the back-off
when the process runs out of file descriptors or memory.

A refused connection is closed at once without a byte: the only signal the protocol has.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from wormhole_transit.stats import TransitStats

log = logging.getLogger(__name__)

Handler = Callable[[trio.SocketStream], Awaitable[None]]


class _CountingListener(trio.abc.Listener[trio.SocketStream]):
    """Counts failed accepts; `serve_listeners` decides whether to back off or give up."""

    def __init__(self, listener: trio.SocketListener, stats: TransitStats) -> None:
        self.listener = listener
        self.stats = stats

    async def accept(self) -> trio.SocketStream:
        try:
            return await self.listener.accept()
        except OSError:
            self.stats.refused["accept_failed"] += 1
            raise

    async def aclose(self) -> None:
        await self.listener.aclose()


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
        """Accept on `listeners` until cancelled; admitted connections run in `nursery`."""
        counting = [_CountingListener(listener, self.stats) for listener in listeners]
        await trio.serve_listeners(partial(self._admit, handler), counting,
                                   handler_nursery=nursery,
                                   task_status=task_status)

    async def _admit(self, handler: Handler, stream: trio.SocketStream) -> None:
        try:
            ip = str(stream.socket.getpeername()[0])
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except OSError:
            return  # gone already; serve_listeners closes the stream
        reason = self._refusal(ip)
        if reason is not None:
            self._refuse(reason)
            # FIN without a byte, then serve_listeners closes the socket
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_eof()
            return
        self.stats.connections_open += 1
        self.per_ip[ip] += 1
        try:
            await handler(stream)
        finally:
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
