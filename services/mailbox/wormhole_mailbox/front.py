"""The HTTP front of the mailbox port: WebSocket upgrades go to trio-websocket, plain requests
get a tiny answer (`GET /` is a liveness page, spec 1.1).

trio-websocket answers any non-upgrade request with 400 before a handler sees it, so the
request head is read here first and replayed to it through `ReplayStream`.
"""

from __future__ import annotations

import trio
from wormhole_common.http import request_line, response

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


def is_upgrade(head: bytes) -> bool:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


def plain_response(head: bytes) -> bytes:
    """The whole answer to a request that is not a WebSocket upgrade."""
    method, path = request_line(head)
    head_only = method == "HEAD"
    if method in ("GET", "HEAD") and path == "/":
        return response(200, LIVENESS_BODY, head_only=head_only)
    if path.rstrip("/") == "/v1":
        return response(426, b"WebSocket endpoint\n", head_only=head_only)
    return response(404, b"Not Found\n", head_only=head_only)
