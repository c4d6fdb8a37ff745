"""The server's side of RFC 6455, sans-IO: the upgrade's answer, and frames both ways.

Why not trio-websocket and wsproto: on the mailbox's path of a frame they cost a task and a
channel hop per message, a lock and a socket write per frame sent, and generator layers per
byte received; profiled under load they and their tasks took half the server's CPU. This
module does only what a server needs (no extensions, no client side) in plain functions over
bytes; `FrameReader.feed` turns received bytes into events, and a violation into the close
frame it calls for (1002 framing, 1007 invalid UTF-8, 1009 a message over the limit, refused
at the header that announces it, before its payload is read).

What a message in flight may cost is bounded whatever its framing: every continuation frame
is charged `FRAME_COST` bytes of the size limit (so a message cannot be split into millions of
empty or one-byte frames), fragments are joined into one growing buffer rather than kept as
objects, and text is decoded as it arrives, so invalid UTF-8 is refused at the first bad
fragment instead of being buffered up to the limit.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import io
import re
import struct
from dataclasses import dataclass

PROTOCOL_ERROR = 1002
NO_STATUS = 1005  # a close frame without a code (never sent)
INVALID_PAYLOAD = 1007
TOO_BIG = 1009

# What each continuation frame costs of a message's size limit, besides its payload: about
# what the frame costs to parse, so the limit also bounds the work and memory of a message
# sent in tiny fragments (no real client fragments a message at all).
FRAME_COST = 64

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# Codes a peer may send in a close frame (RFC 6455 7.4, and the IANA registry up to 1014).
_VALID_CLOSE = {*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)}


class HandshakeError(Exception):
    """The upgrade request is not one we can accept; `status` is the HTTP answer, `headers`
    any it must carry."""

    def __init__(self, status: int, reason: str,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = headers


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of header `name` (lowercase); several are joined with commas."""
    values = [value for key, value in headers if key == name]
    return b", ".join(values) if values else None


_HTTP_VERSION = re.compile(rb"HTTP/1\.[0-9]")


@dataclass(frozen=True)
class Request:
    """A request head: method, target, version (`HTTP/1.1`) and headers (names lowercased,
    values stripped)."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]


def parse_head(head: bytes) -> Request:
    """The request in a head (without its final blank line); `HandshakeError(400)` if it is
    not HTTP/1.x. What it asks for is checked by who answers it (`check_host`,
    `check_upgrade`), so a bad upgrade is still known as one."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1] or not _HTTP_VERSION.fullmatch(parts[2]):
        raise HandshakeError(400, "malformed request line")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise HandshakeError(400, "malformed header line")
        headers.append((name.lower(), value.strip()))
    return Request(parts[0], parts[1], parts[2], headers)


def check_host(request: Request) -> None:
    """`HandshakeError(400)` for an HTTP/1.1 request without `Host` (RFC 9112 3.2)."""
    if request.version != b"HTTP/1.0" and header(request.headers, b"host") is None:
        raise HandshakeError(400, "no Host header")


def _tokens(value: bytes | None) -> set[bytes]:
    return {token.strip().lower() for token in (value or b"").split(b",")}


def check_upgrade(request: Request) -> bytes:
    """The `Sec-WebSocket-Accept` value for a valid upgrade request (RFC 6455 4.2.1), or
    `HandshakeError`."""
    headers = request.headers
    if request.method != b"GET":
        raise HandshakeError(405, "a WebSocket upgrade is a GET")
    if request.version == b"HTTP/1.0":
        raise HandshakeError(400, "a WebSocket upgrade needs HTTP/1.1")
    check_host(request)
    if b"websocket" not in _tokens(header(headers, b"upgrade")):
        raise HandshakeError(400, "no 'Upgrade: websocket'")
    if b"upgrade" not in _tokens(header(headers, b"connection")):
        raise HandshakeError(400, "no 'Connection: Upgrade'")
    if header(headers, b"sec-websocket-version") != b"13":
        raise HandshakeError(426, "only WebSocket version 13 is spoken",
                             ((b"Sec-WebSocket-Version", b"13"),))  # RFC 6455 4.4
    key = header(headers, b"sec-websocket-key")
    if not key or not _is_nonce(key):
        raise HandshakeError(400, "no valid Sec-WebSocket-Key")
    return accept_key(key)


def _is_nonce(key: bytes) -> bool:
    """A key is 16 bytes in base64 (24 characters)."""
    try:
        return len(key) == 24 and len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def upgrade_response(accept: bytes, extra: list[tuple[bytes, bytes]]) -> bytes:
    """The 101 answer (`accept` from `check_upgrade`). No extension and no subprotocol is
    ever chosen (what the clients expect; wormhole-william needs it)."""
    lines = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket",
             b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + accept]
    lines += [name + b": " + value for name, value in extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _frame(opcode: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        return bytes((0x80 | opcode, length)) + payload
    if length < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, length) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, length) + payload


def text_frame(text: str) -> bytes:
    return _frame(_TEXT, text.encode("utf-8"))


def binary_frame(data: bytes) -> bytes:
    return _frame(_BINARY, data)


def ping_frame(payload: bytes) -> bytes:
    return _frame(_PING, payload[:125])


def pong_frame(payload: bytes) -> bytes:
    return _frame(_PONG, payload)


def close_frame(code: int | None, reason: str = "") -> bytes:
    """A close frame (no code: an empty one); the reason is cut to fit a control frame, at a
    character boundary."""
    if code is None:
        return _frame(_CLOSE, b"")
    encoded = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return _frame(_CLOSE, code.to_bytes(2, "big") + encoded)


def unmask(payload: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR with the repeated 4-byte mask, as one big-integer operation (C speed)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little")


@dataclass(frozen=True)
class Message:
    data: str | bytes  # str for a text message


@dataclass(frozen=True)
class Ping:
    payload: bytes


@dataclass(frozen=True)
class Pong:
    payload: bytes


@dataclass(frozen=True)
class CloseReceived:
    """The peer closed; `code` is None for a close frame without one."""

    code: int | None
    reason: str


@dataclass(frozen=True)
class Violation:
    """The peer broke the protocol: send this close and end the connection."""

    code: int
    reason: str


Event = Message | Ping | Pong | CloseReceived | Violation


class FrameReader:
    """Client frames (masked) to events. After a close or a violation it takes nothing more."""

    def __init__(self, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        self._buffer = bytearray()
        self._opcode: int | None = None  # of the fragmented message being received
        self._cost = 0  # of that message so far: payload, and FRAME_COST per continuation
        self._text: io.StringIO | None = None  # its text so far, decoded as it came
        self._decoder: codecs.IncrementalDecoder | None = None
        self._binary = bytearray()  # or its bytes so far
        self.done = False

    def feed(self, data: bytes) -> list[Event]:
        if self.done:
            return []
        buffer = self._buffer
        buffer += data
        events: list[Event] = []
        pos = 0
        end = len(buffer)
        while end - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if end - start < 2:
                    break
                length = int.from_bytes(buffer[start:start + 2], "big")
                start += 2
            elif length == 127:
                if end - start < 8:
                    break
                length = int.from_bytes(buffer[start:start + 8], "big")
                start += 8
            if violation := self._check(first, second, length):
                events.append(violation)
                break
            if end - start < 4 + length:
                break
            mask = bytes(buffer[start:start + 4])
            payload = unmask(memoryview(buffer)[start + 4:start + 4 + length], mask)
            pos = start + 4 + length
            event = self._frame(first & 0x80, first & 0x0F, payload)
            if event is not None:
                events.append(event)
                if isinstance(event, CloseReceived | Violation):
                    break
        if events and isinstance(events[-1], CloseReceived | Violation):
            self.done = True
            self._buffer = bytearray()
            self._end_message()
        else:
            del buffer[:pos]
        return events

    def _check(self, first: int, second: int, length: int) -> Violation | None:
        """What is wrong with a frame, from its header alone: framing first (1002), then
        size (1009), so a frame that is both out of place and too big is a framing error."""
        opcode = first & 0x0F
        if first & 0x70 or not second & 0x80 or length >> 63:
            # no extension was agreed; clients must mask; a length's top bit must be 0
            return Violation(PROTOCOL_ERROR, "protocol error")
        if opcode >= _CLOSE:
            if opcode > _PONG or not first & 0x80 or length > 125:
                return Violation(PROTOCOL_ERROR, "protocol error")
            return None
        if opcode > _BINARY or (opcode == _CONTINUATION) == (self._opcode is None):
            return Violation(PROTOCOL_ERROR, "protocol error")  # unknown, or out of sequence
        cost = length if opcode else self._cost + FRAME_COST + length
        if cost > self.max_message_size:
            return Violation(TOO_BIG, f"message over {self.max_message_size} bytes")
        return None

    def _frame(self, fin: int, opcode: int, payload: bytes) -> Event | None:
        if opcode == _PING:
            return Ping(payload)
        if opcode == _PONG:
            return Pong(payload)
        if opcode == _CLOSE:
            return _close(payload)
        if fin and opcode:  # a whole message in one frame: what every real client sends
            if opcode == _BINARY:
                return Message(payload)
            try:
                return Message(payload.decode("utf-8"))
            except UnicodeDecodeError:
                return Violation(INVALID_PAYLOAD, "invalid UTF-8")
        return self._fragment(fin, opcode, payload)

    def _fragment(self, fin: int, opcode: int, payload: bytes) -> Event | None:
        """A frame of a fragmented message: text is decoded as it comes (1007 at the first
        invalid fragment), bytes are appended to one buffer."""
        if opcode:
            self._opcode = opcode
            self._cost = len(payload)
            if opcode == _TEXT:
                self._text = io.StringIO()
                self._decoder = codecs.getincrementaldecoder("utf-8")()
        else:
            self._cost += FRAME_COST + len(payload)
        if self._decoder is not None and self._text is not None:
            try:
                self._text.write(self._decoder.decode(payload, final=bool(fin)))
            except UnicodeDecodeError:
                return Violation(INVALID_PAYLOAD, "invalid UTF-8")
        else:
            self._binary += payload
        if not fin:
            return None
        message = Message(self._text.getvalue() if self._text is not None
                          else bytes(self._binary))
        self._end_message()
        return message

    def _end_message(self) -> None:
        self._opcode, self._text, self._decoder, self._cost = None, None, None, 0
        self._binary = bytearray()


def _close(payload: bytes) -> CloseReceived | Violation:
    if not payload:
        return CloseReceived(None, "")
    code = int.from_bytes(payload[:2], "big")
    if len(payload) == 1 or code not in _VALID_CLOSE:
        return Violation(PROTOCOL_ERROR, "protocol error")
    try:
        return CloseReceived(code, payload[2:].decode("utf-8"))
    except UnicodeDecodeError:
        return Violation(INVALID_PAYLOAD, "invalid UTF-8")
