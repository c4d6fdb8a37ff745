"""The HTTP front of the mailbox port: WebSocket upgrades go to trio-websocket, plain requests
get a tiny answer (`GET /` is a liveness page, spec 1.1).

trio-websocket answers any non-upgrade request with 400 before a handler sees it, so the
request head is read here first and replayed to it through `ReplayStream`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from trio_websocket import WebSocketRequest, wrap_server_stream
from wormhole_common.http import read_head, request_line, response

from wormhole_mailbox.addresses import PeerAddress
from wormhole_mailbox.metrics import MailboxMetrics

LIVENESS_BODY = b"Wormhole Relay\n"
MAX_MESSAGE_BYTES = 1 << 20
HANDSHAKE_SECONDS = 10  # to send a request head, and again to complete the upgrade

WebSocketHandler = Callable[[WebSocketRequest, PeerAddress], Awaitable[None]]


async def serve_socket(
    stream: trio.SocketStream, handle: WebSocketHandler, metrics: MailboxMetrics,
) -> None:
    """An accepted TCP connection, served by `serve_stream`."""
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:  # the client is gone already
        await trio.aclose_forcefully(stream)
        return
    await serve_stream(stream, PeerAddress(str(host), int(port)), handle, metrics)


async def serve_stream(
    stream: trio.abc.Stream, peer: PeerAddress, handle: WebSocketHandler,
    metrics: MailboxMetrics,
) -> None:
    """One connection: a WebSocket upgrade goes to `handle`, a plain request is answered."""
    head: bytes | None = None
    try:
        with trio.move_on_after(HANDSHAKE_SECONDS) as handshake:
            head = await read_head(stream)
            if head is not None and not is_upgrade(head):
                metrics.connections["http"].inc()
                await stream.send_all(plain_response(head))
                head = None
        if head is None:
            if handshake.cancelled_caught:
                metrics.dropped["handshake_timeout"].inc()
            return
        async with trio.open_nursery() as nursery:
            request: WebSocketRequest | None = None
            with trio.move_on_after(HANDSHAKE_SECONDS):
                request = await wrap_server_stream(
                    nursery, ReplayStream(stream, head), max_message_size=MAX_MESSAGE_BYTES
                )
            if request is None:
                metrics.dropped["handshake_timeout"].inc()
            else:
                await handle(request, peer)
            nursery.cancel_scope.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


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
