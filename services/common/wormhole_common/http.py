"""The little HTTP every port speaks outside WebSockets: read a request head, answer it.

One reader for every port (the mailbox, the relay's WebSocket port, `/metrics` and health):
a head is at most `MAX_HEAD_BYTES`, checked exactly, and a longer one is answered 431. An
answer after which the server closes lingers (`answer`): the client may still be sending,
and closing a socket with unread data makes the kernel reset the connection, which can
destroy the answer before the client reads it.
"""

from __future__ import annotations

import contextlib

import trio

from wormhole_common.core.websocket import HandshakeError, Request, parse_head

MAX_HEAD_BYTES = 8 * 1024  # what common servers allow a request head
LINGER_SECONDS = 1  # after a last answer, for the client to read it and close
LINGER_BYTES = 16 << 20  # ...reading (and dropping) at most this much of what it still sends
RECEIVE_BYTES = 64 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            426: "Upgrade Required", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


class HeadTooLarge(HandshakeError):
    def __init__(self) -> None:
        super().__init__(431, f"request head over {MAX_HEAD_BYTES} bytes")


def _head_end(data: bytes | bytearray, start: int) -> int:
    """Where the head in `data` ends (after its blank line); -1 if not yet."""
    end = data.find(b"\r\n\r\n", max(0, start - 3))
    return -1 if end < 0 else end + 4


async def read_head(stream: trio.abc.Stream) -> bytes | None:
    """Bytes up to and including the end of the request head, and whatever came after it in
    the same reads; None if the stream ends first; `HeadTooLarge` once more than
    `MAX_HEAD_BYTES` came without the head's end."""
    data = b""
    while True:
        chunk = await stream.receive_some(RECEIVE_BYTES)
        if not chunk:
            return None
        scanned, data = len(data), data + chunk
        end = _head_end(data, scanned)
        if end > MAX_HEAD_BYTES or (end < 0 and len(data) >= MAX_HEAD_BYTES):
            raise HeadTooLarge
        if end >= 0:
            return data


def split_head(data: bytes) -> tuple[Request, bytes]:
    """The request in what `read_head` returned, and the bytes after its head;
    `HandshakeError` (400) if it is malformed."""
    head, _, rest = data.partition(b"\r\n\r\n")
    return parse_head(head), rest


def response(
    status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", *,
    head_only: bool = False, headers: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """A whole HTTP/1.1 response after which the connection closes."""
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode("latin-1")
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
    return head if head_only else head + body


def refusal(error: HandshakeError) -> bytes:
    """The answer to a request that cannot be served."""
    return response(error.status, f"{error}\n".encode(), headers=error.headers)


async def answer(stream: trio.abc.Stream, data: bytes) -> None:
    """Send a last answer, end our side, and linger (bounded) while the client reads it."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)
        await linger(stream)


async def linger(stream: trio.abc.Stream) -> None:
    """End our side and read (dropping it) what the client still sends, until it closes or
    `LINGER_BYTES`/`LINGER_SECONDS` run out; the caller closes the socket after."""
    with trio.move_on_after(LINGER_SECONDS), contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        drained = 0
        while drained < LINGER_BYTES:
            chunk = await stream.receive_some(RECEIVE_BYTES)
            if not chunk:
                break
            drained += len(chunk)


async def get(host: str, port: int, path: str) -> tuple[int, bytes]:
    """One GET to one of our own endpoints (which close after answering): its status and
    body; `OSError` if it cannot be reached, status 0 if it ends before answering."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\n\r\n".encode("ascii"))
        try:
            head = await read_head(stream)
        except (HandshakeError, trio.BrokenResourceError):
            return 0, b""
        if head is None:
            return 0, b""
        chunks = [head.split(b"\r\n\r\n", 1)[1]]
        while chunk := await stream.receive_some(RECEIVE_BYTES):
            chunks.append(chunk)
    status = head.split(b" ", 2)[1]
    return int(status) if status.isdigit() else 0, b"".join(chunks)
