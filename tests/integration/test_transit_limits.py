"""Timeouts, connection limits, the `current` snapshot and a database that is down."""

from __future__ import annotations

from typing import Any

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict

from tests.support.postgres import free_port
from tests.support.transit import (
    connect,
    line,
    pair_tcp,
    receive_all,
    receive_exactly,
    request_stop,
    running_transit,
    side,
    token,
    usage_rows,
    wait_for,
    wait_moods,
)

LIMIT = 10


async def test_silent_connection_hits_the_handshake_timeout(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url, handshake_timeout_seconds=0.2) as server:
            silent = await connect(server)
            partial = await connect(server)
            await partial.send_all(b"please relay ")
            assert await receive_all(silent) == b""
            assert await receive_all(partial) == b""
            await wait_moods(server, 2)
            assert server.stats.timeouts["handshake"] == 2
            assert [r[4] for r in await usage_rows(server, database_url)] == ["empty", "empty"]


async def test_lonely_timeout_closes_a_waiter(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url, lonely_timeout_seconds=0.3) as server:
            s = await connect(server)
            await s.send_all(line(token(), side()))
            assert await receive_all(s) == b""
            await wait_moods(server, 1)
            assert server.stats.timeouts["lonely"] == 1
            assert server.stats.waiting_tokens == 0
            assert [r[4] for r in await usage_rows(server, database_url)] == ["lonely"]


async def test_paired_connections_outlive_the_lonely_timeout() -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(lonely_timeout_seconds=0.2) as server:
            a, b = await pair_tcp(server)
            await trio.sleep(0.4)
            await a.send_all(b"still here")
            assert await receive_exactly(b, 10) == b"still here"


async def test_per_ip_limit_refuses_with_a_clean_close() -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(max_connections_per_ip=2) as server:
            a, b = await pair_tcp(server)
            refused = await connect(server)
            assert await receive_all(refused) == b""
            assert server.stats.refused["max_connections_per_ip"] == 1
            await a.send_all(b"unaffected")
            assert await receive_exactly(b, 10) == b"unaffected"
            await a.aclose()
            await b.aclose()
            await wait_for(lambda: not server.stats.connections_open)
            c, d = await pair_tcp(server)  # slots are given back
            await c.send_all(b"x")
            assert await receive_exactly(d, 1) == b"x"


async def test_total_limit_refuses() -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(max_connections=1) as server:
            first = await connect(server)
            await first.send_all(line(token(), side()))
            await wait_for(lambda: server.stats.waiting_sides == 1)
            second = await connect(server)
            assert await receive_all(second) == b""
            assert server.stats.refused["max_connections"] == 1
            assert server.stats.waiting_sides == 1


async def test_current_snapshot_is_committed(database_url: str) -> None:
    def read() -> list[tuple[Any, ...]]:
        with psycopg.connect(database_url) as conn:
            return conn.execute(
                "SELECT connected, waiting, incomplete_bytes FROM transit_current").fetchall()

    with trio.fail_after(LIMIT):
        async with running_transit(database_url, current_interval_seconds=0.05) as server:
            await server.recorder.ready.wait()
            lonely = await connect(server)
            await lonely.send_all(line(token(), side()))
            a, b = await pair_tcp(server)
            await a.send_all(b"12345")
            assert await receive_exactly(b, 5) == b"12345"
            while True:
                if await trio.to_thread.run_sync(read) == [(2, 1, 5)]:
                    break
                await trio.sleep(0.02)


class ToggleProxy:
    """A TCP forwarder to PostgreSQL that can refuse connections: the database 'down'."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.up = False
        self.port = free_port()

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if not self.up:
                return
            server = await trio.open_tcp_stream(*self.target)
            async with server, trio.open_nursery() as nursery:
                async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                    try:
                        while data := await src.receive_some(65536):
                            await dst.send_all(data)
                    except trio.BrokenResourceError:
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pump, client, server)
                nursery.start_soon(pump, server, client)


async def test_relaying_continues_while_the_database_is_down(database_url: str) -> None:
    params = conninfo_to_dict(database_url)
    proxy = ToggleProxy(str(params["host"]), int(params["port"]))
    proxied = database_url.replace(f":{params['port']}/", f":{proxy.port}/")
    if proxied == database_url:
        params["port"] = str(proxy.port)
        proxied = psycopg.conninfo.make_conninfo(**params)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            async with running_transit(proxied, usage_queue_size=3) as server:
                for _ in range(5):
                    a, b = await pair_tcp(server)
                    await a.send_all(b"data")
                    assert await receive_exactly(b, 4) == b"data"
                    await a.aclose()
                    await b.aclose()
                await wait_moods(server, 5)
                await wait_for(lambda: server.recorder.failures > 0)
                assert server.recorder.dropped == 2
                proxy.up = True
                rows = await usage_rows(server, database_url)
                assert [(r[3], r[4]) for r in rows] == [(4, "happy")] * 3
            nursery.cancel_scope.cancel()


async def test_stopping_closes_waiters_at_once_and_lets_pairs_finish(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url, shutdown_grace_seconds=5) as server:
            waiter = await connect(server)
            await waiter.send_all(line(token(), side()))
            await wait_for(lambda: server.stats.waiting_sides == 1)
            a, b = await pair_tcp(server)
            request_stop(server)
            assert await receive_all(waiter) == b""
            await a.send_all(b"after stop")
            assert await receive_exactly(b, 10) == b"after stop"
            await a.aclose()
            assert await receive_all(b) == b""
            await wait_moods(server, 2)
            rows = await usage_rows(server, database_url)
    assert sorted((r[3], r[4]) for r in rows) == [(0, "lonely"), (10, "happy")]
