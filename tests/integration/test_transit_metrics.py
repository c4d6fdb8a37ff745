"""The relay's /metrics, /healthz and /readyz over real sockets (and PostgreSQL)."""

from __future__ import annotations

import psycopg
import pytest
import trio
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from wormhole_transit.server import TransitServer

from tests.support.metrics import check_metrics, http_get, promtool, scrape
from tests.support.postgres import free_port
from tests.support.transit import (
    connect,
    pair_tcp,
    receive_all,
    receive_exactly,
    running_transit,
    wait_for,
    wait_moods,
)

P = "wormhole_transit"
LIMIT = 20


def port(server: TransitServer) -> int:
    assert server.endpoint.port is not None
    return server.endpoint.port


async def test_a_transfer_moves_bytes_pairs_and_histograms() -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(metrics_port=free_port()) as server:
            a, b = await pair_tcp(server)
            page = await scrape(port(server))
            assert page.value(f"{P}_pairs_active") == 1
            assert page.value(f"{P}_connections_open") == 2
            await a.send_all(b"x" * 1000)
            assert await receive_exactly(b, 1000) == b"x" * 1000
            page = await scrape(port(server))
            assert page.value(f"{P}_bytes_relayed_total") == 1000  # counted while running
            await a.aclose()
            await b.aclose()
            await wait_moods(server, 1)
            await wait_for(lambda: not server.stats.connections_open)
            page = await scrape(port(server))
    assert page.value(f"{P}_bytes_relayed_total") == 1000
    assert page.value(f"{P}_outcomes_total", mood="happy") == 1
    assert page.value(f"{P}_pairs_active") == 0
    assert page.value(f"{P}_waiting_seconds_count") == 1
    assert page.value(f"{P}_pair_duration_seconds_count") == 1
    assert page.value(f"{P}_connections_total", kind="tcp") == 2
    assert page.value(f"{P}_max_connections") == 20_000


async def test_a_bad_handshake_a_waiting_side_and_a_refusal_move_their_metrics() -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(metrics_port=free_port(), max_connections_per_ip=2) as server:
            bad = await connect(server)
            await bad.send_all(b"please relay nonsense\n")
            assert await receive_all(bad) == b"bad handshake\n"
            await wait_for(lambda: not server.stats.connections_open)
            waiting = await connect(server)
            await waiting.send_all(b"please relay " + b"ab" * 32 + b"\n")
            await wait_for(lambda: server.stats.waiting_sides == 1)
            page = await scrape(port(server))
            assert page.value(f"{P}_waiting_sides") == 1
            await connect(server)
            refused = await connect(server)
            assert await receive_all(refused) == b""
            page = await scrape(port(server))
    assert page.value(f"{P}_outcomes_total", mood="errory") == 1
    assert page.value(f"{P}_connections_refused_total", reason="max_connections_per_ip") == 1
    assert page.value(f"{P}_max_connections_per_ip") == 2


async def test_readyz_follows_the_database(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url, metrics_port=free_port()) as server:
            assert await http_get(port(server), "/healthz") == (200, b"ok\n")
            await server.recorder.ready.wait()
            assert await http_get(port(server), "/readyz") == (200, b"ready\n")
            params = conninfo_to_dict(database_url)
            name = params.pop("dbname")
            with psycopg.connect(make_conninfo(**params, dbname="postgres"),
                                 autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            assert (await http_get(port(server), "/readyz"))[0] == 503
            page = await scrape(port(server))
            assert page.value(f"{P}_database_errors_total") >= 1


@pytest.mark.skipif(promtool() is None, reason="promtool (Debian prometheus) is not installed")
async def test_every_metric_passes_promtool_check_metrics(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url, metrics_port=free_port()) as server:
            a, b = await pair_tcp(server)
            await a.aclose()
            await b.aclose()
            await wait_moods(server, 1)
            page = await scrape(port(server))
    result = check_metrics(page.text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result
