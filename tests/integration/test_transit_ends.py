"""Every way a connection ends, through the real relay and PostgreSQL: one usage row per
connection (one per pair), one outcome count per row, and every admission slot back.

Clients close as soon as they have their answer, so the relay's graceful closes do not linger.
"""

from __future__ import annotations

from collections import Counter

import pytest
import trio
from trio_websocket import ConnectionClosed
from wormhole_transit.server import TransitServer

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
    ws_connect,
)

LIMIT = 20


def admitted(server: TransitServer, kind: str) -> float | None:
    return server.metrics.registry.get_sample_value(
        "wormhole_transit_connections_total", {"kind": kind})


async def ends_before_a_partner(server: TransitServer) -> None:
    """Bad line, silence, a parked client that leaves, a parked client that talks."""
    bad = await connect(server)
    await bad.send_all(b"please relay nonsense\n")
    assert await receive_all(bad) == b"bad handshake\n"
    await bad.aclose()
    silent = await connect(server)
    await silent.aclose()
    await wait_moods(server, 2)
    lost = await connect(server)
    await lost.send_all(line(token(), side()))
    await wait_for(lambda: server.stats.waiting_sides == 1)
    await lost.aclose()
    await wait_moods(server, 3)
    eager = await connect(server)
    await eager.send_all(line(token(), side()))
    await wait_for(lambda: server.stats.waiting_sides == 1)
    await eager.send_all(b"early")
    assert await receive_all(eager) == b"impatient\n"
    await eager.aclose()
    await wait_moods(server, 4)


async def ends_with_a_partner(server: TransitServer) -> None:
    """A redundant waiter beside a pair, then a plain pair (its second side jilted)."""
    tok, same = token(), side()
    chosen, duplicate = await connect(server), await connect(server)
    await chosen.send_all(line(tok, same))
    await wait_for(lambda: server.stats.waiting_sides == 1)
    await duplicate.send_all(line(tok, same))
    await wait_for(lambda: server.stats.waiting_sides == 2)
    partner = await connect(server)
    await partner.send_all(line(tok, side()))
    assert await receive_exactly(chosen, 3) == b"ok\n"
    assert await receive_all(duplicate) == b""
    await duplicate.aclose()
    await chosen.aclose()
    assert await receive_exactly(partner, 3) == b"ok\n"
    assert await receive_all(partner) == b""
    await partner.aclose()
    a, b = await pair_tcp(server)
    await a.send_all(b"x")
    assert await receive_exactly(b, 1) == b"x"
    await a.aclose()
    assert await receive_all(b) == b""
    await b.aclose()
    await wait_moods(server, 7)


async def websocket_waiter_leaves(server: TransitServer) -> None:
    async with ws_connect(server) as ws:
        await ws.send_message(line(token(), side()))
        await wait_for(lambda: server.stats.waiting_sides == 1)
    await wait_moods(server, 8)


async def shutdown_with_unpaired(server: TransitServer) -> None:
    """A parked TCP waiter, a WebSocket waiter and a silent handshake when the relay stops."""
    parked = await connect(server)
    await parked.send_all(line(token(), side()))
    await wait_for(lambda: server.stats.waiting_sides == 1)
    async with ws_connect(server) as ws:
        await ws.send_message(line(token(), side()))
        await wait_for(lambda: server.stats.waiting_sides == 2)
        quiet = await connect(server)
        await wait_for(lambda: server.stats.connections_open == 3)
        request_stop(server)
        assert await receive_all(parked) == b""
        assert await receive_all(quiet) == b""
        with pytest.raises(ConnectionClosed):
            await ws.get_message()


async def test_every_end_books_one_row_one_count_and_one_release(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url) as server:
            await ends_before_a_partner(server)
            await ends_with_a_partner(server)
            await websocket_waiter_leaves(server)
            await shutdown_with_unpaired(server)
    rows = [r[4] for r in await usage_rows(server, database_url)]
    assert Counter(rows) == Counter(
        errory=1, empty=2, lonely=4, impatient=1, redundant=1, happy=2)
    assert server.stats.moods == Counter(rows)
    assert (admitted(server, "tcp"), admitted(server, "websocket")) == (11, 2)
    assert server.stats.connections_open == 0
    assert not server.admission.per_ip
    assert not server.book.connections
    assert (server.stats.waiting_sides, server.stats.waiting_tokens) == (0, 0)
