"""The little HTTP both services speak outside WebSockets: read a request head, answer it."""

from __future__ import annotations

import trio

MAX_HEAD_BYTES = 16 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            426: "Upgrade Required", 503: "Service Unavailable"}


async def read_head(stream: trio.abc.Stream) -> bytes | None:
    """Bytes up to and including the end of the request head; None if it never ends."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
    return data


def request_line(head: bytes) -> tuple[str, str]:
    """Method and path of a request head ("" for what is missing)."""
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    method, path = [*parts, "", ""][:2]
    return method, path


def response(
    status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", *,
    head_only: bool = False,
) -> bytes:
    """A whole HTTP/1.1 response after which the connection closes."""
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body
