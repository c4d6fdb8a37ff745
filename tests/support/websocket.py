"""A test's WebSocket client on a TCP stream the test owns.

trio-websocket's client leaves its socket open when the server closes first (a refused
permission, a shutdown, the relay ending a pair), so the stream is opened here and closed
here, whatever the library did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream


@asynccontextmanager
async def open_websocket(
    port: int, path: str, *, host: str = "127.0.0.1", source: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None, max_message_size: int = 1 << 20,
) -> AsyncIterator[WebSocketConnection]:
    """`host`: the server's address (`::1` for IPv6); `source`: the local address to connect
    from (Linux routes all of 127.0.0.0/8 to the loopback); `headers`: extra request headers
    (a proxy's X-Real-IP)."""
    stream = await trio.open_tcp_stream(host, port, local_address=source)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, f"[{host}]" if ":" in host else host,
                                          path, extra_headers=headers,
                                          max_message_size=max_message_size)
            try:
                yield ws
            finally:
                with trio.move_on_after(2):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)
