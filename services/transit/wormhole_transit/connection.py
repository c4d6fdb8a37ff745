"""The trio shell of one connection: read the handshake, wait for a partner, run the pair.

One task per connection, and nothing else while it waits: the task itself watches its socket
inside one cancel scope, whose deadline is the handshake timer and then the lonely timer, and
which the arriving partner cancels to wake it. The woken (first) side runs the pair; the second
side's task only keeps its stream open until the pair ends. Every decision is an input to the
connection's state machine (`machine.py`) through the rendezvous; this file performs the I/O.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from wormhole_transit.handshake import (
    BAD_HANDSHAKE,
    IMPATIENT,
    OK,
    Accepted,
    HandshakeParser,
    NeedMore,
    Overlong,
    Rejected,
    Result,
    parse_message,
)
from wormhole_transit.machine import Ended, Machine, State
from wormhole_transit.metrics import TransitMetrics
from wormhole_transit.records import Mood, Usage
from wormhole_transit.relay import (
    HAS_SPLICE,
    Endpoint,
    Lost,
    PairStats,
    StreamEndpoint,
    WebSocketEndpoint,
    relay,
)
from wormhole_transit.rendezvous import Pair, Rendezvous, Wait
from wormhole_transit.stats import TransitStats

log = logging.getLogger(__name__)

MAX_WS_MESSAGE = 16 << 20  # autobahn accepts any size; this bounds one buffered message
HANDSHAKE_READ = 1100  # a whole line (at most MAX_LINE + LF) in one read
TIMEOUT_PHASES = {State.HANDSHAKING: "handshake", State.WAITING: "lonely"}
# The last words before closing, by mood; the others close without a word.
FAREWELLS: dict[Mood | None, bytes] = {Mood.ERRORY: BAD_HANDSHAKE, Mood.IMPATIENT: IMPATIENT}


class Connection:
    """What the shell keeps per connection besides its state machine."""

    __slots__ = ("endpoint", "machine", "pair_done", "partner", "pending", "scope")

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.scope = trio.CancelScope()  # the handshake and the wait: timers, wake-up, drain
        self.endpoint: Endpoint | None = None
        self.partner: Connection | None = None  # set on the first side when paired
        self.pending = b""  # bytes read before `ok`, for the partner
        self.pair_done: trio.Event | None = None  # the second side waits on it


Record = Callable[[Usage], None]


class ConnectionHandler:
    """Serves TCP and WebSocket connections; owns the set of open ones for the drain."""

    def __init__(
        self, rendezvous: Rendezvous[Connection], stats: TransitStats, metrics: TransitMetrics,
        record: Record, *, handshake_timeout: float, lonely_timeout: float,
        blur_seconds: int | None = None, use_splice: bool = HAS_SPLICE,
    ) -> None:
        self.rendezvous = rendezvous
        self.stats = stats
        self.metrics = metrics
        self.record = record
        self.handshake_timeout = handshake_timeout
        self.lonely_timeout = lonely_timeout
        self.blur_seconds = blur_seconds
        self.use_splice = use_splice
        self.connections: set[Connection] = set()
        self.all_closed = trio.Event()  # set whenever `connections` becomes empty

    def close_unpaired(self) -> int:
        """At shutdown: end every connection that is not relaying; how many there were."""
        unpaired = [c for c in self.connections if c.machine.state is not State.RELAYING]
        for conn in unpaired:
            conn.scope.cancel()
        return len(unpaired)

    async def serve_tcp(self, stream: trio.SocketStream) -> None:
        await self._serve("tcp", _TcpWatch(stream))

    async def serve_websocket(self, stream: trio.SocketStream) -> None:
        async with trio.open_nursery() as nursery:  # trio-websocket's reader task
            try:
                await self._serve("websocket", _WebSocketWatch(stream, nursery))
            finally:
                nursery.cancel_scope.cancel()

    async def _serve(self, kind: str, watch: _TcpWatch | _WebSocketWatch) -> None:
        conn = Connection(Machine(time.time(), self.blur_seconds))
        self.connections.add(conn)
        if self.all_closed.is_set():
            self.all_closed = trio.Event()
        self.metrics.connections[kind].inc()
        try:
            await self._run(conn, watch)
        except Exception:
            log.exception("connection handler failed")
        finally:
            self._ended(self.rendezvous.lost(conn, time.time()))
            self.connections.discard(conn)
            if not self.connections:
                self.all_closed.set()

    async def _run(self, conn: Connection, watch: _TcpWatch | _WebSocketWatch) -> None:
        result: Result | None = None
        sent = False  # bytes arrived while waiting
        with conn.scope:
            conn.scope.relative_deadline = self.handshake_timeout
            result = await watch.handshake()
            if isinstance(result, Accepted | Rejected):
                conn.endpoint = watch.endpoint()
            if isinstance(result, Accepted):
                self._arrive(conn, result)
                if conn.machine.state is State.WAITING:
                    conn.scope.deadline = trio.current_time() + self.lonely_timeout
                    sent, conn.pending = await watch.wait(conn.machine)
        machine, now = conn.machine, time.time()
        if machine.state is State.HANDSHAKING:
            if isinstance(result, Rejected):
                self._ended(machine.handshake_bad(now))
            elif isinstance(result, Overlong):
                self._ended(machine.handshake_overlong(now))
            elif _timed_out(conn.scope):
                self._timeout(conn, now)
        elif machine.state is State.WAITING:
            if sent:
                self._ended(self.rendezvous.early_data(conn, now))
            elif _timed_out(conn.scope):
                self._timeout(conn, now)
            else:
                self._ended(self.rendezvous.lost(conn, now))
        if machine.state is State.RELAYING:
            await self._relaying(conn)
        elif machine.state is State.DONE and conn.endpoint is not None:
            await _farewell(conn.endpoint, FAREWELLS.get(machine.mood))
        # otherwise (silence, a partial or overlong line) serve_listeners just closes it

    def _arrive(self, conn: Connection, accepted: Accepted) -> None:
        outcome = self.rendezvous.arrive(conn, accepted.handshake, time.time(),
                                         early=bool(accepted.rest))
        if isinstance(outcome, Pair):
            for waiter, ended in outcome.redundant:
                self._ended(ended)
                waiter.scope.cancel()
            first = outcome.first
            first.partner = conn
            conn.pending = accepted.rest
            conn.pair_done = trio.Event()
            first.scope.cancel()  # wake it: the first side runs the pair
        elif not isinstance(outcome, Wait):
            self._ended(outcome)
        self._count_waiting()

    def _timeout(self, conn: Connection, now: float) -> None:
        self.stats.timeouts[TIMEOUT_PHASES[conn.machine.state]] += 1
        self._ended(self.rendezvous.timeout(conn, now))

    async def _relaying(self, conn: Connection) -> None:
        if conn.partner is None:
            assert conn.pair_done is not None
            await conn.pair_done.wait()  # the first side's task relays; keep our stream open
            return
        await self._run_pair(conn, conn.partner)

    async def _run_pair(self, first: Connection, second: Connection) -> None:
        """`first` waited, `second` just arrived: `ok` to both, then relay until one leaves."""
        assert first.endpoint is not None and second.endpoint is not None
        a, b = first.endpoint, second.endpoint
        stats = PairStats()
        self.stats.pairs.add(stats)
        paired = time.time()
        self.metrics.waiting.observe(max(second.machine.started - first.machine.started, 0.0))
        try:
            await b.send(OK)
            await a.send(OK)
            for data, to in ((first.pending, b), (second.pending, a)):
                if data:
                    stats.total_bytes += len(data)
                    await to.send(data)
            await relay(a, b, stats, use_splice=self.use_splice)
        except Lost:
            pass
        finally:
            now = time.time()
            self.stats.pairs.discard(stats)
            self.stats.finished_bytes += stats.total_bytes
            self.metrics.pair_duration.observe(max(now - paired, 0.0))
            self._ended(self.rendezvous.lost(first, now, stats.total_bytes))
            self._ended(self.rendezvous.lost(second, now, stats.total_bytes))
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as closing:
                    closing.start_soon(a.close)
                    closing.start_soon(b.close)
            assert second.pair_done is not None
            second.pair_done.set()

    def _ended(self, ended: Ended | None) -> None:
        """Count and record an outcome the state machine decided."""
        if ended is None:
            return
        if ended.usage is not None:
            self.stats.moods[ended.mood] += 1
            self.record(ended.usage)
        self._count_waiting()

    def _count_waiting(self) -> None:
        self.stats.waiting_sides = self.rendezvous.waiting_connections
        self.stats.waiting_tokens = self.rendezvous.waiting_tokens


def _timed_out(scope: trio.CancelScope) -> bool:
    return scope.cancelled_caught and trio.current_time() >= scope.deadline


async def _farewell(endpoint: Endpoint, message: bytes | None) -> None:
    if message is not None:
        with contextlib.suppress(Lost):
            await endpoint.send(message)
    await endpoint.close()


class _TcpWatch:
    """The TCP side before pairing: the handshake, then waiting without reading."""

    __slots__ = ("stream",)

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream

    async def handshake(self) -> Result | None:
        """The verdict on the first line; None if the client went away first."""
        parser = HandshakeParser()
        while True:
            try:
                data = await self.stream.receive_some(HANDSHAKE_READ)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            result = parser.feed(data)
            if not isinstance(result, NeedMore):
                return result

    def endpoint(self) -> Endpoint:
        return StreamEndpoint(self.stream)

    async def wait(self, machine: Machine) -> tuple[bool, bytes]:
        """Until the client sends (True) or leaves (False); consumes nothing."""
        sock = self.stream.socket
        await trio.lowlevel.wait_readable(sock)
        if machine.state is not State.WAITING:
            return False, b""  # paired meanwhile: what it sent is relayed
        try:
            return bool(await sock.recv(1, socket.MSG_PEEK)), b""
        except OSError:
            return False, b""


class _WebSocketWatch:
    """The WebSocket side before pairing: the first message is the handshake (spec 2)."""

    __slots__ = ("nursery", "stream", "ws")

    def __init__(self, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        self.stream = stream
        self.nursery = nursery
        self.ws: WebSocketConnection | None = None

    async def handshake(self) -> Result | None:
        request = await wrap_server_stream(self.nursery, self.stream,
                                           max_message_size=MAX_WS_MESSAGE)
        self.ws = await request.accept()
        try:
            message = await self.ws.get_message()
        except ConnectionClosed:
            return None
        if isinstance(message, str):
            return None  # the reference drops the connection: mood empty
        handshake = parse_message(message)
        return Rejected() if handshake is None else Accepted(handshake, b"")

    def endpoint(self) -> Endpoint:
        assert self.ws is not None
        return WebSocketEndpoint(self.ws)

    async def wait(self, machine: Machine) -> tuple[bool, bytes]:
        """Until a message (True; its bytes are relayed if a partner came meanwhile)."""
        assert self.ws is not None
        try:
            message = await self.ws.get_message()
        except ConnectionClosed:
            return False, b""
        return bool(message), message if isinstance(message, bytes) else b""
