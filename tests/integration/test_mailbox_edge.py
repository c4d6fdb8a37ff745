"""The hand-written HTTP and WebSocket edge against hostile clients, over real sockets: upgrade
requests RFC 6455 refuses, request heads over the limit, messages cut into floods of tiny
fragments, refused big frames that must still deliver their close frame, and a peer that
stops reading while it floods pings."""

from __future__ import annotations

import contextlib
import socket
import struct

import pytest
import trio
from wormhole_common.http import MAX_HEAD_BYTES
from wormhole_mailbox.server import MailboxServer

from tests.integration.mailbox_helpers import serving
from tests.integration.test_mailbox_closes import (
    UPGRADE,
    client_frame,
    dropped,
    server_frames,
    upgraded,
)
from tests.support.processes import free_port
from tests.support.transit import running_transit

TOO_BIG = struct.pack("!H", 1009) + b"message over 1048576 bytes"


async def counted(server: MailboxServer, reason: str, expected: int) -> None:
    """Until the server has counted the drops (it does once the client has gone); the
    test's time bound fails a count that never comes."""
    while dropped(server, reason) < expected:  # noqa: ASYNC110 (a metric has no event)
        await trio.sleep(0.01)
    assert dropped(server, reason) == expected


async def exchange(port: int, request: bytes) -> bytes:
    """Send `request` whole, then read everything until the server closes; a reset (the
    answer lost under unread data) fails the test."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        received = b""
        while chunk := await stream.receive_some():
            received += chunk
    return received


@pytest.mark.parametrize(("change", "status"), [
    ((b"HTTP/1.1\r\n", b"HTTP/1.0\r\n"), b"400"),
    ((b"Host: test\r\n", b""), b"400"),
    ((b"dGhlIHNhbXBsZSBub25jZQ==", b"abc"), b"400"),
    ((b"Version: 13", b"Version: 8"), b"426"),
])
async def test_upgrades_rfc_6455_refuses_are_answered(
    database_url: str, change: tuple[bytes, bytes], status: bytes,
) -> None:
    async with serving(database_url) as server:
        assert server.port is not None
        answer = await exchange(server.port, UPGRADE.replace(*change))
        assert answer.startswith(b"HTTP/1.1 " + status + b" ")
        if status == b"426":
            assert b"\r\nSec-WebSocket-Version: 13\r\n" in answer
        await counted(server, "bad_upgrade", 1)


def padded_head(size: int, request: bytes = b"GET / HTTP/1.1\r\nHost: test\r\n") -> bytes:
    """A request head of exactly `size` bytes (a long header fills it)."""
    filler = size - len(request) - len(b"X-Pad: \r\n\r\n")
    return request + b"X-Pad: " + b"a" * filler + b"\r\n\r\n"


async def test_request_heads_over_8_kib_get_431_on_every_port(database_url: str) -> None:
    async with serving(database_url, metrics_port=free_port()) as server:
        assert server.port is not None and server.endpoint.port is not None
        for port in (server.port, server.endpoint.port):
            at_limit = await exchange(port, padded_head(MAX_HEAD_BYTES))
            assert not at_limit.startswith(b"HTTP/1.1 431 ")
            for size in (MAX_HEAD_BYTES + 1, 40_000):
                answer = await exchange(port, padded_head(size))
                assert answer.startswith(b"HTTP/1.1 431 "), (port, size)
        await counted(server, "head_too_large", 2)
        no_host = await exchange(server.endpoint.port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert no_host.startswith(b"HTTP/1.1 400 ")
    async with running_transit() as relay:
        assert relay.websocket_port is not None
        answer = await exchange(relay.websocket_port, padded_head(40_000, UPGRADE[:-2]))
        assert answer.startswith(b"HTTP/1.1 431 ")
        old = await exchange(relay.websocket_port, UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"))
        assert old.startswith(b"HTTP/1.1 400 ")


async def send_then_read_close(server: MailboxServer, data: bytes) -> list[tuple[int, bytes]]:
    """Upgrade, then send `data` while reading: the frames the server sent until it closed."""
    stream, _head, received = await upgraded(server)
    frames = bytearray(received)

    async def send() -> None:
        with contextlib.suppress(trio.BrokenResourceError):  # closed after its close frame
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while chunk := await stream.receive_some():
            frames += chunk
        nursery.cancel_scope.cancel()
    await stream.aclose()
    return server_frames(bytes(frames))


async def test_floods_of_tiny_fragments_are_refused(database_url: str) -> None:
    one_byte = client_frame(b"a", first=0x01) + client_frame(b"a", first=0x00) * 200_000
    empty = client_frame(b"", first=0x01) + client_frame(b"", first=0x00) * 3_000_000
    async with serving(database_url) as server:
        for flood in (one_byte, empty):
            frames = await send_then_read_close(server, flood)
            assert frames[-1] == (0x8, TOO_BIG)
        await counted(server, "too_big", 2)


async def test_refused_big_frames_deliver_their_close_frame(database_url: str) -> None:
    """The client sends all of a 2 MiB frame before it reads: the server refuses it at the
    header, then reads and drops the rest, so its close frame is not lost to a reset."""
    frame = client_frame(b"\x00" * (2 << 20), first=0x82)
    async with serving(database_url) as server:
        for _ in range(20):
            stream, _head, received = await upgraded(server)
            await stream.send_all(frame)
            while chunk := await stream.receive_some():
                received += chunk
            await stream.aclose()
            assert server_frames(received)[-1] == (0x8, TOO_BIG)


async def flood_pings_without_reading(port: int, stop: trio.Event) -> None:
    """A client that never reads (a tiny receive window) and sends pings until the server
    drops it (or `stop`)."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(UPGRADE)
    ping = client_frame(b"p" * 125, first=0x89)
    try:
        while not stop.is_set():
            await stream.send_all(ping * 64)
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


async def test_a_peer_that_floods_pings_and_never_reads_is_dropped(database_url: str) -> None:
    async with serving(database_url, websocket_write_timeout_seconds=0.5) as server:
        assert server.port is not None
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood_pings_without_reading, server.port, stop)
            while dropped(server, "write_timeout") == 0:
                # meanwhile another client is served
                stream, _head, received = await upgraded(server)
                await stream.send_all(client_frame(b'{"type": "ping", "ping": 7}'))
                while len(server_frames(received)) < 3:  # the welcome, the ack and the pong
                    received += await stream.receive_some()
                await stream.aclose()
                await trio.sleep(0.1)
            stop.set()


async def test_a_peer_that_never_reads_does_not_hold_up_the_shutdown(database_url: str) -> None:
    """Stopping with a flooder connected ends within the grace, whatever the write timeout."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        async with serving(database_url, shutdown_grace_seconds=0.5,
                           websocket_write_timeout_seconds=3600) as server:
            assert server.port is not None
            nursery.start_soon(flood_pings_without_reading, server.port, stop)
            while not server.handler.connections:  # noqa: ASYNC110 (a set has no event)
                await trio.sleep(0.05)
            await trio.sleep(0.5)  # the server's socket buffer fills up
        # `serving` bounds the whole test: the server returned despite the flooder
        stop.set()
