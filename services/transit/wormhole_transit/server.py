"""The relay's lifecycle: listen, serve through the admission limits, drain on stop.

Connections are served by `connection.py`, their rules decided by `machine.py` and
`rendezvous.py`; this file only wires the parts together and owns start and stop.
"""

from __future__ import annotations

import logging
import secrets
import time

import trio
from wormhole_common.accepting import Handler
from wormhole_common.listening import bound, open_listeners
from wormhole_common.observability import MetricsEndpoint

from wormhole_transit.admission import Admission
from wormhole_transit.connection import ConnectionHandler
from wormhole_transit.core.stats import TransitStats
from wormhole_transit.ledger import Ledger
from wormhole_transit.metrics import TransitMetrics
from wormhole_transit.relay import HAS_SPLICE
from wormhole_transit.settings import TransitSettings
from wormhole_transit.usage_writer import Current, UsageRecorder

log = logging.getLogger(__name__)

BACKLOG = 1024


class TransitServer:
    def __init__(self, settings: TransitSettings, recorder: UsageRecorder, *,
                 use_splice: bool = HAS_SPLICE) -> None:
        """`use_splice`: relay TCP-TCP pairs with splice(2) where the kernel has it."""
        self.settings = settings
        self.recorder = recorder
        self.stats = TransitStats()
        self.server_id = secrets.token_hex(8)
        self.rebooted = time.time()
        self.port: int | None = None
        self.websocket_port: int | None = None
        self.metrics = TransitMetrics(
            self.stats, max_connections=settings.max_connections,
            max_connections_per_ip=settings.max_connections_per_ip,
            usage_dropped=lambda: recorder.dropped)
        if recorder.db is not None and recorder.db.observer is None:
            recorder.db.observer = self.metrics.database
        self.endpoint = MetricsEndpoint(self.metrics.registry, ready=self._ready)
        self.admission = Admission(self.stats, max_connections=settings.max_connections,
                                   max_connections_per_ip=settings.max_connections_per_ip)
        self.book = Ledger(self.admission, self.stats, self.metrics, recorder.record,
                           blur_seconds=settings.blur_usage_seconds)
        self.handler = ConnectionHandler(
            self.book,
            handshake_timeout=settings.handshake_timeout_seconds,
            lonely_timeout=settings.lonely_timeout_seconds, use_splice=use_splice)

    def current(self, now: float) -> Current:
        s = self.stats
        return Current(rebooted=self.rebooted, updated=now, connected=2 * len(s.pairs),
                       waiting=s.waiting_tokens, incomplete_bytes=s.live_bytes)

    async def _ready(self) -> bool:
        """Listening, and the database answers (when there is one)."""
        if self.port is None:
            return False
        if self.recorder.db is not None:
            await self.recorder.db.ping()
        return True

    async def serve(
        self, stop: trio.Event, *,
        task_status: trio.TaskStatus[TransitServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        s = self.settings
        listeners = await open_listeners(s.port, s.host, backlog=BACKLOG)
        self.port = listeners[0].socket.getsockname()[1]
        ws_listeners: list[trio.SocketListener] = []
        try:
            if s.websocket_port is not None:
                ws_listeners = await open_listeners(s.websocket_port, s.host, backlog=BACKLOG)
                self.websocket_port = ws_listeners[0].socket.getsockname()[1]
            await self._run(stop, listeners, ws_listeners, task_status)
        finally:
            for listener in listeners + ws_listeners:
                await trio.aclose_forcefully(listener)
        log.info("transit relay stopped")

    async def _run(
        self, stop: trio.Event, listeners: list[trio.SocketListener],
        ws_listeners: list[trio.SocketListener], task_status: trio.TaskStatus[TransitServer],
    ) -> None:
        s = self.settings
        async with trio.open_nursery() as background:
            if s.metrics_port:
                await background.start(self.endpoint.serve, s.metrics_host, s.metrics_port)
            background.start_soon(self.recorder.run)
            background.start_soon(self._current_loop)
            async with trio.open_nursery() as handlers:
                handlers.start_soon(self.handler.watch_waiting, handlers)
                async with trio.open_nursery() as acceptors:
                    lanes: list[tuple[Handler, list[trio.SocketListener]]] = [
                        (self.handler.serve_tcp, listeners),
                        (self.handler.serve_websocket, ws_listeners)]
                    for handler, lane in lanes:
                        if lane:
                            await acceptors.start(self.admission.serve, handler, lane, handlers)
                    log.info("transit relay listening on %s", ", ".join(
                        f"{bound(lane)} ({kind})"
                        for kind, lane in (("TCP", listeners), ("WebSocket", ws_listeners))
                        if lane))
                    task_status.started(self)
                    await stop.wait()
                    self.port = None  # not ready any more
                    acceptors.cancel_scope.cancel()
                await self._drain(handlers)
            await self.recorder.flush(5)
            await self._write_current(time.time())
            background.cancel_scope.cancel()

    async def _drain(self, handlers: trio.Nursery) -> None:
        """Close connections without a partner now; give pairs the grace period to finish."""
        unpaired = self.handler.close_unpaired()
        log.info("stopping: closed %d unpaired connections, waiting up to %ss for %d pairs",
                 unpaired, self.settings.shutdown_grace_seconds, len(self.stats.pairs))
        if self.book.connections:
            with trio.move_on_after(self.settings.shutdown_grace_seconds):
                await self.book.all_closed.wait()
        handlers.cancel_scope.cancel()

    async def _current_loop(self) -> None:
        if self.recorder.db is None:
            return
        await self.recorder.ready.wait()
        while True:
            await self._write_current(time.time())
            await trio.sleep(self.settings.current_interval_seconds)

    async def _write_current(self, now: float) -> None:
        try:
            await self.recorder.write_current(self.server_id, self.current(now))
        except Exception as exc:
            log.warning("could not write the current snapshot: %s", exc)
