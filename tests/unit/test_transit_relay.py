"""`relay` and `StreamEndpoint` over trio.testing streams: no sockets, no sleeps."""

from __future__ import annotations

import trio
import trio.testing
from wormhole_transit.core.stats import PairStats
from wormhole_transit.relay import StreamEndpoint, relay


class Relayed:
    """Two clients, each connected to one half of a running relay."""

    def __init__(self, lockstep: bool = False) -> None:
        pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        self.a, relay_a = pair()
        self.b, relay_b = pair()
        self.ends = (StreamEndpoint(relay_a), StreamEndpoint(relay_b))
        self.stats = PairStats()
        self.done = False

    async def run(self) -> None:
        await relay(*self.ends, self.stats, use_splice=False)
        self.done = True


async def test_bytes_flow_both_ways_and_are_counted() -> None:
    r = Relayed()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(r.run)
        await r.a.send_all(b"from a")
        await r.b.send_all(b"from b, longer")
        await trio.testing.wait_all_tasks_blocked()
        assert await r.b.receive_some() == b"from a"
        assert await r.a.receive_some() == b"from b, longer"
        assert r.stats.total_bytes == 6 + 14
        assert not r.done
        nursery.cancel_scope.cancel()


async def test_a_source_that_ends_stops_both_directions_after_delivering() -> None:
    r = Relayed()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(r.run)
        await r.a.send_all(b"last words")
        await r.a.send_eof()
        await trio.testing.wait_all_tasks_blocked()
        # no half-close: the relay stops reading b as well (docs/transit-protocol.md §5.3)
        assert r.done
    assert await r.b.receive_some() == b"last words"


async def test_a_broken_destination_ends_the_relay() -> None:
    r = Relayed()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(r.run)
        await r.b.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert r.done


async def test_a_stalled_reader_stops_the_relay_reading_its_sender() -> None:
    r = Relayed(lockstep=True)
    sent: list[int] = []

    async def sender() -> None:
        for size in (10, 20):
            await r.a.send_all(b"x" * size)
            sent.append(size)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(r.run)
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        # the first chunk is held by the relay, the second is not taken from the sender
        assert (sent, r.stats.buffered, r.stats.total_bytes) == ([10], 10, 10)
        assert await r.b.receive_some() == b"x" * 10
        await trio.testing.wait_all_tasks_blocked()
        assert (sent, r.stats.buffered) == ([10, 20], 20)
        assert await r.b.receive_some() == b"x" * 20
        await trio.testing.wait_all_tasks_blocked()
        assert r.stats.buffered == 0
        nursery.cancel_scope.cancel()


async def test_close_flushes_then_waits_for_the_peer_to_finish() -> None:
    client, server_side = trio.testing.memory_stream_pair()
    endpoint = StreamEndpoint(server_side)
    closed = trio.Event()

    async def close() -> None:
        await endpoint.send(b"bye")
        await endpoint.close()
        closed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close)
        await trio.testing.wait_all_tasks_blocked()
        assert await client.receive_some() == b"bye"
        assert await client.receive_some() == b""  # EOF
        assert not closed.is_set()  # still reading until the peer's end: no RST
        await client.send_all(b"ignored")
        await client.send_eof()
        await trio.testing.wait_all_tasks_blocked()
        assert closed.is_set()
