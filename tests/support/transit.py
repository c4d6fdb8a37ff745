"""Run our transit relay inside a test's trio run, plus raw TCP and WebSocket clients."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import trio
from trio_websocket import WebSocketConnection
from wormhole_common.database import Database
from wormhole_transit.relay import HAS_SPLICE
from wormhole_transit.server import TransitServer
from wormhole_transit.settings import TransitSettings
from wormhole_transit.usage_writer import UsageRecorder

from tests.support.websocket import open_websocket

TIMEOUT = 10


def token() -> bytes:
    return secrets.token_hex(32).encode()


def side() -> bytes:
    return secrets.token_hex(8).encode()


def line(tok: bytes, sid: bytes | None = None) -> bytes:
    if sid is None:
        return b"please relay " + tok + b"\n"
    return b"please relay " + tok + b" for side " + sid + b"\n"


def transit_settings(database_url: str | None, **overrides: Any) -> TransitSettings:
    values: dict[str, Any] = {"database_url": database_url, "host": "127.0.0.1", "port": 0,
                              "websocket_port": 0, "shutdown_grace_seconds": 1,
                              "metrics_port": 0}
    values.update(overrides)
    return TransitSettings(**values)


@asynccontextmanager
async def running_transit(database_url: str | None = None, *, retry_max_seconds: float = 0.2,
                          use_splice: bool = HAS_SPLICE,
                          **overrides: Any) -> AsyncIterator[TransitServer]:
    settings = transit_settings(database_url, **overrides)
    db = Database(database_url, size=2, connect_timeout_s=2) if database_url else None
    recorder = UsageRecorder(db, queue_size=settings.usage_queue_size, log_json=False,
                             retry_max_seconds=retry_max_seconds)
    relay = TransitServer(settings, recorder, use_splice=use_splice)
    stop = _stops[relay] = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            server: TransitServer = await nursery.start(_serve, relay, stop)
            try:
                yield server
            finally:
                for stream in _clients.pop(server, []):
                    await trio.aclose_forcefully(stream)
                stop.set()
    finally:
        del _stops[relay]
        if db is not None:
            db.close()


async def _serve(server: TransitServer, stop: trio.Event, task_status: Any) -> None:
    await server.serve(stop, task_status=task_status)


_clients: dict[TransitServer, list[trio.SocketStream]] = {}
_stops: dict[TransitServer, trio.Event] = {}


def request_stop(server: TransitServer) -> None:
    """What SIGTERM does: stop accepting, close waiters, give pairs the grace period."""
    _stops[server].set()


async def connect(server: TransitServer, host: str = "127.0.0.1") -> trio.SocketStream:
    """A client connection (to `host`: `::1` for IPv6), closed when the server's context
    ends."""
    assert server.port is not None
    stream = await trio.open_tcp_stream(host, server.port)
    _clients.setdefault(server, []).append(stream)
    return stream


@asynccontextmanager
async def ws_connect(server: TransitServer, path: str = "/",
                     host: str = "127.0.0.1") -> AsyncIterator[WebSocketConnection]:
    """A WebSocket client of the relay (see `open_websocket`)."""
    assert server.websocket_port is not None
    async with open_websocket(server.websocket_port, path, host=host,
                              max_message_size=64 << 20) as ws:
        yield ws


async def receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def receive_all(stream: trio.SocketStream) -> bytes:
    """Everything until EOF (a reset after the data also ends it)."""
    data = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def pair_tcp(server: TransitServer) -> tuple[trio.SocketStream, trio.SocketStream]:
    tok = token()
    a = await connect(server)
    await a.send_all(line(tok, side()))
    await wait_for(lambda: server.stats.waiting_sides >= 1)
    b = await connect(server)
    await b.send_all(line(tok, side()))
    assert await receive_exactly(a, 3) == b"ok\n"
    assert await receive_exactly(b, 3) == b"ok\n"
    return a, b


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll server state; the caller's fail_after bounds it."""
    while True:
        if condition():
            return
        await trio.sleep(0.005)


async def wait_moods(server: TransitServer, count: int) -> None:
    await wait_for(lambda: sum(server.stats.moods.values()) >= count)


async def usage_rows(server: TransitServer, database_url: str) -> list[tuple[Any, ...]]:
    """Committed usage rows, once every recorded mood has been written."""
    await server.recorder.wait_idle()

    def query() -> list[tuple[Any, ...]]:
        with psycopg.connect(database_url) as conn:
            return conn.execute(
                "SELECT started, total_time, waiting_time, total_bytes, result"
                " FROM transit_usage ORDER BY id").fetchall()

    return await trio.to_thread.run_sync(query)
