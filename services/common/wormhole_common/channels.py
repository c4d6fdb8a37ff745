"""Taking work off a trio memory channel in batches."""

from __future__ import annotations

from typing import TypeVar

import trio

T = TypeVar("T")


async def receive_batch(channel: trio.MemoryReceiveChannel[T], limit: int) -> list[T]:
    """Wait for one item, then take whatever else is already queued, up to `limit` in all.

    Writers that batch (group commit, usage rows, frames) pay their fixed cost once for
    everything that piled up while the previous batch ran. Raises `trio.EndOfChannel` only
    when the channel is closed and empty.
    """
    first = await channel.receive()
    return [first, *take_queued(channel, limit - 1)]


def take_queued(channel: trio.MemoryReceiveChannel[T], limit: int) -> list[T]:
    """What is queued already, up to `limit` items, without waiting."""
    batch: list[T] = []
    while len(batch) < limit:
        try:
            batch.append(channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return batch
