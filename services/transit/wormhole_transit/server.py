"""The trio shell: listeners, per-connection handshakes, waiting, pairs, limits, shutdown.

One task per connection. A connection that finds its partner waiting runs the pair in its
own task; the waiting one's task just waits for the pair to finish. The pairing rules, moods
and records come from the sans-IO modules; this file only performs I/O and keeps counts.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import secrets
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream
from wormhole_common.observability import MetricsEndpoint

from wormhole_transit.handshake import (
    BAD_HANDSHAKE,
    IMPATIENT,
    OK,
    Accepted,
    Handshake,
    HandshakeParser,
    NeedMore,
    Rejected,
    parse_message,
)
from wormhole_transit.metrics import TransitMetrics
from wormhole_transit.pairing import Mood, Paired, PairingTable, pair_usage, single_usage
from wormhole_transit.relay import (
    Endpoint,
    Lost,
    PairStats,
    TcpEndpoint,
    WebSocketEndpoint,
    relay,
)
from wormhole_transit.settings import TransitSettings
from wormhole_transit.usage import Current, UsageRecorder

log = logging.getLogger(__name__)

BACKLOG = 1024
MAX_WS_MESSAGE = 16 << 20  # autobahn accepts any size; this bounds one buffered message
_ACCEPT_CAPACITY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


@dataclass(eq=False)
class Connection:
    kind: Literal["tcp", "websocket"]
    ip: str
    started: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    mood: Mood = Mood.EMPTY
    endpoint: Endpoint | None = None
    verdict: Literal["paired", "redundant"] | None = None
    woken: trio.Event = field(default_factory=trio.Event)  # verdict was set
    released: trio.Event = field(default_factory=trio.Event)  # stopped watching its socket
    pair_done: trio.Event = field(default_factory=trio.Event)
    early: bytes = b""  # a WebSocket message read while the partner was being attached
    in_pair: bool = False
    recorded: bool = False


class TransitServer:
    def __init__(self, settings: TransitSettings, recorder: UsageRecorder) -> None:
        self.settings = settings
        self.recorder = recorder
        self.table: PairingTable[Connection] = PairingTable()
        self.connections: set[Connection] = set()
        self._all_closed = trio.Event()  # set whenever `connections` becomes empty
        self.per_ip: Counter[str] = Counter()
        self.pairs: set[PairStats] = set()
        self.moods: Counter[Mood] = Counter()
        self.refused: Counter[str] = Counter()
        self.timeouts: Counter[str] = Counter()
        self.server_id = secrets.token_hex(8)
        self.rebooted = time.time()
        self.port: int | None = None
        self.websocket_port: int | None = None
        self.metrics = TransitMetrics(self)
        if recorder.db is not None and recorder.db.observer is None:
            recorder.db.observer = self.metrics.database
        self.endpoint = MetricsEndpoint(self.metrics.registry, ready=self._ready)

    # -- observation ---------------------------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        """Payload bytes the relay itself holds right now, over all pairs."""
        return sum(p.buffered for p in self.pairs)

    def current(self, now: float) -> Current:
        return Current(
            rebooted=self.rebooted, updated=now, connected=2 * len(self.pairs),
            waiting=self.table.waiting_tokens,
            incomplete_bytes=sum(p.total_bytes for p in self.pairs),
        )

    async def _ready(self) -> bool:
        """Listening, and the database answers (when there is one)."""
        if self.port is None:
            return False
        if self.recorder.db is not None:
            await self.recorder.db.ping()
        return True

    # -- lifecycle -----------------------------------------------------------------------------

    async def serve(
        self, stop: trio.Event, *,
        task_status: trio.TaskStatus[TransitServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        s = self.settings
        listeners = await trio.open_tcp_listeners(s.port, host=s.host, backlog=BACKLOG)
        self.port = listeners[0].socket.getsockname()[1]
        ws_listeners: list[trio.SocketListener] = []
        try:
            if s.websocket_port is not None:
                ws_listeners = await trio.open_tcp_listeners(
                    s.websocket_port, host=s.host, backlog=BACKLOG)
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
                async with trio.open_nursery() as acceptors:
                    for listener in listeners:
                        acceptors.start_soon(self._accept_loop, listener, "tcp", handlers)
                    for listener in ws_listeners:
                        acceptors.start_soon(self._accept_loop, listener, "websocket", handlers)
                    ws = f", {s.host}:{self.websocket_port} (WebSocket)" if ws_listeners else ""
                    log.info("transit relay listening on %s:%s (TCP)%s", s.host, self.port, ws)
                    task_status.started(self)
                    await stop.wait()
                    self.port = None  # not ready any more
                    acceptors.cancel_scope.cancel()
                for listener in listeners + ws_listeners:
                    await listener.aclose()
                await self._drain(handlers)
            await self.recorder.flush(5)
            await self._write_current(time.time())
            background.cancel_scope.cancel()

    async def _drain(self, handlers: trio.Nursery) -> None:
        """Close connections without a partner now; give pairs the grace period to finish."""
        unpaired = [c for c in self.connections if not c.in_pair]
        log.info("stopping: closing %d unpaired connections, waiting up to %ss for %d pairs",
                 len(unpaired), self.settings.shutdown_grace_seconds, len(self.pairs))
        for conn in unpaired:
            conn.scope.cancel()
        if self.connections:
            with trio.move_on_after(self.settings.shutdown_grace_seconds):
                await self._all_closed.wait()
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

    # -- accepting -----------------------------------------------------------------------------

    async def _accept_loop(
        self, listener: trio.SocketListener, kind: Literal["tcp", "websocket"],
        handlers: trio.Nursery,
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY:
                    self.refused["accept_failed"] += 1
                    log.warning("accept failed (%s); pausing", exc)
                    await trio.sleep(0.1)
                    continue
                raise
            try:
                ip = str(stream.socket.getpeername()[0])
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:
                stream.socket.close()
                continue
            reason = self._refusal(ip)
            if reason is not None:
                self.refused[reason] += 1
                if self.refused[reason] in (1, 10, 100) or self.refused[reason] % 1000 == 0:
                    log.warning("refused %d connections so far: %s", self.refused[reason], reason)
                _close_quietly(stream.socket)
                continue
            conn = Connection(kind, ip, time.time())
            self.connections.add(conn)
            if self._all_closed.is_set():
                self._all_closed = trio.Event()
            self.per_ip[ip] += 1
            self.metrics.connections[kind].inc()
            handlers.start_soon(self._handle, conn, stream)

    def _refusal(self, ip: str) -> str | None:
        if len(self.connections) >= self.settings.max_connections:
            return "max_connections"
        if self.per_ip[ip] >= self.settings.max_connections_per_ip:
            return "max_connections_per_ip"
        return None

    async def _handle(self, conn: Connection, stream: trio.SocketStream) -> None:
        try:
            with conn.scope:
                if conn.kind == "tcp":
                    await self._serve_tcp(conn, stream)
                else:
                    await self._serve_websocket(conn, stream)
        except Exception:
            log.exception("connection handler failed")
        finally:
            if self.table.leave(conn):
                conn.mood = Mood.LONELY
            if not conn.in_pair:
                self._finish(conn, conn.mood)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            self.connections.discard(conn)
            if not self.connections:
                self._all_closed.set()
            self.per_ip[conn.ip] -= 1
            if not self.per_ip[conn.ip]:
                del self.per_ip[conn.ip]

    def _finish(self, conn: Connection, mood: Mood) -> None:
        """Record an unpaired connection's outcome once, before any lingering close."""
        if conn.recorded:
            return
        conn.recorded = True
        conn.mood = mood
        self.moods[conn.mood] += 1
        self.recorder.record(single_usage(conn.started, time.time(), conn.mood,
                                          self.settings.blur_usage_seconds))

    # -- TCP -----------------------------------------------------------------------------------

    async def _serve_tcp(self, conn: Connection, stream: trio.SocketStream) -> None:
        parser = HandshakeParser()
        result = None
        with trio.move_on_after(self.settings.handshake_timeout_seconds):
            while True:
                try:
                    data = await stream.receive_some(4096)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                result = parser.feed(data)
                if not isinstance(result, NeedMore):
                    break
        if result is None or isinstance(result, NeedMore):
            self.timeouts["handshake"] += 1
            return
        endpoint = TcpEndpoint(stream)
        if isinstance(result, Rejected):
            self._finish(conn, Mood.ERRORY)
            await _send_and_close(endpoint, BAD_HANDSHAKE)
        elif isinstance(result, Accepted):
            await self._arrive(conn, endpoint, result.handshake, result.rest)
        # Overlong: silent close, mood empty

    # -- WebSocket -----------------------------------------------------------------------------

    async def _serve_websocket(self, conn: Connection, stream: trio.SocketStream) -> None:
        async with trio.open_nursery() as nursery:
            try:
                await self._websocket_session(conn, stream, nursery)
            finally:
                nursery.cancel_scope.cancel()

    async def _websocket_session(
        self, conn: Connection, stream: trio.SocketStream, nursery: trio.Nursery,
    ) -> None:
        message: bytes | str | None = None
        ws: WebSocketConnection | None = None
        with trio.move_on_after(self.settings.handshake_timeout_seconds):
            request = await wrap_server_stream(nursery, stream, max_message_size=MAX_WS_MESSAGE)
            ws = await request.accept()
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                return
        if ws is None or message is None:
            self.timeouts["handshake"] += 1
            return
        if isinstance(message, str):
            return  # the reference drops the connection: mood empty
        endpoint = WebSocketEndpoint(ws)
        handshake = parse_message(message)
        if handshake is None:
            self._finish(conn, Mood.ERRORY)
            await _send_and_close(endpoint, BAD_HANDSHAKE)
            return
        await self._arrive(conn, endpoint, handshake, b"")

    # -- waiting and pairing -------------------------------------------------------------------

    async def _arrive(self, conn: Connection, endpoint: Endpoint, handshake: Handshake,
                      rest: bytes) -> None:
        conn.endpoint = endpoint
        conn.mood = Mood.LONELY
        outcome = self.table.arrive(conn, handshake)
        if isinstance(outcome, Paired):
            partner = outcome.partner
            for other in outcome.redundant:
                other.verdict = "redundant"
                other.woken.set()
            partner.verdict = "paired"
            partner.in_pair = conn.in_pair = True
            partner.woken.set()
            await self._run_pair(partner, conn, rest)
            return
        if rest:
            self._impatient(conn)
            await _send_and_close(endpoint, IMPATIENT)
            return
        await self._wait(conn, endpoint)

    def _impatient(self, conn: Connection) -> None:
        self.table.leave(conn)
        self._finish(conn, Mood.IMPATIENT)

    async def _wait(self, conn: Connection, endpoint: Endpoint) -> None:
        sent_data = False
        try:
            with trio.move_on_after(self.settings.lonely_timeout_seconds) as timer:
                async with trio.open_nursery() as nursery:

                    async def watch() -> None:
                        nonlocal sent_data
                        if isinstance(endpoint, TcpEndpoint):
                            sent_data = await endpoint.waiting_for_partner()
                        else:
                            assert isinstance(endpoint, WebSocketEndpoint)
                            try:
                                message = await endpoint.ws.get_message()
                            except ConnectionClosed:
                                message = b""
                            sent_data = bool(message)
                            if isinstance(message, bytes):
                                conn.early = message
                        nursery.cancel_scope.cancel()

                    async def woken() -> None:
                        await conn.woken.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(watch)
                    nursery.start_soon(woken)
        finally:
            conn.released.set()
        if conn.verdict == "paired":
            await conn.pair_done.wait()
            return
        if conn.verdict == "redundant":
            self._finish(conn, Mood.REDUNDANT)
            await endpoint.close()
            return
        if sent_data:
            self._impatient(conn)
            await _send_and_close(endpoint, IMPATIENT)
            return
        if timer.cancelled_caught:
            self.timeouts["lonely"] += 1
        self.table.leave(conn)
        self._finish(conn, Mood.LONELY)
        await endpoint.close()

    async def _run_pair(self, first: Connection, second: Connection, rest: bytes) -> None:
        """`first` waited, `second` just arrived: `ok` to both, then relay until one leaves."""
        assert first.endpoint is not None and second.endpoint is not None
        a, b = first.endpoint, second.endpoint
        stats = PairStats()
        self.pairs.add(stats)
        paired = time.time()
        self.metrics.waiting.observe(max(second.started - first.started, 0.0))
        try:
            await first.released.wait()
            await b.send(OK)
            await a.send(OK)
            if first.early:
                stats.total_bytes += len(first.early)
                await b.send(first.early)
            if rest:
                stats.total_bytes += len(rest)
                await a.send(rest)
            await relay(a, b, stats)
        except Lost:
            pass
        finally:
            self.pairs.discard(stats)
            self.metrics.finished_bytes += stats.total_bytes
            self.metrics.pair_duration.observe(max(time.time() - paired, 0.0))
            self.moods[Mood.HAPPY] += 1
            self.recorder.record(pair_usage(
                first.started, second.started, time.time(), stats.total_bytes,
                self.settings.blur_usage_seconds,
            ))
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as closing:
                    closing.start_soon(a.close)
                    closing.start_soon(b.close)
            first.pair_done.set()


async def _send_and_close(endpoint: Endpoint, message: bytes) -> None:
    with contextlib.suppress(Lost):
        await endpoint.send(message)
    await endpoint.close()


def _close_quietly(sock: trio.socket.SocketType) -> None:
    """A refusal: FIN without a byte; the client sees the connection end."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    sock.close()
