"""The HTTP side of the listener (docs/mailbox-protocol.md §2.2, §2.3): the upgrade on /v1, no
extensions, other paths."""

from __future__ import annotations

import pytest
import trio

from tests.integration.mailbox_helpers import serving

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(path: bytes, *extra: bytes) -> bytes:
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: localhost", b"Upgrade: websocket",
             b"Connection: Upgrade", b"Sec-WebSocket-Key: " + KEY, b"Sec-WebSocket-Version: 13",
             *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def head_of_response(port: int, request: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Status line, lower-cased headers and whatever body arrived with them."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    finally:
        await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *header_lines = head.split(b"\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


async def test_upgrade_declines_permessage_deflate(database_url: str) -> None:
    # wormhole-william offers this and aborts on an incompatible reply
    # (docs/mailbox-protocol.md §2.3).
    offer = b"Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover;" \
            b" server_no_context_takeover"
    async with serving(database_url) as server:
        assert server.port is not None
        status, headers, _ = await head_of_response(server.port, upgrade(b"/v1", offer))
    assert status.startswith(b"HTTP/1.1 101")
    assert b"sec-websocket-extensions" not in headers
    assert b"sec-websocket-protocol" not in headers
    assert headers[b"server"].startswith(b"Magic Wormhole Mailbox")


@pytest.mark.parametrize("path", [b"/v2", b"/", b"/v1x"])
async def test_other_websocket_paths_are_404(database_url: str, path: bytes) -> None:
    async with serving(database_url) as server:
        assert server.port is not None
        status, _, _ = await head_of_response(server.port, upgrade(path))
    assert status.startswith(b"HTTP/1.1 404")


async def test_plain_get_root_is_the_liveness_page(database_url: str) -> None:
    async with serving(database_url) as server:
        assert server.port is not None
        status, headers, body = await head_of_response(
            server.port, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200")
    assert headers[b"content-type"].startswith(b"text/plain")
    assert body == b"Wormhole Relay\n"
