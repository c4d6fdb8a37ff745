"""The relay's WebSocket port over real sockets: a client's protocol violation gets the close
code for it, an invalid upgrade an HTTP answer; a waiting WebSocket answers pings."""

from __future__ import annotations

import struct

import trio

from tests.integration.test_mailbox_closes import UPGRADE, client_frame, server_frames
from tests.support.transit import receive_all, running_transit


async def upgraded(port: int, request: bytes = UPGRADE) -> tuple[trio.SocketStream, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(request)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = await stream.receive_some()
        if not chunk:
            break
        received += chunk
    return stream, received


async def test_violations_and_bad_upgrades_on_the_websocket_port() -> None:
    with trio.fail_after(20):
        async with running_transit() as server:
            assert server.websocket_port is not None
            cases = [(client_frame(b"x", first=0xC1), 1002),  # reserved bits
                     (client_frame(b"\xc3\x28"), 1007),  # a text frame, invalid UTF-8
                     (client_frame(b"", first=0x82, announce=(16 << 20) + 1), 1009)]
            for violation, code in cases:
                stream, head = await upgraded(server.websocket_port)
                assert head.startswith(b"HTTP/1.1 101 ")
                await stream.send_all(violation)
                frames = server_frames(await receive_all(stream))
                assert frames[-1][0] == 0x8
                assert frames[-1][1][:2] == struct.pack("!H", code)
                await stream.aclose()
            old = UPGRADE.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")
            stream, head = await upgraded(server.websocket_port, old)
            assert head.startswith(b"HTTP/1.1 426 ")
            await stream.aclose()


async def test_a_waiting_websocket_answers_pings() -> None:
    with trio.fail_after(20):
        async with running_transit() as server:
            assert server.websocket_port is not None
            stream, head = await upgraded(server.websocket_port)
            assert head.startswith(b"HTTP/1.1 101 ")
            hello = b"please relay " + b"ab" * 32 + b" for side " + b"0123456789abcdef"
            await stream.send_all(client_frame(hello, first=0x82))  # a handshake: it waits
            await stream.send_all(client_frame(b"still there?", first=0x89))
            received = b""
            while not server_frames(received):
                received += await stream.receive_some()
            assert server_frames(received)[0] == (0xA, b"still there?")
            await stream.aclose()
