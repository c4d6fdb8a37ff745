"""The ledger, the one owner of a connection's end: every way a connection ends gives one
outcome, at most one usage record (a pair's is its first side's) and one admission release.

Each case makes the calls the shell makes for that way of ending, with explicit times; the
connections are real loopback sockets only because admission reads the peer's address.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from wormhole_transit.admission import Admission
from wormhole_transit.core.handshake import Handshake
from wormhole_transit.core.rendezvous import Cause
from wormhole_transit.core.stats import TransitStats
from wormhole_transit.core.usage import Mood, Usage
from wormhole_transit.ledger import Connection, Ledger
from wormhole_transit.metrics import TransitMetrics

P = "wormhole_transit"
TOKEN = b"ab" * 32


def hs(side: bytes | None = None) -> Handshake:
    return Handshake(TOKEN, side)


class Books:
    def __init__(self) -> None:
        self.stats = TransitStats()
        self.admission = Admission(self.stats, max_connections=100, max_connections_per_ip=100)
        self.metrics = TransitMetrics(self.stats, max_connections=100,
                                      max_connections_per_ip=100, usage_dropped=lambda: 0)
        self.records: list[Usage] = []
        self.ledger = Ledger(self.admission, self.stats, self.metrics, self.records.append)
        self.streams: list[trio.SocketStream] = []  # accepted, closed at the end
        self.admitted = 0

    def admit(self, now: float = 10.0) -> Connection:
        conn = self.ledger.admit(self.streams[self.admitted], "tcp", now)
        self.admitted += 1
        assert conn is not None
        return conn

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(f"{P}_{name}", labels)
        assert value is not None
        return value

    def outcomes(self) -> Counter[str]:
        counts = {m.value: int(self.metric("outcomes_total", mood=m.value))
                  for m in Mood if m is not Mood.JILTED}
        return Counter({mood: n for mood, n in counts.items() if n})

    def assert_all_released(self, admitted: int) -> None:
        assert self.stats.connections_open == 0
        assert not self.admission.per_ip
        assert not self.ledger.connections
        assert self.ledger.all_closed.is_set()
        assert self.metric("connections_total", kind="tcp") == admitted
        assert (self.stats.waiting_sides, self.stats.waiting_tokens) == (0, 0)


@asynccontextmanager
async def books(connections: int) -> AsyncIterator[Books]:
    """A ledger and `connections` accepted loopback sockets to admit."""
    b = Books()
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    clients = []
    try:
        for _ in range(connections):
            clients.append(await trio.open_tcp_stream("127.0.0.1", port))
            b.streams.append(await listener.accept())
        yield b
    finally:
        for stream in [*clients, *b.streams, listener]:
            await trio.aclose_forcefully(stream)


# Each way of ending: the shell's calls for it, given the books; returns what was admitted.
Way = Callable[[Books], list[Connection]]


def handshake_timeout(b: Books) -> list[Connection]:
    c = b.admit()
    b.ledger.end(c, Cause.TIMEOUT, 40.0)
    b.ledger.close(c, 40.5)  # after the farewell
    return [c]


def bad_handshake(b: Books) -> list[Connection]:
    c = b.admit()
    b.ledger.end(c, Cause.BAD_LINE, 11.0)
    b.ledger.close(c, 11.5)
    return [c]


def overlong_line(b: Books) -> list[Connection]:
    c = b.admit()
    b.ledger.end(c, Cause.OVERLONG_LINE, 11.0)
    b.ledger.close(c, 11.0)
    return [c]


def left_during_handshake(b: Books) -> list[Connection]:
    c = b.admit()
    b.ledger.close(c, 11.0)  # nothing decided its end: lost
    return [c]


def lonely_timeout(b: Books) -> list[Connection]:
    c = b.admit()
    assert b.ledger.arrive(c, hs(), 11.0, early=False) is None
    assert b.stats.waiting_sides == 1
    b.ledger.end(c, Cause.TIMEOUT, 70.0)  # the waiting room's timer
    b.ledger.close(c, 70.5)  # after the farewell task
    return [c]


def parked_then_lost(b: Books) -> list[Connection]:
    c = b.admit()
    b.ledger.arrive(c, hs(), 11.0, early=False)
    b.ledger.close(c, 30.0)  # readable with nothing to read: the client left
    return [c]


def impatient_with_the_line(b: Books) -> list[Connection]:
    c = b.admit()
    assert b.ledger.arrive(c, hs(), 11.0, early=True) is None
    b.ledger.close(c, 11.5)
    return [c]


def impatient_while_waiting(b: Books) -> list[Connection]:
    c = b.admit()
    b.ledger.arrive(c, hs(), 11.0, early=False)
    b.ledger.end(c, Cause.EARLY_DATA, 12.0)
    b.ledger.close(c, 12.5)
    return [c]


def _relay(b: Books, first: Connection, second: Connection, now: float) -> None:
    pair = b.ledger.pair_started(first, second, now)
    pair.counts.total_bytes = 1234
    b.ledger.pair_ended(pair, now + 5)
    b.ledger.close(first, now + 6)  # the partner's task closes a parked first side
    b.ledger.close(second, now + 6)


def happy_pair_and_jilted(b: Books) -> list[Connection]:
    first, second = b.admit(10.0), b.admit(12.0)
    b.ledger.arrive(first, hs(b"1" * 16), 10.5, early=False)
    pair = b.ledger.arrive(second, hs(b"2" * 16), 12.5, early=False)
    assert pair is not None and (pair.first, pair.second) == (first, second)
    _relay(b, first, second, 13.0)
    return [first, second]


def redundant(b: Books) -> list[Connection]:
    one, two, third = b.admit(), b.admit(), b.admit(12.0)
    b.ledger.arrive(one, hs(b"1" * 16), 11.0, early=False)
    b.ledger.arrive(two, hs(b"1" * 16), 11.0, early=False)
    pair = b.ledger.arrive(third, hs(b"3" * 16), 12.5, early=False)
    assert pair is not None
    [(dropped, _ended)] = pair.redundant
    b.ledger.close(dropped, 12.6)  # its farewell task, or its own task, closes it
    _relay(b, pair.first, third, 13.0)
    return [one, two, third]


def shutdown(b: Books) -> list[Connection]:
    parked, handshaking = b.admit(), b.admit()
    b.ledger.arrive(parked, hs(), 11.0, early=False)
    b.ledger.close(parked, 20.0)  # closed at once, without a task
    b.ledger.close(handshaking, 20.1)  # its task was cancelled
    return [parked, handshaking]


WAYS: list[tuple[Way, list[Mood], dict[str, int]]] = [
    (handshake_timeout, [Mood.EMPTY], {"handshake": 1}),
    (bad_handshake, [Mood.ERRORY], {}),
    (overlong_line, [Mood.EMPTY], {}),
    (left_during_handshake, [Mood.EMPTY], {}),
    (lonely_timeout, [Mood.LONELY], {"lonely": 1}),
    (parked_then_lost, [Mood.LONELY], {}),
    (impatient_with_the_line, [Mood.IMPATIENT], {}),
    (impatient_while_waiting, [Mood.IMPATIENT], {}),
    (happy_pair_and_jilted, [Mood.HAPPY], {}),
    (redundant, [Mood.REDUNDANT, Mood.HAPPY], {}),
    (shutdown, [Mood.LONELY, Mood.EMPTY], {}),
]


@pytest.mark.parametrize(("way", "moods", "timeouts"), WAYS, ids=[w[0].__name__ for w in WAYS])
async def test_every_way_of_ending_books_once(way: Way, moods: list[Mood],
                                              timeouts: dict[str, int]) -> None:
    async with books(3) as b:
        conns = way(b)
        assert [r.mood for r in b.records] == moods
        assert b.stats.moods == Counter(moods)
        assert b.outcomes() == Counter(m.value for m in moods)
        assert b.stats.timeouts == Counter(timeouts)
        b.assert_all_released(len(conns))
        for conn in conns:  # whatever comes late changes nothing
            b.ledger.end(conn, Cause.LOST, 99.0)
            b.ledger.close(conn, 99.0)
        assert len(b.records) == len(moods)
        b.assert_all_released(len(conns))


async def test_a_pair_records_its_bytes_waiting_and_duration_once() -> None:
    async with books(2) as b:
        happy_pair_and_jilted(b)
        [usage] = b.records
        assert usage == Usage(10.0, 8.0, 2.0, 1234, Mood.HAPPY)  # started 10, ended 18
        assert b.stats.finished_bytes == 1234
        assert not b.stats.pairs
        assert b.metric("waiting_seconds_count") == 1
        assert b.metric("waiting_seconds_sum") == 2.0
        assert b.metric("pair_duration_seconds_count") == 1
        assert b.metric("pair_duration_seconds_sum") == 5.0


async def test_a_relaying_pair_is_live_until_it_ends() -> None:
    async with books(2) as b:
        first, second = b.admit(), b.admit()
        b.ledger.arrive(first, hs(), 10.0, early=False)
        b.ledger.arrive(second, hs(), 11.0, early=False)
        pair = b.ledger.pair_started(first, second, 11.0)
        pair.counts.total_bytes = 7
        assert (b.stats.live_bytes, len(b.stats.pairs), b.stats.connections_open) == (7, 1, 2)
        assert b.records == []
        b.ledger.pair_ended(pair, 13.0)
        assert [(r.mood, r.total_bytes) for r in b.records] == [(Mood.HAPPY, 7)]
        assert (b.stats.live_bytes, b.stats.finished_bytes, b.stats.connections_open) == (0, 7, 2)
        b.ledger.close(first, 13.0)
        b.ledger.close(second, 13.0)
        b.assert_all_released(2)


async def test_all_closed_is_cleared_by_the_next_admission() -> None:
    async with books(2) as b:
        c = b.admit()
        assert not b.ledger.all_closed.is_set()
        b.ledger.close(c, 11.0)
        assert b.ledger.all_closed.is_set()
        b.admit()
        assert not b.ledger.all_closed.is_set()
