"""The frames waiting for one client, and the writer that sends them.

Frames are encoded and queued without waiting (`queue`): a client that lets `OUTBOUND_QUEUE`
of them or `OUTBOUND_BYTES` pile up is too slow, and `overflowed` says so to the reader (a
client that sends 1 MiB pings and reads nothing is dropped after a few, not after 4 GB).
Frames of the command being executed are held (`hold`/`release`) so an ack never leaves
before its command is done. A replay instead waits for room and for the writer (`written`),
so it holds one page at a time.

Frames are written by whoever queues them, at once, as far as the socket takes them without
waiting (`WebSocket.try_send`: no task switch, lock or scheduler pass per burst). Only what
the socket does not take goes to a writer task, started (in the connections' shared nursery,
`ConnectionHandler.run`) then and ending when the queue is empty; so an idle connection
holds no task, nursery or timer for its writes (memory per idle WebSocket is what a server
of many waiting clients runs out of first).
"""

from __future__ import annotations

import time

import trio
from wormhole_common.wsconnection import Closed, WebSocket, encode_texts

from wormhole_mailbox.actions import Frame
from wormhole_mailbox.validation import encode_unstamped, stamp

OUTBOUND_QUEUE = 4096  # frames waiting for one slow client before it is dropped
OUTBOUND_BYTES = 8 << 20  # ...or this much text: a full mailbox (4 MiB of bodies) and more
WRITE_BATCH = 64  # frames stamped with one clock reading and sent in one write


class Outbound:
    def __init__(self, ws: WebSocket, nursery: trio.Nursery) -> None:
        self.ws = ws
        self.nursery = nursery  # where the writer runs (it ends with the connection's socket)
        # Frames (unstamped text), and markers the writer sets once everything before them
        # is written.
        self._items: list[str | trio.Event] = []
        self.queued_bytes = 0  # characters of the frames queued (ASCII: bytes)
        self.overflowed = False
        self.drained = trio.Event()  # the writer has finished for good (closed, or gone)
        self._held: list[Frame] | None = None  # frames of the command being executed
        self._writing = False
        self._closing = False  # nothing more is queued
        self._gone = False  # the client cannot be written to
        self._room: trio.Event | None = None  # for `written`, waiting for the queue to shrink

    def queue(self, frame: Frame) -> None:
        if self._held is not None:
            self._held.append(frame)
        elif self._append(frame):
            self._kick()

    def _append(self, frame: Frame) -> bool:
        if self._closing or self._gone:
            return False  # closing: nothing more goes out
        text = encode_unstamped(frame)
        if (self.queued_bytes + len(text) > OUTBOUND_BYTES and self.queued_bytes) or len(
                self._items) >= OUTBOUND_QUEUE:
            self.overflowed = True
            return False
        self._items.append(text)
        self.queued_bytes += len(text)
        return True

    def hold(self) -> None:
        self._held = []

    def release(self) -> None:
        """The held frames go out, together."""
        held, self._held = self._held or [], None
        appended = [self._append(frame) for frame in held]
        if any(appended):
            self._kick()

    def stop(self) -> None:
        """The connection is over: nothing more is queued or written (a writer still running
        ends when the socket closes under it)."""
        self._gone = True
        self._finish()

    def close(self) -> None:
        """Nothing more is queued: the writer ends once it has sent what is."""
        self._closing = True
        if not self._writing:
            self._finish()

    async def written(self, frames: list[Frame]) -> bool:
        """Queue `frames`, waiting for room, and wait until the writer has sent them: True
        then, False if the client cannot be written to. (The caller bounds the wait.)"""
        for frame in frames:
            while len(self._items) >= OUTBOUND_QUEUE and not self._gone:
                self._kick()
                self._room = trio.Event()
                await self._room.wait()
            if self._gone or self._closing:
                return False
            text = encode_unstamped(frame)
            self._items.append(text)
            self.queued_bytes += len(text)
        self._kick()  # the page in one write, as far as the socket takes it
        if self._gone or self._closing:
            return False
        marker = trio.Event()
        self._items.append(marker)
        self._kick()
        await marker.wait()
        return not self._gone

    def _kick(self) -> None:
        if not self._writing and not self._write_now():
            self._writing = True
            self.nursery.start_soon(self._write)

    def _write_now(self) -> bool:
        """Write the queue as far as the socket takes it without waiting: True if all of it
        went out; otherwise the WebSocket keeps the rest for the writer task's `flush`."""
        items = self._items
        if any(isinstance(item, trio.Event) for item in items):
            return False  # a replay's markers: the writer sets them in order
        now = time.time()
        data = encode_texts([stamp(item, now) for item in items if isinstance(item, str)])
        items.clear()
        self.queued_bytes = 0
        return self.ws.try_send(data)

    async def _write(self) -> None:
        """Stamp each batch with `server_tx` and send it in one write, until the queue is
        empty; a marker is set once the frames before it are written."""
        try:
            await self.ws.flush()  # what `_write_now` could not write, first
            while self._items:
                items = self._items[:WRITE_BATCH]
                del self._items[:WRITE_BATCH]
                if self._room is not None:
                    self._room.set()
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
        except Closed:
            self._gone = True
        finally:
            self._writing = False
        if self._gone or self._closing:
            self._finish()

    def _finish(self) -> None:
        """The writer is done for good: wake whoever waits on a marker or for room."""
        for item in self._items:
            if isinstance(item, trio.Event):
                item.set()
        self._items.clear()
        self.queued_bytes = 0
        if self._room is not None:
            self._room.set()
        self.drained.set()
