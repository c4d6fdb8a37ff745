"""The HTTP front of the mailbox port: WebSocket upgrades go to trio-websocket, plain requests
get a tiny answer (`GET /` is a liveness page, spec 1.1).

trio-websocket answers any non-upgrade request with 400 before a handler sees it, so the
request head is read here first and replayed to it through `ReplayStream`.
"""

from __future__ import annotations

import trio

MAX_HEAD_BYTES = 16 * 1024
LIVENESS_BODY = b"Wormhole Relay\n"


class ReplayStream(trio.abc.Stream):
    """A stream whose first bytes were already read: they come back first."""

    def __init__(self, stream: trio.abc.Stream, head: bytes) -> None:
        self._stream = stream
        self._head = head

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


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


def is_upgrade(head: bytes) -> bool:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


def plain_response(head: bytes) -> bytes:
    """The whole answer to a request that is not a WebSocket upgrade."""
    request_line = head.split(b"\r\n", 1)[0].split()
    method, path = [*request_line, b"", b""][:2]
    if method in (b"GET", b"HEAD") and path == b"/":
        status, body = b"200 OK", LIVENESS_BODY
    elif path.rstrip(b"/") == b"/v1":
        status, body = b"426 Upgrade Required", b"WebSocket endpoint\n"
    else:
        status, body = b"404 Not Found", b"Not Found\n"
    head_lines = [
        b"HTTP/1.1 " + status,
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Length: " + str(len(body)).encode(),
        b"Connection: close",
    ]
    payload = body if method != b"HEAD" else b""
    return b"\r\n".join(head_lines) + b"\r\n\r\n" + payload
