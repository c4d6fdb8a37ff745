"""The waiting room over socketpairs: readiness and the lonely timer, without sleeps."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
from wormhole_transit.waiting import WaitingRoom

TIMEOUT = 60.0


class Seen:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, socket.socket]] = []
        self.changed = trio.Event()
        self.sockets: list[socket.socket] = []  # closed when the room is

    def readable(self, conn: str, sock: socket.socket) -> None:
        self.events.append(("readable", conn, sock))
        self.changed.set()

    def timeout(self, conn: str, sock: socket.socket) -> None:
        self.events.append(("timeout", conn, sock))
        self.changed.set()

    async def next(self) -> tuple[str, str]:
        while not self.events:
            self.changed = trio.Event()
            await self.changed.wait()
        kind, conn, _sock = self.events.pop(0)
        return kind, conn


@asynccontextmanager
async def room() -> AsyncIterator[tuple[WaitingRoom[str], Seen]]:
    seen = Seen()
    waiting: WaitingRoom[str] = WaitingRoom(TIMEOUT, on_readable=seen.readable,
                                            on_timeout=seen.timeout)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiting.watch)
        try:
            yield waiting, seen
        finally:
            nursery.cancel_scope.cancel()
    waiting.close()
    for sock in seen.sockets:
        sock.close()


def parked_pair(waiting: WaitingRoom[str], seen: Seen, name: str) -> socket.socket:
    """Park one end of a socketpair as `name`; returns the client's end."""
    ours, client = socket.socketpair()
    seen.sockets += [ours, client]
    ours.setblocking(False)
    waiting.park(name, ours)
    return client


async def test_bytes_from_the_client_are_reported_not_consumed() -> None:
    with trio.fail_after(5):
        async with room() as (waiting, seen):
            client = parked_pair(waiting, seen, "a")
            client.send(b"too soon")
            assert await seen.next() == ("readable", "a")
            assert waiting.unpark("a") is None  # reported means no longer parked


async def test_a_client_that_leaves_is_reported() -> None:
    with trio.fail_after(5):
        async with room() as (waiting, seen):
            client = parked_pair(waiting, seen, "a")
            client.close()
            assert await seen.next() == ("readable", "a")


async def test_an_unparked_connection_is_no_longer_watched() -> None:
    with trio.fail_after(5):
        async with room() as (waiting, seen):
            client = parked_pair(waiting, seen, "a")
            other = parked_pair(waiting, seen, "b")
            ours = waiting.unpark("a")
            assert ours is not None
            assert waiting.unpark("a") is None
            client.send(b"for the partner")
            other.send(b"x")
            assert await seen.next() == ("readable", "b")
            await trio.testing.wait_all_tasks_blocked()
            assert seen.events == []
            assert ours.recv(100) == b"for the partner"


async def test_the_lonely_timer_fires_in_parking_order(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with room() as (waiting, seen):
        parked_pair(waiting, seen, "a")
        mock_clock.jump(10)
        parked_pair(waiting, seen, "b")
        mock_clock.jump(TIMEOUT - 10 - 1)
        await trio.testing.wait_all_tasks_blocked()
        assert seen.events == []
        mock_clock.jump(2)
        assert await seen.next() == ("timeout", "a")
        await trio.testing.wait_all_tasks_blocked()
        assert seen.events == []
        mock_clock.jump(10)
        assert await seen.next() == ("timeout", "b")
        assert waiting.unpark_all() == []


async def test_unpark_all_at_shutdown() -> None:
    async with room() as (waiting, seen):
        for name in "abc":
            parked_pair(waiting, seen, name)
        assert sorted(name for name, _sock in waiting.unpark_all()) == ["a", "b", "c"]
        assert waiting.unpark_all() == []
