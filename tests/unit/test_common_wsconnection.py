"""The WebSocket shell over in-memory streams: pings, the closing handshake, violations."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from wormhole_common.core.websocket import close_frame, text_frame
from wormhole_common.http import split_head
from wormhole_common.wsconnection import Closed, Upgrade, WebSocket

from tests.unit.test_common_websocket import client_frame


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def test_pings_are_answered_and_messages_come_in_order() -> None:
    with trio.fail_after(5):
        client, server = trio.testing.memory_stream_pair()
        ws = WebSocket(server, 1 << 20, buffered=client_frame(b"early"))
        await client.send_all(client_frame(b"p1", first=0x89) + client_frame(b"next"))
        assert await ws.receive() == "early"
        assert await ws.receive() == "next"
        assert await client.receive_some() == b"\x8a\x02p1"  # the pong


async def test_the_clients_close_is_echoed_and_ends_receiving() -> None:
    with trio.fail_after(5):
        client, server = trio.testing.memory_stream_pair()
        ws = WebSocket(server, 1 << 20)
        await client.send_all(client_frame(b"\x03\xe9", first=0x88))
        with pytest.raises(Closed):
            await ws.receive()
        assert await client.receive_some() == close_frame(1001)
        with pytest.raises(Closed):
            await ws.send_texts(["too late"])


async def test_our_close_waits_for_the_answer_dropping_messages() -> None:
    with trio.fail_after(5):
        client, server = trio.testing.memory_stream_pair()
        ws = WebSocket(server, 1 << 20)
        await client.send_all(client_frame(b"in flight") + client_frame(b"", first=0x88))
        await ws.close(4000, "bye")
        assert ws.close_received is not None
        assert await client.receive_some() == close_frame(4000, "bye")


async def test_a_violation_is_answered_with_its_close_then_the_end() -> None:
    with trio.fail_after(5):
        client, server = trio.testing.memory_stream_pair()
        ws = WebSocket(server, 1 << 20)
        await client.send_all(client_frame(b"\xc3\x28"))
        with pytest.raises(Closed):
            await ws.receive()
        assert ws.violation is not None and ws.violation.code == 1007
        await ws.aclose()
        assert await read_all(client) == close_frame(1007, "invalid UTF-8")


async def test_our_ping_returns_on_its_pong() -> None:
    with trio.fail_after(5):
        client, server = trio.testing.memory_stream_pair()
        ws = WebSocket(server, 1 << 20)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.ping)
            frame = await client.receive_some()
            assert frame[:2] == b"\x89\x04"
            await client.send_all(client_frame(frame[2:], first=0x8A) + client_frame(b"m"))
            assert await ws.receive() == "m"  # the reader saw the pong on the way


async def test_aclose_sends_a_normal_close_when_none_went_out() -> None:
    with trio.fail_after(5):
        client, server = trio.testing.memory_stream_pair()
        ws = WebSocket(server, 1 << 20)
        await ws.aclose()
        assert await read_all(client) == close_frame(1000)


async def test_what_try_send_cannot_write_goes_first_whoever_writes_next() -> None:
    """A burst the socket takes only part of: the rest is kept and written before anything
    else (here a ping from another task), so frames never interleave."""
    with trio.fail_after(10):
        a, b = trio.socket.socketpair()
        ws = WebSocket(trio.SocketStream(a), 1 << 20)
        burst = text_frame("x" * 4_000_000)  # more than a socket buffer holds
        assert ws.try_send(burst) is False
        received = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.ping)  # its frame must wait for the rest of the burst
            while len(received) < len(burst) + 6:
                received += await b.recv(1 << 20)
            nursery.cancel_scope.cancel()
        assert bytes(received[:len(burst)]) == burst
        assert received[len(burst):len(burst) + 2] == b"\x89\x04"  # then the ping
        b.close()
        await ws.aclose()


async def test_try_send_on_a_memory_stream_keeps_all_for_flush() -> None:
    with trio.fail_after(5):
        client, server = trio.testing.memory_stream_pair()
        ws = WebSocket(server, 1 << 20)
        assert ws.try_send(text_frame("one")) is False
        assert ws.try_send(text_frame("two")) is False  # behind the first
        await ws.flush()
        assert await client.receive_some() == text_frame("one") + text_frame("two")


async def test_a_deferred_101_goes_out_with_the_first_frame_in_one_write() -> None:
    a, b = socket.socketpair()
    b.setblocking(False)
    head = (b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    ws = await Upgrade(stream, *split_head(head), 1 << 20).accept([], deferred=True)
    with pytest.raises(BlockingIOError):  # nothing is written before the first frame
        b.recv(1 << 16)
    assert ws.try_send(text_frame("welcome")) is True
    received = b.recv(1 << 16)  # one write: the 101, then the frame
    assert received.startswith(b"HTTP/1.1 101 ")
    assert received.endswith(b"\r\n\r\n" + text_frame("welcome"))
    b.close()
    await ws.aclose()
