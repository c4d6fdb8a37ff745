"""The frames waiting for one client, and the writer that sends them.

Frames are encoded and queued without waiting (`queue`): a client that lets `OUTBOUND_QUEUE`
of them or `OUTBOUND_BYTES` pile up is too slow, and `overflowed` says so to the reader (a
client that sends 1 MiB pings and reads nothing is dropped after a few, not after 4 GB).
Frames of the command being executed are held (`hold`/`release`) so an ack never leaves
before its command is done. A replay instead waits for room and for the writer (`written`),
so it holds one page at a time.
"""

from __future__ import annotations

import contextlib
import time

import trio
from wormhole_common.channels import receive_batch
from wormhole_common.wsconnection import Closed, WebSocket

from wormhole_mailbox.actions import Frame
from wormhole_mailbox.validation import encode_unstamped, stamp

OUTBOUND_QUEUE = 4096  # frames waiting for one slow client before it is dropped
OUTBOUND_BYTES = 8 << 20  # ...or this much text: a full mailbox (4 MiB of bodies) and more
WRITE_BATCH = 64  # frames stamped with one clock reading


class Outbound:
    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        # Frames, and markers the writer sets once everything before them is written.
        self._send, self._receive = trio.open_memory_channel[str | trio.Event](OUTBOUND_QUEUE)
        self.queued_bytes = 0  # characters of the frames in the channel (ASCII: bytes)
        self.overflowed = False
        self.drained = trio.Event()  # the writer has finished
        self._held: list[Frame] | None = None  # frames of the command being executed

    def queue(self, frame: Frame) -> None:
        if self._held is not None:
            self._held.append(frame)
            return
        text = encode_unstamped(frame)
        if self.queued_bytes + len(text) > OUTBOUND_BYTES and self.queued_bytes:
            self.overflowed = True
            return
        try:
            self._send.send_nowait(text)
        except trio.WouldBlock:
            self.overflowed = True
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # closing: nothing more goes out
        else:
            self.queued_bytes += len(text)

    def hold(self) -> None:
        self._held = []

    def release(self) -> None:
        held, self._held = self._held or [], None
        for frame in held:
            self.queue(frame)

    def close(self) -> None:
        """Nothing more is queued: the writer ends once it has sent what is."""
        self._send.close()

    async def written(self, frames: list[Frame]) -> bool:
        """Queue `frames`, waiting for room, and wait until the writer has sent them: True
        then, False if the writer is gone. (The caller bounds the wait.)"""
        marker = trio.Event()
        try:
            for frame in frames:
                text = encode_unstamped(frame)
                await self._send.send(text)
                self.queued_bytes += len(text)
            await self._send.send(marker)
        except trio.BrokenResourceError:
            return False
        await marker.wait()
        return not self.drained.is_set()

    async def write(self) -> None:
        """The writer: stamps each batch with `server_tx` and sends it in one write, until
        closed. A marker is set once the frames before it are written."""
        try:
            while True:
                items = await receive_batch(self._receive, WRITE_BATCH)
                now = time.time()
                texts: list[str] = []
                for item in items:
                    if isinstance(item, trio.Event):
                        if texts:
                            await self.ws.send_texts(texts)
                            texts = []
                        item.set()
                    else:
                        self.queued_bytes -= len(item)
                        texts.append(stamp(item, now))
                if texts:
                    await self.ws.send_texts(texts)
        except (trio.EndOfChannel, Closed):
            pass
        finally:
            self.drained.set()
            self._stop()

    def _stop(self) -> None:
        """The writer is gone: wake whoever waits on a marker, and fail later sends."""
        with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
            while True:
                item = self._receive.receive_nowait()
                if isinstance(item, trio.Event):
                    item.set()
        self._receive.close()
