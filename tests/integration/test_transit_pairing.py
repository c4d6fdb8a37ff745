"""Every pairing rule and mood on real sockets, with usage rows in the real PostgreSQL."""

from __future__ import annotations

import socket
import struct

import trio

from tests.support.transit import (
    connect,
    line,
    pair_tcp,
    receive_all,
    receive_exactly,
    running_transit,
    side,
    token,
    usage_rows,
    wait_for,
    wait_moods,
)

LIMIT = 10


async def test_pair_relays_both_ways_and_records_happy(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url) as server:
            a, b = await pair_tcp(server)
            await a.send_all(b"hello from a")
            assert await receive_exactly(b, 12) == b"hello from a"
            await b.send_all(b"\n\x00please relay " + b"x" * 64 + b"\n")
            assert await receive_exactly(a, 80) == b"\n\x00please relay " + b"x" * 64 + b"\n"
            await a.aclose()
            assert await receive_all(b) == b""
            await wait_moods(server, 1)
            rows = await usage_rows(server, database_url)
    assert len(rows) == 1
    started, total_time, waiting_time, total_bytes, result = rows[0]
    assert result == "happy"
    assert total_bytes == 12 + 80
    assert 0 <= waiting_time <= total_time
    assert started > 0


async def test_legacy_pairs_with_sided_and_legacy(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url) as server:
            for first, second in [(None, side()), (side(), None), (None, None)]:
                tok = token()
                a = await connect(server)
                await a.send_all(line(tok, first))
                await wait_for(lambda: server.stats.waiting_sides == 1)
                b = await connect(server)
                await b.send_all(line(tok, second))
                assert await receive_exactly(a, 3) == b"ok\n"
                assert await receive_exactly(b, 3) == b"ok\n"
                await a.aclose()
                await b.aclose()
            await wait_moods(server, 3)
            assert [r[4] for r in await usage_rows(server, database_url)] == ["happy"] * 3


async def test_same_side_waits_third_pairs_with_one_other_is_redundant(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url) as server:
            tok, same = token(), side()
            first = await connect(server)
            second = await connect(server)
            await first.send_all(line(tok, same))
            await second.send_all(line(tok, same))
            await wait_for(lambda: server.stats.waiting_sides == 2)
            third = await connect(server)
            await third.send_all(line(tok, side()))
            assert await receive_exactly(third, 3) == b"ok\n"
            replies = [await receive_all_or_ok(s) for s in (first, second)]
            assert sorted(replies) == [b"", b"ok\n"]
            chosen = first if replies[0] == b"ok\n" else second
            await third.send_all(b"ping")
            assert await receive_exactly(chosen, 4) == b"ping"
            await wait_moods(server, 1)
            assert server.stats.moods["redundant"] == 1
            await chosen.aclose()
            await wait_moods(server, 2)
            moods = sorted(r[4] for r in await usage_rows(server, database_url))
    assert moods == ["happy", "redundant"]


async def receive_all_or_ok(stream: trio.SocketStream) -> bytes:
    """`ok\\n` for the chosen one (still open), b"" for the dropped one (EOF)."""
    return await receive_exactly(stream, 3)


async def test_third_party_starts_fresh_wait_and_pairs_with_a_fourth(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url) as server:
            tok = token()
            a = await connect(server)
            await a.send_all(line(tok, side()))
            await wait_for(lambda: server.stats.waiting_sides == 1)
            b = await connect(server)
            await b.send_all(line(tok, side()))
            assert await receive_exactly(a, 3) == b"ok\n"
            assert await receive_exactly(b, 3) == b"ok\n"
            c = await connect(server)
            await c.send_all(line(tok, side()))
            await wait_for(lambda: server.stats.waiting_sides == 1)
            await a.send_all(b"still paired")
            assert await receive_exactly(b, 12) == b"still paired"
            d = await connect(server)
            await d.send_all(line(tok, side()))
            assert await receive_exactly(c, 3) == b"ok\n"
            assert await receive_exactly(d, 3) == b"ok\n"
            await d.send_all(b"second pair")
            assert await receive_exactly(c, 11) == b"second pair"


async def test_departed_waiter_is_lonely_and_forgotten(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url) as server:
            tok = token()
            a = await connect(server)
            await a.send_all(line(tok, side()))
            await wait_for(lambda: server.stats.waiting_sides == 1)
            await a.aclose()
            await wait_moods(server, 1)
            assert server.stats.waiting_tokens == 0
            b = await connect(server)
            await b.send_all(line(tok, side()))
            await wait_for(lambda: server.stats.waiting_sides == 1)
            rows = await usage_rows(server, database_url)
    assert [(r[2], r[3], r[4]) for r in rows] == [(None, 0, "lonely")]


async def test_bad_handshake_gets_a_reply_and_errory(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url) as server:
            for bad in [b"garbage\n", b"please relay " + token() + b"\r\n", b"x" * 1024 + b"\n"]:
                s = await connect(server)
                await s.send_all(bad + b"ignored")
                assert await receive_all(s) == b"bad handshake\n"
            await wait_moods(server, 3)
            assert [r[4] for r in await usage_rows(server, database_url)] == ["errory"] * 3


async def test_overlong_and_silent_close_are_empty(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url) as server:
            s = await connect(server)
            await s.send_all(b"x" * 1025)
            assert await receive_all(s) == b""
            probe = await connect(server)
            await probe.aclose()
            partial = await connect(server)
            await partial.send_all(b"please relay ")
            await partial.aclose()
            await wait_moods(server, 3)
            assert [r[4] for r in await usage_rows(server, database_url)] == ["empty"] * 3


async def test_data_while_waiting_is_impatient(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url) as server:
            tok = token()
            same_segment = await connect(server)
            await same_segment.send_all(line(tok, side()) + b"too soon")
            assert await receive_all(same_segment) == b"impatient\n"
            later = await connect(server)
            await later.send_all(line(tok, side()))
            await wait_for(lambda: server.stats.waiting_sides == 1)
            await later.send_all(b"x")
            assert await receive_all(later) == b"impatient\n"
            assert server.stats.waiting_tokens == 0
            await wait_moods(server, 2)
            rows = await usage_rows(server, database_url)
    assert [(r[3], r[4]) for r in rows] == [(0, "impatient"), (0, "impatient")]


async def test_second_side_eager_bytes_reach_the_partner_after_ok(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url) as server:
            tok = token()
            a = await connect(server)
            await a.send_all(line(tok, side()))
            await wait_for(lambda: server.stats.waiting_sides == 1)
            b = await connect(server)
            await b.send_all(line(tok, side()) + b"eager bytes")
            assert await receive_exactly(a, 14) == b"ok\neager bytes"
            assert await receive_exactly(b, 3) == b"ok\n"
            await b.aclose()
            assert await receive_all(a) == b""
            await wait_moods(server, 1)
            assert [(r[3], r[4]) for r in await usage_rows(server, database_url)] == [
                (11, "happy")]


async def test_close_is_propagated_after_flushing_and_there_is_no_half_close() -> None:
    with trio.fail_after(LIMIT):
        async with running_transit() as server:
            a, b = await pair_tcp(server)
            payload = b"z" * 3_000_000

            async def send_then_half_close() -> None:
                await a.send_all(payload)
                await a.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_then_half_close)
                assert await receive_all(b) == payload
            # A only half-closed, but the relay treats that as a full close
            # (docs/transit-protocol.md §5.3).
            assert await receive_all(a) == b""


async def test_reset_side_partner_gets_data_then_eof() -> None:
    with trio.fail_after(LIMIT):
        async with running_transit() as server:
            a, b = await pair_tcp(server)
            await a.send_all(b"last words")
            assert await receive_exactly(b, 10) == b"last words"
            a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            a.socket.close()
            assert await receive_all(b) == b""


async def test_blurred_usage_rows(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(database_url, blur_usage_seconds=3600) as server:
            a, b = await pair_tcp(server)
            await a.send_all(b"x" * 12345)
            assert len(await receive_exactly(b, 12345)) == 12345
            await a.aclose()
            await wait_moods(server, 1)
            rows = await usage_rows(server, database_url)
    started, _total, _waiting, total_bytes, result = rows[0]
    assert (started % 3600, total_bytes, result) == (0, 20000, "happy")
