"""The WebSocket close frames trio-websocket 0.12 leaves out, added through its public API.

trio-websocket (wsproto underneath) notices a framing error (1002) or invalid UTF-8 in a text
message (1007) and records the code in `WebSocketConnection.closed`, but closes the TCP
connection without a close frame; and it measures a message only as its bytes arrive, so a
frame header announcing 2^62 bytes is never answered. `GuardedStream` sits between the socket
and `wrap_server_stream` (any `trio.abc.Stream` will do):

* `FrameScanner`, sans-IO, reads the frame headers going each way (never the payloads, so the
  cost is per frame, not per byte): a data message announcing more than the limit is refused
  at its header (1009), and the client's and the library's close frames are noted;
* the library's `aclose()` of the stream is deferred, so that `finish()` can send the close
  frame the library did not (`close_to_send`) before the socket is really closed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import trio

PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007
TOO_BIG = 1009
_LIBRARY_SILENT = {PROTOCOL_ERROR: "protocol error", INVALID_PAYLOAD: "invalid UTF-8"}
_CLOSE = 0x8
_HEAD_END = b"\r\n\r\n"
CLOSE_SECONDS = 2  # to write a close frame the library left out


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


def close_frame(close: Close) -> bytes:
    """A server's (unmasked) close frame; the reason is cut to fit a control frame (at a
    character boundary: a reason that is not UTF-8 would itself be a 1007)."""
    reason = close.reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    payload = close.code.to_bytes(2, "big") + reason
    return bytes([0x80 | _CLOSE, len(payload)]) + payload


class FrameScanner:
    """Frame headers of one direction of a WebSocket connection, after its HTTP head.

    `feed(data)` returns how many bytes of `data` may be passed on: all of them, unless a data
    message announces more than `max_message_size` bytes (in one frame or summed over its
    fragments); then `refused` is set and nothing from that frame's header on is passed.
    """

    def __init__(self, max_message_size: int | None = None) -> None:
        self.max_message_size = max_message_size
        self.in_head = True
        self.tail = b""  # the last bytes of the head seen, to find its end across chunks
        self.header = bytearray()  # the current frame header, while incomplete
        self.remaining = 0  # payload bytes of the current frame still to come
        self.message_size = 0
        self.close_seen = False
        self.refused: Close | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        if self.refused is not None:
            return 0
        pos = 0
        if self.in_head:
            pos = self._skip_head(data)
        while pos < len(data):
            if self.remaining:
                step = min(self.remaining, len(data) - pos)
                self.remaining -= step
                pos += step
                continue
            start = pos - len(self.header)  # negative: the header began in an earlier chunk
            pos = self._read_header(data, pos)
            if self.refused is not None:
                return max(0, start)
        return len(data)

    def _skip_head(self, data: bytes | bytearray | memoryview) -> int:
        seen = self.tail + bytes(data)  # only while the HTTP head lasts
        end = seen.find(_HEAD_END)
        if end < 0:
            self.tail = seen[-(len(_HEAD_END) - 1):]
            return len(data)
        self.in_head = False
        return end + len(_HEAD_END) - len(self.tail)

    def _read_header(self, data: bytes | bytearray | memoryview, pos: int) -> int:
        """Take header bytes from `data[pos:]`; act on the header once it is complete."""
        while pos < len(data):
            self.header.append(data[pos])
            pos += 1
            if len(self.header) >= 2 and len(self.header) == self._header_size():
                self._header_complete()
                return pos
        return pos

    def _header_size(self) -> int:
        short = self.header[1] & 0x7F
        extended = 2 if short == 126 else 8 if short == 127 else 0
        return 2 + extended + (4 if self.header[1] & 0x80 else 0)

    def _header_complete(self) -> None:
        opcode = self.header[0] & 0x0F
        short = self.header[1] & 0x7F
        length = short if short < 126 else int.from_bytes(
            self.header[2:4] if short == 126 else self.header[2:10], "big")
        self.header.clear()
        self.remaining = length
        if opcode == _CLOSE:
            self.close_seen = True
        if opcode > 2:  # a control frame: no part of a message
            return
        self.message_size = length if opcode else self.message_size + length
        if self.max_message_size is not None and self.message_size > self.max_message_size:
            self.refused = Close(TOO_BIG, f"message over {self.max_message_size} bytes")


def close_to_send(
    refused: Close | None, library_code: int | None, close_sent: bool,
) -> Close | None:
    """The close frame still owed to the client, if any.

    `refused`: the scanner's refusal; `library_code`: `WebSocketConnection.closed.code` (None
    before the upgrade); `close_sent`: a close frame already went out (the library's own 1009
    or its reply to the client's close). A 1002 or 1007 with no close frame sent is one the
    library detected itself: a client's close frame carrying that code would have been
    answered.
    """
    if close_sent:
        return None
    if refused is not None:
        return refused
    if library_code in _LIBRARY_SILENT:
        return Close(library_code, _LIBRARY_SILENT[library_code])
    return None


class GuardedStream(trio.abc.Stream):
    """The socket as trio-websocket sees it: frames scanned both ways, its close deferred.

    `head`: bytes already read from `stream` (an HTTP head read to route the request); they
    come back first. Whoever wraps a socket in this must call `finish()` at the end.
    """

    def __init__(self, stream: trio.abc.Stream, max_message_size: int, head: bytes = b"") -> None:
        self.stream = stream
        self.head = head
        self.inbound = FrameScanner(max_message_size)
        self.outbound = FrameScanner()
        self.send_lock = trio.Lock()
        self.released = False  # the library called aclose()
        self.receiving: trio.CancelScope | None = None  # a receive_some waiting on the socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.released:
            raise trio.ClosedResourceError
        if self.inbound.refused is not None:
            return b""  # the library sees the end of the stream; finish() says why
        data, self.head = self.head, b""
        if not data:
            with trio.CancelScope() as self.receiving:
                data = bytes(await self.stream.receive_some(max_bytes))
            self.receiving = None
            if self.released:  # aclose() while waiting: what a real close would do
                raise trio.ClosedResourceError
        accepted = self.inbound.feed(data)
        return data if accepted == len(data) else data[:accepted]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.released:
            raise trio.ClosedResourceError
        async with self.send_lock:
            self.outbound.feed(data)
            await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """The library is done with the stream; the socket stays open for `finish()`."""
        self.released = True
        if self.receiving is not None:
            self.receiving.cancel()

    async def finish(self, library_code: int | None) -> Close | None:
        """Send the close frame the client is owed (see `close_to_send`), then close the
        socket; returns what was sent. A client that does not read gets `CLOSE_SECONDS`."""
        owed = close_to_send(self.inbound.refused, library_code, self.outbound.close_seen)
        if owed is not None:
            with trio.move_on_after(CLOSE_SECONDS):
                async with self.send_lock:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self.stream.send_all(close_frame(owed))
        await trio.aclose_forcefully(self.stream)
        return owed
