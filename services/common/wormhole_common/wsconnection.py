"""A server's WebSocket over a trio stream: the thin shell around `websocket` (sans-IO).

One task reads (`receive`, which also answers pings and the peer's close); any task may send
(`try_send` without waiting, `send_texts`, `send_binary`, `ping`), one write at a time,
several frames in one write. Closing is done by
the reader (`close`): our close frame, then the peer's answer, read while dropping messages.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable

import trio

from wormhole_common import websocket
from wormhole_common.accepting import close_now
from wormhole_common.http import response
from wormhole_common.websocket import (
    CloseReceived,
    Event,
    FrameReader,
    Message,
    Ping,
    Pong,
    Violation,
)

RECEIVE_BYTES = 64 * 1024
DRAIN_SECONDS = 1  # for the peer to end its side after the close, before the socket closes
DRAIN_BYTES = 1 << 20


def encode_texts(texts: list[str]) -> bytes:
    return b"".join(websocket.text_frame(text) for text in texts)


class Closed(Exception):
    """The WebSocket is closed (or broken): nothing more can be received or sent."""


class WebSocket:
    def __init__(self, stream: trio.abc.Stream, max_message_size: int,
                 buffered: bytes = b"") -> None:
        self.stream = stream
        # A socket's own recv (public trio API) spares a layer of frames for every waiting
        # connection, and of calls for every read.
        self._receive_some: Callable[[int], Awaitable[bytes | bytearray]]
        if isinstance(stream, trio.SocketStream):
            self._receive_some = stream.socket.recv
            self._fd = stream.socket.fileno()  # non-blocking (trio's), for `try_send`
        else:
            self._receive_some = stream.receive_some
            self._fd = -1
        self.reader = FrameReader(max_message_size)
        self._events: list[Event] = []  # a list: most reads hold one event, a deque is big
        self._buffered = buffered
        self._send_lock = trio.Lock()
        self._tail = b""  # what `try_send` could not write yet
        self.close_sent = False
        self.close_received: CloseReceived | None = None
        self.violation: Violation | None = None  # the peer's, answered with this close
        self.broken = False  # the stream ended or failed
        self._ping: bytes | None = None
        self._pong: trio.Event | None = None  # while a ping waits

    async def receive(self) -> str | bytes:
        """The next message; `Closed` once the peer closed, broke the protocol or left."""
        while True:
            while self._events:
                event = self._events.pop(0)
                if isinstance(event, Message):
                    return event.data
                await self._handle(event)
            if self.reader.done or self.broken:
                raise Closed
            data, self._buffered = self._buffered, b""
            if not data:
                try:
                    data = bytes(await self._receive_some(RECEIVE_BYTES))
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self.broken = True
                    raise Closed
            self._events.extend(self.reader.feed(data))

    async def _handle(self, event: Event) -> None:
        # shielded: a reader cancelled while answering must not leave half a control frame
        with trio.CancelScope(shield=True):
            await self._answer(event)

    async def _answer(self, event: Event) -> None:
        match event:
            case Ping(payload):
                if not self.close_sent:
                    await self._send(websocket.pong_frame(payload), quiet=True)
            case Pong(payload):
                if payload == self._ping and self._pong is not None:
                    self._pong.set()
            case CloseReceived(code):
                self.close_received = event
                if not self.close_sent:  # echo it: the closing handshake is complete
                    self.close_sent = True
                    await self._send(websocket.close_frame(code), quiet=True, closing=True)
                raise Closed
            case Violation(code, reason):
                self.violation = event
                await self._send_close(code, reason)
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
        if self._tail or self._fd < 0 or self._send_lock.locked():
            self._tail += data  # behind what is kept already, or another write under way
            return False
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.broken = True  # reset or gone: `flush` says Closed
            return False
        if sent < len(data):
            self._tail = data[sent:]
            return False
        return True

    async def flush(self) -> None:
        """Write what `try_send` kept; `Closed` if the connection is (closing)."""
        await self._send(b"")

    async def ping(self) -> None:
        """Send a ping and wait for its pong (the caller bounds the wait)."""
        self._ping = os.urandom(4)
        self._pong = pong = trio.Event()
        try:
            await self._send(websocket.ping_frame(self._ping))
            await pong.wait()
        finally:
            self._pong = None

    async def close(self, code: int, reason: str = "") -> None:
        """Our close frame, then the peer's answer (the caller bounds the wait); only from the
        task that receives."""
        await self._send_close(code, reason)
        while self.close_received is None and self.violation is None and not self.broken:
            try:
                await self.receive()
            except Closed:
                return

    async def _send_close(self, code: int, reason: str) -> None:
        if not self.close_sent:
            self.close_sent = True
            await self._send(websocket.close_frame(code, reason), quiet=True, closing=True)

    async def _send(self, data: bytes, *, quiet: bool = False, closing: bool = False) -> None:
        """Write `data`; a closed or broken connection raises `Closed` unless `quiet`."""
        if self.broken or (self.close_sent and not closing):
            if quiet:
                return
            raise Closed
        async with self._send_lock:
            if self._tail:  # the rest of a `try_send`: it goes first
                data, self._tail = self._tail + data, b""
            try:
                if data:
                    await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.broken = True
                if not quiet:
                    raise Closed from exc

    async def aclose(self) -> None:
        """End the connection: a close frame if none went out (1000), then the end of our
        side, a moment for the peer's (so unread bytes do not reset the close frame away),
        and the socket closed."""
        try:
            with trio.move_on_after(DRAIN_SECONDS):
                await self._send_close(1000, "")
                if not self.broken and isinstance(self.stream, trio.abc.HalfCloseableStream):
                    async with self._send_lock:
                        await self.stream.send_eof()
                    drained = 0
                    while drained < DRAIN_BYTES:
                        chunk = await self.stream.receive_some(RECEIVE_BYTES)
                        if not chunk:
                            break
                        drained += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.broken = True
            self._fd = -1  # the number may soon be another connection's
            await close_now(self.stream)


class Upgrade:
    """A valid upgrade request, to accept (101) or refuse (an HTTP answer)."""

    def __init__(self, stream: trio.abc.Stream, head: bytes, max_message_size: int) -> None:
        """`head`: what was read of the request, its head and maybe frames after it; raises
        `websocket.HandshakeError` for a request that cannot be upgraded."""
        request, _, self._buffered = head.partition(b"\r\n\r\n")
        method, target, self.headers = websocket.parse_head(request)
        self._accept_key = websocket.check_upgrade(method, self.headers)
        self.path = target.decode("latin-1")
        self._stream = stream
        self._max_message_size = max_message_size

    @classmethod
    async def read(cls, stream: trio.abc.Stream, head: bytes, max_message_size: int,
                   ) -> Upgrade | None:
        """The upgrade request in `head`; None if it cannot be upgraded, once the client has
        been told why (400, 405 or 426)."""
        try:
            return cls(stream, head, max_message_size)
        except websocket.HandshakeError as exc:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(response(exc.status, f"{exc}\n".encode()))
            return None

    async def reject(self, status: int, body: bytes = b"") -> None:
        await self._stream.send_all(response(status, body))

    async def accept(self, extra_headers: list[tuple[bytes, bytes]]) -> WebSocket:
        await self._stream.send_all(websocket.upgrade_response(self._accept_key, extra_headers))
        self.headers = []  # read by now; an idle connection should not keep them
        return WebSocket(self._stream, self._max_message_size, self._buffered)
