"""The trio shell of one connection: read the handshake, wait for a partner, run the pair.

A connection has one task while it sends its handshake. A TCP connection that must wait for
its partner then gives up its task: it is parked in the `WaitingRoom` (one selector, one task for
all waiting connections). The partner's task takes it back and runs the pair. A WebSocket
connection keeps its one task while waiting (it reads the stream, to answer pings); the
partner wakes it by cancelling its scope and relays once it has let go of its socket. What
this file sees (a handshake, a cause that ends a connection, a closed socket) it tells the
`Ledger`, which owns every connection's end; this file performs the I/O.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time

import trio
from wormhole_common.core.websocket import HandshakeError
from wormhole_common.http import answer, read_head, refusal, split_head
from wormhole_common.wsconnection import Closed, Upgrade, WebSocket

from wormhole_transit.core.handshake import (
    BAD_HANDSHAKE,
    IMPATIENT,
    Accepted,
    HandshakeParser,
    NeedMore,
    Overlong,
    Rejected,
    Result,
    parse_message,
)
from wormhole_transit.core.machine import State
from wormhole_transit.core.rendezvous import Cause
from wormhole_transit.core.usage import Mood
from wormhole_transit.ledger import Connection, Ledger
from wormhole_transit.pair import run_pair
from wormhole_transit.relay import (
    HAS_SPLICE,
    Endpoint,
    Lost,
    StreamEndpoint,
    WebSocketEndpoint,
)
from wormhole_transit.waiting import WaitingRoom

log = logging.getLogger(__name__)

MAX_WS_MESSAGE = 16 << 20  # autobahn accepts any size; this bounds one buffered message
HANDSHAKE_READ = 1100  # a whole line (at most MAX_LINE + LF) in one read
# The last words before closing, by mood; the others close without a word.
FAREWELLS: dict[Mood | None, bytes] = {Mood.ERRORY: BAD_HANDSHAKE, Mood.IMPATIENT: IMPATIENT}


class ConnectionHandler:
    """Serves TCP and WebSocket connections, from the handshake to the end of the pair."""

    def __init__(self, book: Ledger, *, handshake_timeout: float, lonely_timeout: float,
                 use_splice: bool = HAS_SPLICE) -> None:
        self.book = book
        self.handshake_timeout = handshake_timeout
        self.lonely_timeout = lonely_timeout
        self.use_splice = use_splice
        self.room: WaitingRoom[Connection] = WaitingRoom(
            lonely_timeout, on_readable=self._parked_readable, on_timeout=self._parked_timeout)
        self._nursery: trio.Nursery | None = None

    async def watch_waiting(self, nursery: trio.Nursery) -> None:
        """Watch the parked connections until cancelled; their farewells run in `nursery`."""
        self._nursery = nursery
        try:
            await self.room.watch()
        finally:
            self.room.close()

    def close_unpaired(self) -> int:
        """At shutdown: end every connection that is not relaying; how many there were."""
        now = time.time()
        parked = self.room.unpark_all()
        for conn, sock in parked:
            self._drop(conn, sock, now)
        unpaired = [c for c in self.book.connections if c.machine.state is not State.RELAYING]
        for conn in unpaired:
            conn.scope.cancel()
        return len(parked) + len(unpaired)

    async def serve_tcp(self, stream: trio.SocketStream) -> None:
        await self._serve(stream, "tcp", _TcpWatch(stream))

    async def serve_websocket(self, stream: trio.SocketStream) -> None:
        await self._serve(stream, "websocket", _WebSocketWatch(stream))

    async def _serve(self, stream: trio.SocketStream, kind: str,
                     watch: _TcpWatch | _WebSocketWatch) -> None:
        conn = self.book.admit(stream, kind, time.time())
        if conn is None:
            return
        parked = False
        try:
            parked = await self._run(conn, watch)
        except Exception:
            log.exception("connection handler failed")
        finally:
            if not parked:  # a parked connection is the waiting room's, then its partner's
                self.book.close(conn, time.time())

    async def _run(self, conn: Connection, watch: _TcpWatch | _WebSocketWatch) -> bool:
        """Serve until the connection ends; True if it was parked instead."""
        result: Result | None = None
        sent = False  # bytes arrived while waiting
        first: Connection | None = None  # the waiting partner, if this one paired
        try:
            with conn.scope:
                conn.scope.relative_deadline = self.handshake_timeout
                result = await watch.handshake()
                if isinstance(result, Accepted | Rejected):
                    conn.endpoint = watch.endpoint()
                if isinstance(result, Accepted):
                    first = self._arrive(conn, result)
                    if conn.machine.state is State.WAITING:
                        if isinstance(watch, _TcpWatch):
                            conn.endpoint = None  # the stream's; a new one when it pairs
                            self.room.park(conn, watch.detach())
                            return True
                        conn.released, conn.pair_done = trio.Event(), trio.Event()
                        conn.scope.deadline = trio.current_time() + self.lonely_timeout
                        sent, conn.pending = await watch.wait()
        finally:
            if conn.released is not None:
                conn.released.set()
        self._handshake_or_wait_ended(conn, result, sent=sent)
        if first is not None:
            await run_pair(self.book, first, conn, use_splice=self.use_splice)
        elif conn.pair_done is not None and conn.machine.state is State.RELAYING:
            await conn.pair_done.wait()  # the partner's task relays; keep our socket open
        elif conn.machine.state is State.DONE and conn.endpoint is not None:
            await _farewell(conn.endpoint, FAREWELLS.get(conn.machine.mood))
        # otherwise (silence, a partial or overlong line) the accept loop just closes it
        return False

    def _handshake_or_wait_ended(self, conn: Connection, result: Result | None, *,
                                 sent: bool) -> None:
        """Tell the ledger how the handshake or the wait ended, if nothing decided it yet (a
        client that left during the handshake ends when its socket is closed)."""
        state, cause = conn.machine.state, None
        if state is State.HANDSHAKING:
            if isinstance(result, Rejected):
                cause = Cause.BAD_LINE
            elif isinstance(result, Overlong):
                cause = Cause.OVERLONG_LINE
            elif _timed_out(conn.scope):
                cause = Cause.TIMEOUT
        elif state is State.WAITING:
            if sent:
                cause = Cause.EARLY_DATA
            elif _timed_out(conn.scope):
                cause = Cause.TIMEOUT
            else:
                cause = Cause.LOST
        if cause is not None:
            self.book.end(conn, cause, time.time())

    def _arrive(self, conn: Connection, accepted: Accepted) -> Connection | None:
        """A valid handshake; the partner that was waiting, if it paired."""
        pair = self.book.arrive(conn, accepted.handshake, time.time(),
                                early=bool(accepted.rest))
        if pair is None:
            return None
        for waiter, _ended in pair.redundant:
            self._wake(waiter, paired=False)
        conn.pending = accepted.rest
        self._wake(pair.first, paired=True)
        return pair.first

    def _wake(self, waiter: Connection, *, paired: bool) -> None:
        """A waiter's wait is over: paired, or redundant."""
        sock = self.room.unpark(waiter)
        if sock is None:
            waiter.scope.cancel()  # its task sees the new state
        elif paired:
            waiter.endpoint = StreamEndpoint(_stream(sock))
        else:
            self._bye(waiter, sock, None)

    # -- parked connections (called by the waiting room) -------------------------------------

    def _parked_readable(self, conn: Connection, sock: socket.socket) -> None:
        try:
            sent = bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            self.room.park(conn, sock)  # nothing after all
            return
        except OSError:
            sent = False
        if sent:
            self.book.end(conn, Cause.EARLY_DATA, time.time())
            self._bye(conn, sock, IMPATIENT)
        else:
            self._drop(conn, sock, time.time())  # the client has gone: nothing to flush

    def _parked_timeout(self, conn: Connection, sock: socket.socket) -> None:
        self.book.end(conn, Cause.TIMEOUT, time.time())
        self._bye(conn, sock, None)

    def _drop(self, conn: Connection, sock: socket.socket, now: float) -> None:
        """A parked connection's abrupt end (its client left, or shutdown): it was lost."""
        sock.close()
        self.book.close(conn, now)

    def _bye(self, conn: Connection, sock: socket.socket, message: bytes | None) -> None:
        """A parked connection's graceful end, in a task of its own (rare)."""
        assert self._nursery is not None
        self._nursery.start_soon(self._parked_farewell, conn, sock, message)

    async def _parked_farewell(self, conn: Connection, sock: socket.socket,
                               message: bytes | None) -> None:
        try:
            await _farewell(StreamEndpoint(_stream(sock)), message)
        finally:
            self.book.close(conn, time.time())


def _timed_out(scope: trio.CancelScope) -> bool:
    return scope.cancelled_caught and trio.current_time() >= scope.deadline


def _stream(sock: socket.socket) -> trio.SocketStream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


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

    def detach(self) -> socket.socket:
        """The socket, no longer the stream's (closing the stream leaves it open)."""
        trio_socket = self.stream.socket
        family, kind, proto = trio_socket.family, trio_socket.type, trio_socket.proto
        # given the family, type and protocol, the socket asks the kernel nothing
        return socket.socket(family, kind, proto, fileno=trio_socket.detach())


class _WebSocketWatch:
    """The WebSocket side before pairing: the first message is the handshake
    (docs/transit-protocol.md §6.2)."""

    __slots__ = ("stream", "ws")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws: WebSocket | None = None

    async def handshake(self) -> Result | None:
        try:
            head = await read_head(self.stream)
            if head is None:
                return None
            request, buffered = split_head(head)
        except HandshakeError as exc:  # a head over the limit, or not HTTP/1.x
            await answer(self.stream, refusal(exc))
            return None
        upgrade = await Upgrade.read(self.stream, request, buffered, MAX_WS_MESSAGE)
        if upgrade is None:
            return None
        self.ws = await upgrade.accept([])
        try:
            message = await self.ws.receive()
        except Closed:
            return None
        if isinstance(message, str):
            return None  # the reference drops the connection: mood empty
        handshake = parse_message(message)
        return Rejected() if handshake is None else Accepted(handshake, b"")

    def endpoint(self) -> Endpoint:
        assert self.ws is not None
        return WebSocketEndpoint(self.ws)

    async def wait(self) -> tuple[bool, bytes]:
        """Until a message (True; its bytes are relayed if a partner came meanwhile)."""
        assert self.ws is not None
        try:
            message = await self.ws.receive()
        except Closed:
            return False, b""
        return bool(message), message if isinstance(message, bytes) else b""
