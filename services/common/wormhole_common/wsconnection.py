"""A server's WebSocket over a trio stream: the thin shell around `websocket` (sans-IO).

One task reads (`receive`, which also answers pings and the peer's close); any task may send
(`try_send` without waiting, `send_texts`, `send_binary`, `ping`), several frames in one
write. Closing is done by the reader (`close`): our close frame, then the peer's answer,
read while dropping messages.

Every write can be cancelled and ends: frames are appended whole to one outgoing buffer that
is written without blocking (`os.write` on trio's non-blocking socket) while the socket takes
it, and otherwise waits for the socket to become writable, so a cancelled wait leaves no
half frame behind and needs no shield. A peer that reads nothing for `write_timeout` seconds
while we have something to send is dropped (`stalled`). Pongs coalesce: while one waits to
be written, a newer ping only replaces its payload, so a peer that floods pings and never
reads costs one pending pong.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import trio

from wormhole_common.accepting import close_now
from wormhole_common.core import websocket
from wormhole_common.core.websocket import (
    CloseReceived,
    Event,
    FrameReader,
    Message,
    Ping,
    Pong,
    Request,
    Violation,
)
from wormhole_common.http import LINGER_SECONDS, answer, linger, refusal, response

RECEIVE_BYTES = 64 * 1024
WRITE_TIMEOUT = 60.0  # seconds a peer may read nothing while we have something to send


def encode_texts(texts: list[str]) -> bytes:
    return b"".join(websocket.text_frame(text) for text in texts)


class Closed(Exception):
    """The WebSocket is closed (or broken): nothing more can be received or sent."""


class WebSocket:
    def __init__(self, stream: trio.abc.Stream, max_message_size: int,
                 buffered: bytes = b"", write_timeout: float = WRITE_TIMEOUT) -> None:
        self.stream = stream
        # A socket's own recv (public trio API) spares a layer of frames for every waiting
        # connection, and of calls for every read.
        self._receive_some: Callable[[int], Awaitable[bytes | bytearray]]
        if isinstance(stream, trio.SocketStream):
            self._receive_some = stream.socket.recv
            self._fd = stream.socket.fileno()  # non-blocking (trio's)
        else:
            self._receive_some = stream.receive_some
            self._fd = -1
        self.reader = FrameReader(max_message_size)
        self.write_timeout = write_timeout
        self._events: list[Event] = []  # a list: most reads hold one event, a deque is big
        self._buffered = buffered
        self._writing = trio.Lock()  # one task at a time waits for the socket
        self._tail = bytearray()  # frames not written yet, whole and in order
        self._pong: bytes | None = None  # the payload of the pong still to send
        self.close_sent = False
        self.close_received: CloseReceived | None = None
        self.violation: Violation | None = None  # the peer's, answered with this close
        self.broken = False  # the stream failed: nothing more can be sent
        self.ended = False  # the peer ended its side (we may still send)
        self.stalled = False  # ...because the peer read nothing for `write_timeout`
        self._ping: bytes | None = None
        self._ponged: trio.Event | None = None  # while a ping waits

    async def receive(self) -> str | bytes:
        """The next message; `Closed` once the peer closed, broke the protocol or left."""
        while True:
            while self._events:
                event = self._events.pop(0)
                if isinstance(event, Message):
                    return event.data
                await self._answer(event)
            if self.reader.done or self.broken or self.ended:
                raise Closed
            data, self._buffered = self._buffered, b""
            if not data:
                try:
                    data = await self._read()
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    self.broken = True
                    raise Closed from None
                if not data:
                    # the peer ended its side: it may still read our close frame
                    self.ended = True
                    raise Closed
            self._events.extend(self.reader.feed(data))

    async def _read(self) -> bytes:
        """What the socket has, waiting for it if need be: one scheduler pass either way.

        trio's `recv` checkpoints after a read even when it had to wait for it first, which
        under load adds a whole pass of every other task to each command's latency. Here a
        read that waited returns at once; one that did not wait yields (without losing what
        it read), so a client that keeps sending still takes turns with the others."""
        if self._fd < 0:
            return bytes(await self._receive_some(RECEIVE_BYTES))
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            data = os.read(self._fd, RECEIVE_BYTES)
        except BlockingIOError:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            try:
                return os.read(self._fd, RECEIVE_BYTES)
            except BlockingIOError:
                continue

    def receive_nowait(self) -> str | bytes | None:
        """The next message if it has been read from the socket already and no control
        frame comes before it; else None (`receive` then takes what is there, in order)."""
        if self._events and isinstance(event := self._events[0], Message):
            del self._events[0]
            return event.data
        return None

    async def _answer(self, event: Event) -> None:
        match event:
            case Ping(payload):
                if not self.close_sent:
                    self._pong = payload  # the latest replaces one not yet sent
                    await self._drain(quiet=True)
            case Pong(payload):
                if payload == self._ping and self._ponged is not None:
                    self._ponged.set()
            case CloseReceived(code):
                self.close_received = event
                # echo it: the closing handshake is complete
                await self._send_close(websocket.close_frame(code))
                raise Closed
            case Violation(code, reason):
                self.violation = event
                await self._send_close(websocket.close_frame(code, reason))
                raise Closed

    async def send_binary(self, data: bytes) -> None:
        """One binary message; `Closed` if the connection is (closing)."""
        await self._send(websocket.binary_frame(data))

    async def send_texts(self, texts: list[str]) -> None:
        """Text messages, in one write; `Closed` if the connection is (closing)."""
        await self._send(encode_texts(texts))

    def try_send(self, data: bytes) -> bool:
        """Write `data` now, as far as the socket takes it without waiting; True if all of it
        went out. Otherwise the rest is kept and goes out first with the next write of any
        kind (frames are never interleaved): the caller has `flush` called. Writing from the
        task that queued the frames spares a task switch, a lock and a scheduler pass per
        burst. A closed connection takes nothing (False; `flush` then says `Closed`)."""
        if self.broken or self.close_sent:
            return False
        if self._fd < 0 or self._writing.locked():
            self._tail += data  # another write under way
            return False
        if self._tail:  # kept (a deferred 101, or what a writer flushes next): before `data`
            self._tail += data
            data, self._tail = bytes(self._tail), bytearray()
        sent = self._write(data)
        if sent < len(data) and not self.broken:
            self._tail += memoryview(data)[sent:]
        return sent == len(data)

    def _write(self, data: bytes | bytearray) -> int:
        """What of `data` the socket took without waiting (a broken socket: 0, `broken`)."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            self.broken = True  # reset or gone
            return 0

    async def flush(self) -> None:
        """Write what `try_send` kept; `Closed` if the connection is (closing)."""
        await self._send(b"")

    async def ping(self) -> None:
        """Send a ping and wait for its pong (the caller bounds the wait)."""
        self._ping = os.urandom(4)
        self._ponged = ponged = trio.Event()
        try:
            await self._send(websocket.ping_frame(self._ping))
            await ponged.wait()
        finally:
            self._ponged = None

    async def close(self, code: int, reason: str = "") -> None:
        """Our close frame, then the peer's answer (the caller bounds the wait); only from the
        task that receives."""
        await self._send_close(websocket.close_frame(code, reason))
        while self.close_received is None and self.violation is None and not self.broken:
            try:
                await self.receive()
            except Closed:
                return

    async def _send_close(self, frame: bytes) -> None:
        if not self.close_sent and not self.broken:
            self.close_sent = True
            self._pong = None
            self._tail += frame
            await self._drain(quiet=True)

    async def _send(self, data: bytes) -> None:
        """Write `data` after what is kept; `Closed` if the connection is (closing)."""
        if self.broken or self.close_sent:
            raise Closed
        self._tail += data
        await self._drain(quiet=False)

    async def _drain(self, *, quiet: bool) -> None:
        """Write everything kept (and a pending pong); `Closed` unless `quiet` if the stream
        breaks or the peer reads nothing for `write_timeout` seconds. What the socket takes
        at once, with no other write under way, needs no lock and no yield (a close echo)."""
        if self._pong is None and self._fd >= 0 and not self._writing.locked():
            if sent := self._write(self._tail):
                del self._tail[:sent]
            if not self._tail and not self.broken:
                return
        async with self._writing:
            while not self.broken:
                if not self._tail:
                    if self._pong is None:
                        return
                    self._tail += websocket.pong_frame(self._pong)
                    self._pong = None
                if self._fd < 0:
                    await self._send_to_stream()
                    continue
                if sent := self._write(self._tail):
                    del self._tail[:sent]
                    continue
                if not self.broken:
                    await self._wait_writable()
        if not quiet:
            raise Closed

    async def _send_to_stream(self) -> None:
        """Not a socket (tests' memory streams): the stream's own `send_all`."""
        data, self._tail = bytes(self._tail), bytearray()
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True

    async def _wait_writable(self) -> None:
        with trio.move_on_after(self.write_timeout) as waiting:
            try:
                await trio.lowlevel.wait_writable(self._fd)
            except (trio.ClosedResourceError, OSError):
                self.broken = True
        if waiting.cancelled_caught:
            self.broken = self.stalled = True

    async def aclose(self) -> None:
        """End the connection: a close frame if none went out (1000), then the end of our
        side and a bounded linger for the peer's (so unread bytes do not reset the close
        frame away), and the socket closed. A peer that has sent its close frame or ended
        its side sends nothing more, so the common end of a connection closes at once,
        without a timer."""
        try:
            if not (self.close_sent or self.broken):
                with trio.move_on_after(LINGER_SECONDS):
                    await self._send_close(websocket.close_frame(1000))
            if not (self.broken or self.ended or self.close_received is not None):
                await linger(self.stream)
        finally:
            self.broken = True
            self._fd = -1  # the number may soon be another connection's
            await close_now(self.stream)


class Upgrade:
    """A valid upgrade request, to accept (101) or refuse (an HTTP answer)."""

    def __init__(self, stream: trio.abc.Stream, request: Request, buffered: bytes,
                 max_message_size: int) -> None:
        """`request` as `http.split_head` parsed it, `buffered` what came after its head (maybe
        frames); raises `websocket.HandshakeError` for a request that cannot be upgraded."""
        self._accept_key = websocket.check_upgrade(request)
        self._buffered = buffered
        self.headers = request.headers
        self.path = request.target.decode("latin-1")
        self._stream = stream
        self._max_message_size = max_message_size

    @classmethod
    async def read(cls, stream: trio.abc.Stream, request: Request, buffered: bytes,
                   max_message_size: int) -> Upgrade | None:
        """The upgrade `request` asks for; None if it cannot be upgraded, once the client has
        been told why (400, 405 or 426)."""
        try:
            return cls(stream, request, buffered, max_message_size)
        except websocket.HandshakeError as exc:
            await answer(stream, refusal(exc))
            return None

    async def reject(self, status: int, body: bytes = b"") -> None:
        await answer(self._stream, response(status, body))

    async def accept(self, extra_headers: list[tuple[bytes, bytes]],
                     write_timeout: float = WRITE_TIMEOUT, *, deferred: bool = False,
                     ) -> WebSocket:
        """The WebSocket, once the 101 is sent; or, `deferred`, with the 101 kept to go out
        in one write with what the caller sends at once (a welcome)."""
        response = websocket.upgrade_response(self._accept_key, extra_headers)
        self.headers = []  # read by now; an idle connection should not keep them
        ws = WebSocket(self._stream, self._max_message_size, self._buffered, write_timeout)
        if deferred:
            ws._tail += response
        else:
            await self._stream.send_all(response)
        return ws
