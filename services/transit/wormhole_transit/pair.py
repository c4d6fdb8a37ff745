"""A pair's life after pairing: `ok` to both sides, relaying, then its end and the close."""

from __future__ import annotations

import time

import trio

from wormhole_transit.core.handshake import OK
from wormhole_transit.ledger import Connection, Ledger
from wormhole_transit.relay import Endpoint, Lost, StreamEndpoint, close_streams, relay


async def run_pair(book: Ledger, first: Connection, second: Connection, *,
                   use_splice: bool) -> None:
    """`first` waited, `second` (the calling task) just arrived: `ok` to both, then relay
    until one leaves; then end the pair in the ledger and close both."""
    if first.released is not None:
        await first.released.wait()  # a WebSocket waiter's task let go of its socket
    assert first.endpoint is not None and second.endpoint is not None
    a, b = first.endpoint, second.endpoint
    pair = book.pair_started(first, second, time.time())
    stats = pair.counts
    try:
        await b.send(OK)
        await a.send(OK)
        for data, to in ((first.pending, b), (second.pending, a)):
            if data:
                stats.total_bytes += len(data)
                await to.send(data)
        await relay(a, b, stats, use_splice=use_splice)
    except Lost:
        pass
    finally:
        book.pair_ended(pair, time.time())
        await _close_both(a, b)
        if first.pair_done is not None:
            first.pair_done.set()  # its task closes it
        else:
            book.close(first, time.time())  # it was parked: it has no task


async def _close_both(a: Endpoint, b: Endpoint) -> None:
    """Both at once, so one slow peer does not hold up the other's close."""
    if isinstance(a, StreamEndpoint) and isinstance(b, StreamEndpoint):
        await close_streams([a, b])  # FIN to both first: no task needed
        return
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as closing:
            closing.start_soon(a.close)
            closing.start_soon(b.close)
