"""Bulk relaying: large transfers both ways, WebSocket halves, back-pressure."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wormhole_transit import relay as relay_module
from wormhole_transit.server import TransitServer

from tests.support.transit import (
    connect,
    line,
    pair_tcp,
    receive_all,
    receive_exactly,
    running_transit,
    side,
    token,
    wait_for,
    wait_moods,
    ws_connect,
)

LIMIT = 30
CHUNK = 256 * 1024

Send = Callable[[bytes], Awaitable[None]]
Receive = Callable[[], Awaitable[bytes]]


def tcp_io(stream: trio.SocketStream) -> tuple[Send, Receive, Callable[[], Awaitable[None]]]:
    async def receive() -> bytes:
        try:
            return await stream.receive_some(CHUNK)
        except trio.BrokenResourceError:
            return b""

    return stream.send_all, receive, stream.send_eof


def ws_io(ws: WebSocketConnection) -> tuple[Send, Receive, Callable[[], Awaitable[None]]]:
    async def send(data: bytes) -> None:
        await ws.send_message(data)

    async def receive() -> bytes:
        try:
            message = await ws.get_message()
        except ConnectionClosed:
            return b""
        assert isinstance(message, bytes)
        return message

    async def close() -> None:
        await ws.aclose()

    return send, receive, close


async def exchange(a: tuple[Send, Receive, Callable[[], Awaitable[None]]],
                   b: tuple[Send, Receive, Callable[[], Awaitable[None]]], size: int) -> None:
    """Send `size` random bytes each way at once; each side checks the other's SHA-256."""
    payloads = [os.urandom(size), os.urandom(size)]
    received: list[hashlib._Hash] = [hashlib.sha256(), hashlib.sha256()]
    counts = [0, 0]
    sides = [a, b]

    async def sender(i: int) -> None:
        send = sides[i][0]
        data = memoryview(payloads[i])
        for offset in range(0, size, CHUNK):
            await send(bytes(data[offset:offset + CHUNK]))

    async def receiver(i: int) -> None:
        receive = sides[i][1]
        while counts[i] < size:
            chunk = await receive()
            assert chunk, "stream ended early"
            received[i].update(chunk)
            counts[i] += len(chunk)

    async with trio.open_nursery() as nursery:
        for i in (0, 1):
            nursery.start_soon(sender, i)
            nursery.start_soon(receiver, i)
    assert counts == [size, size]
    assert received[1].digest() == hashlib.sha256(payloads[0]).digest()
    assert received[0].digest() == hashlib.sha256(payloads[1]).digest()


@pytest.mark.parametrize("use_splice", [True, False], ids=["splice", "copy"])
async def test_32_mib_both_ways_tcp(database_url: str, use_splice: bool) -> None:
    if use_splice and not relay_module.HAS_SPLICE:
        pytest.skip("no splice(2) here")
    size = 32 << 20
    with trio.fail_after(LIMIT):
        async with running_transit(database_url, use_splice=use_splice) as server:
            a, b = await pair_tcp(server)
            await exchange(tcp_io(a), tcp_io(b), size)
            await a.aclose()
            assert await receive_all(b) == b""
            await wait_moods(server, 1)
            assert server.stats.moods["happy"] == 1
            await server.recorder.wait_idle()
            assert server.recorder.written == 1


async def ws_handshake(ws: WebSocketConnection, tok: bytes) -> None:
    await ws.send_message(line(tok, side()))


async def test_tcp_and_websocket_pair_both_orders() -> None:
    size = 8 << 20
    with trio.fail_after(LIMIT):
        async with running_transit() as server:
            for ws_first in (True, False):
                tok = token()
                async with ws_connect(server) as ws:
                    tcp = await connect(server)
                    if ws_first:
                        await ws_handshake(ws, tok)
                        await wait_for(lambda: server.stats.waiting_sides == 1)
                        await tcp.send_all(line(tok, side()))
                    else:
                        await tcp.send_all(line(tok, side()))
                        await wait_for(lambda: server.stats.waiting_sides == 1)
                        await ws_handshake(ws, tok)
                    assert await ws.get_message() == b"ok\n"
                    assert await receive_exactly(tcp, 3) == b"ok\n"
                    await exchange(tcp_io(tcp), ws_io(ws), size)
                    await tcp.aclose()
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.get_message()
                    assert closed.value.reason.code == 1000


async def test_websocket_pair_and_reassembled_stream() -> None:
    with trio.fail_after(LIMIT):
        async with running_transit() as server:
            tok = token()
            async with ws_connect(server, "/any/path?x=1") as a, ws_connect(server) as b:
                await a.send_message(line(tok, side())[:-1])  # LF optional
                await wait_for(lambda: server.stats.waiting_sides == 1)
                await b.send_message(line(tok, side()))
                assert await a.get_message() == b"ok\n"
                assert await b.get_message() == b"ok\n"
                await exchange(ws_io(a), ws_io(b), 4 << 20)
                await a.aclose()
                with pytest.raises(ConnectionClosed) as closed:
                    await b.get_message()
                assert (closed.value.reason.code, closed.value.reason.reason) == (1000, None)


async def test_websocket_frames_to_tcp_stream() -> None:
    with trio.fail_after(LIMIT):
        async with running_transit() as server:
            tok = token()
            async with ws_connect(server) as ws:
                await ws.send_message(line(tok, side()))
                await wait_for(lambda: server.stats.waiting_sides == 1)
                tcp = await connect(server)
                await tcp.send_all(line(tok, side()))
                assert await ws.get_message() == b"ok\n"
                await ws.send_message(b"frag1")
                await ws.send_message(b"frag2")
                assert await receive_exactly(tcp, 3 + 10) == b"ok\nfrag1frag2"


async def test_websocket_bad_handshake_impatient_and_text() -> None:
    with trio.fail_after(LIMIT):
        async with running_transit() as server:
            async with ws_connect(server) as ws:
                await ws.send_message(line(token(), side()) + b"extra")
                assert await ws.get_message() == b"bad handshake\n"
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1000
            async with ws_connect(server) as ws:
                await ws.send_message(line(token(), side()))
                await wait_for(lambda: server.stats.waiting_sides == 1)
                await ws.send_message(b"early")
                assert await ws.get_message() == b"impatient\n"
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1000
            async with ws_connect(server) as ws:
                await ws.send_message(line(token(), side()).decode())
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                # dropped without a close frame, as the reference does
                assert closed.value.reason.code == 1006
            await wait_moods(server, 3)
    moods = server.stats.moods
    assert (moods["errory"], moods["impatient"], moods["empty"]) == (1, 1, 1)


TOTAL = 64 << 20  # far more than loopback socket buffers can absorb


async def stalled_then_drained(server: TransitServer, send: Send, receive: Receive) -> None:
    """Push TOTAL bytes at a reader that is not reading; once the sender makes no progress,
    the relay must be holding little; then the reader takes everything."""
    sent = 0

    async def sender() -> None:
        nonlocal sent
        chunk = b"s" * 65536
        while sent < TOTAL:
            await send(chunk)
            sent += len(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while True:
            before = sent
            await trio.sleep(0.5)
            if sent == before:
                break
        assert 0 < sent < TOTAL, "the sender should have been stopped by back-pressure"
        assert server.stats.buffered_bytes <= 2 * relay_module.PIPE_SIZE
        got = 0
        while got < TOTAL:
            chunk = await receive()
            assert chunk
            got += len(chunk)
    assert got == sent == TOTAL


@pytest.mark.parametrize("kinds", ["tcp-tcp", "ws-tcp", "tcp-ws"])
async def test_back_pressure_with_a_stalled_reader(kinds: str) -> None:
    """The sender blocks once kernel buffers fill; the relay itself holds at most ~1 MiB."""
    with trio.fail_after(LIMIT):
        async with running_transit() as server:
            sender_kind, reader_kind = kinds.split("-")
            tok = token()
            async with ws_connect(server) as ws:
                if sender_kind == "ws":
                    await ws.send_message(line(tok, side()))
                    await wait_for(lambda: server.stats.waiting_sides == 1)
                    reader = await connect(server)
                    await reader.send_all(line(tok, side()))
                    assert await ws.get_message() == b"ok\n"
                    assert await receive_exactly(reader, 3) == b"ok\n"
                    await stalled_then_drained(server, ws_io(ws)[0], tcp_io(reader)[1])
                elif reader_kind == "ws":
                    sender = await connect(server)
                    await sender.send_all(line(tok, side()))
                    await wait_for(lambda: server.stats.waiting_sides == 1)
                    await ws.send_message(line(tok, side()))
                    assert await receive_exactly(sender, 3) == b"ok\n"
                    assert await ws.get_message() == b"ok\n"
                    await stalled_then_drained(server, sender.send_all, ws_io(ws)[1])
                else:
                    a, b = await pair_tcp(server)
                    await stalled_then_drained(server, a.send_all, tcp_io(b)[1])
