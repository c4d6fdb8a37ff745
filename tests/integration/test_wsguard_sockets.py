"""`GuardedStream` over real sockets on 127.0.0.1, wired as the mailbox would wire it (the
request head read first to route the request, then handed over): the client receives the
close frame with the right code, then the end of the connection."""

from __future__ import annotations

import functools
import struct

import trio
from trio_websocket import ConnectionClosed, wrap_server_stream
from wormhole_common.http import read_head
from wormhole_common.wsguard import Close, GuardedStream

LIMIT = 1 << 20
MASK = b"\x01\x02\x03\x04"
REQUEST = (b"GET /v1 HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def masked_text(payload: bytes, announce: int | None = None) -> bytes:
    length = len(payload) if announce is None else announce
    head = b"\x81" + (bytes([0x80 | length]) if length < 126
                      else bytes([0x80 | 127]) + struct.pack("!Q", length))
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


async def handler(sent: list[Close | None], got: list[str | bytes], done: trio.Event,
                  stream: trio.SocketStream) -> None:
    head = await read_head(stream)
    assert head is not None
    guarded = GuardedStream(stream, LIMIT, head)
    async with trio.open_nursery() as nursery:
        request = await wrap_server_stream(nursery, guarded, max_message_size=LIMIT)
        ws = await request.accept()
        try:
            while True:
                got.append(await ws.get_message())
        except ConnectionClosed:
            pass
        sent.append(await guarded.finish(ws.closed.code if ws.closed else None))
        nursery.cancel_scope.cancel()
    done.set()


async def exchange(client_bytes: bytes) -> tuple[bytes, list[Close | None], list[str | bytes]]:
    sent: list[Close | None] = []
    got: list[str | bytes] = []
    done = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(
                trio.serve_tcp, functools.partial(handler, sent, got, done), 0,
                host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(REQUEST)
            received = b""
            while b"\r\n\r\n" not in received:  # RFC 6455 4.1: no frames before the 101
                received += await client.receive_some()
            await client.send_all(client_bytes)
            while chunk := await client.receive_some():
                received += chunk
            await client.aclose()
            await done.wait()
            nursery.cancel_scope.cancel()
    return received.split(b"\r\n\r\n", 1)[1], sent, got


async def test_invalid_utf8_is_closed_with_1007_over_tcp() -> None:
    received, sent, got = await exchange(masked_text(b"first") + masked_text(b"\xc3\x28"))
    assert got == ["first"]
    assert sent == [Close(1007, "invalid UTF-8")]
    assert received == b"\x88\x0f\x03\xefinvalid UTF-8"


async def test_a_header_announcing_2_to_the_62_is_closed_with_1009_over_tcp() -> None:
    received, sent, got = await exchange(masked_text(b"", announce=1 << 62))
    assert got == []
    assert sent == [Close(1009, f"message over {LIMIT} bytes")]
    assert received == b"\x88\x1c\x03\xf1message over 1048576 bytes"
