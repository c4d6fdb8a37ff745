"""The writer of one client's frames over an in-memory stream: a replay's wait for it ends
only when the client takes nothing for the stall time. The count of bytes the client's TCP
acknowledged (Linux `TCP_INFO` on a real socket) is a function the test advances."""

from __future__ import annotations

import trio
import trio.testing
from wormhole_common.wsconnection import WebSocket
from wormhole_mailbox.outbound import Outbound

FRAME = {"type": "message", "body": "x" * 100_000}  # written in one write


async def write_page(outbound: Outbound, results: list[bool],
                     done: trio.Event | None = None) -> None:
    results.append(await outbound.written([FRAME]))
    if done is not None:
        done.set()


async def read_until(stream: trio.abc.ReceiveStream, done: trio.Event) -> None:
    """Read what the server writes until `done`."""
    async with trio.open_nursery() as reading:
        async def drain() -> None:
            while await stream.receive_some(1 << 16):
                pass
        reading.start_soon(drain)
        await done.wait()
        reading.cancel_scope.cancel()


async def test_a_write_the_client_is_acknowledging_is_waited_for_then_a_silent_one_is_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.lockstep_stream_pair()  # writes wait for the client's reads
    acked = 0
    results: list[bool] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            outbound = Outbound(WebSocket(server, 1 << 20), nursery, stall_seconds=3,
                                acked=lambda ws: acked)
            done = trio.Event()
            nursery.start_soon(write_page, outbound, results, done)
            for _ in range(10):  # 20 s: the write cannot finish, but the client's TCP says
                await trio.sleep(2)  # it is reading
                acked += 1000
            assert results == []
            await read_until(client, done)
            assert results == [True]
            nursery.start_soon(write_page, outbound, results)  # nothing read nor acknowledged
            await trio.sleep(2.9)
            assert results == [True]
            await trio.sleep(0.2)
            assert results == [True, False]
            assert not outbound.drained.is_set()  # too slow, not gone
            nursery.cancel_scope.cancel()


async def test_without_a_count_of_acknowledged_bytes_a_write_must_finish_in_the_stall_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The default count (`acked_bytes`) has none for a stream that is not a TCP socket."""
    client, server = trio.testing.lockstep_stream_pair()
    results: list[bool] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            outbound = Outbound(WebSocket(server, 1 << 20), nursery, stall_seconds=3)
            done = trio.Event()
            nursery.start_soon(write_page, outbound, results, done)
            await trio.sleep(2.9)
            assert results == []
            await read_until(client, done)  # read in time: the clock starts again
            assert results == [True]
            nursery.start_soon(write_page, outbound, results)
            await trio.sleep(3.1)
            assert results == [True, False]
            nursery.cancel_scope.cancel()
