"""The frames waiting for one client, and the writer that sends them.

Frames are encoded and queued without waiting (`queue`): a client that lets `OUTBOUND_QUEUE`
of them or `OUTBOUND_BYTES` pile up is too slow, and `overflowed` says so to the reader (a
client that sends 1 MiB pings and reads nothing is dropped after a few, not after 4 GB).
Frames of the command being executed are held (`hold`/`release`) so an ack never leaves
before its command is done. A replay instead waits for room and for the writer (`written`),
so it holds one page at a time; it gives up only when the client takes nothing for
`stall_seconds` (`read_clock`), however long a large replay takes in all.

Frames are written by whoever queues them, at once, as far as the socket takes them without
waiting (`WebSocket.try_send`: no task switch, lock or scheduler pass per burst). Only what
the socket does not take goes to a writer task, started (in the connections' shared nursery,
`ClientHandler.run`) then and ending when the queue is empty; so an idle connection
holds no task, nursery or timer for its writes (memory per idle WebSocket is what a server
of many waiting clients runs out of first).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable

import trio
from wormhole_common.wsconnection import Closed, WebSocket, encode_texts

from wormhole_mailbox.core.actions import Frame
from wormhole_mailbox.core.encoding import encode_unstamped, stamp
from wormhole_mailbox.core.read_clock import DEFAULT_STALL_SECONDS, ReadClock

OUTBOUND_QUEUE = 4096  # frames waiting for one slow client before it is dropped
OUTBOUND_BYTES = 8 << 20  # ...or this much text: a full mailbox (4 MiB of bodies) and more
WRITE_BATCH = 64  # frames stamped with one clock reading...
WRITE_BYTES = 64 << 10  # ...and sent in writes of about this much (a bigger frame alone)
TCP_INFO_ACKED = slice(120, 128)  # Linux `struct tcp_info`: tcpi_bytes_acked (since 4.1)


def acked_bytes(ws: WebSocket) -> int | None:
    """How many bytes the client's TCP has acknowledged, if the system says (Linux): it
    moves on while the client reads a frame whose write has not finished."""
    stream = ws.stream
    option = getattr(socket, "TCP_INFO", None)
    if option is None or not isinstance(stream, trio.SocketStream):
        return None
    try:
        info = stream.getsockopt(socket.IPPROTO_TCP, option, TCP_INFO_ACKED.stop)
    except OSError:  # closed meanwhile
        return None
    if len(info) < TCP_INFO_ACKED.stop:
        return None
    return int.from_bytes(info[TCP_INFO_ACKED], sys.byteorder)


class Outbound:
    def __init__(self, ws: WebSocket, nursery: trio.Nursery, *,
                 stall_seconds: float = DEFAULT_STALL_SECONDS,
                 acked: Callable[[WebSocket], int | None] = acked_bytes) -> None:
        self.ws = ws
        self.clock = ReadClock(stall_seconds)  # runs while the writer has frames to write
        self._acked = acked
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
        then; False if the client cannot be written to (`drained` is set), or has taken
        nothing for `stall_seconds`."""
        for frame in frames:
            while len(self._items) >= OUTBOUND_QUEUE and not self._gone:
                self._kick()
                self._room = room = trio.Event()
                if not await self._reading_until(room):
                    return False
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
        return await self._reading_until(marker) and not self._gone

    async def _reading_until(self, event: trio.Event) -> bool:
        """Wait for `event` (the writer sets it) while the client keeps reading: False once
        it has taken nothing for `stall_seconds`."""
        while not event.is_set():
            with trio.move_on_at(self.clock.deadline()):
                await event.wait()
            if not event.is_set():
                now = trio.current_time()
                self.clock.acked(self._acked(self.ws), now)
                if self.clock.stalled(now):
                    return False
        return True

    def _kick(self) -> None:
        if not self._writing and not self._write_now():
            self._writing = True
            self.clock.waiting(trio.current_time(), self._acked(self.ws))
            self.nursery.start_soon(self._write)

    def _write_now(self) -> bool:
        """Write the queue as far as the socket takes it without waiting, `WRITE_BYTES` at a
        time: True if all of it went out; otherwise the WebSocket keeps the rest of that
        write for the writer task's `flush`, and the queue the frames after it."""
        if any(isinstance(item, trio.Event) for item in self._items):
            return False  # a replay's markers: the writer sets them in order
        texts = [item for item in self._items if isinstance(item, str)]  # all of them
        now = time.time()
        start = 0
        while start < len(texts):
            end, size = start, 0
            while end < len(texts) and size < WRITE_BYTES:
                size += len(texts[end])
                end += 1
            self.queued_bytes -= size
            if not self.ws.try_send(encode_texts([stamp(t, now) for t in texts[start:end]])):
                del self._items[:end]
                return False
            start = end
        self._items.clear()
        return True

    async def _write(self) -> None:
        """Stamp each batch with `server_tx` and send it in writes of about `WRITE_BYTES`,
        until the queue is empty; a marker is set once the frames before it are written."""
        try:
            await self.ws.flush()  # what `_write_now` could not write, first
            self.clock.took(trio.current_time())
            while self._items:
                items = self._items[:WRITE_BATCH]
                del self._items[:WRITE_BATCH]
                if self._room is not None:
                    self._room.set()
                now = time.time()
                texts: list[str] = []
                size = 0
                for item in items:
                    if isinstance(item, trio.Event):
                        if texts:
                            await self._send(texts)
                            texts, size = [], 0
                        item.set()
                        continue
                    self.queued_bytes -= len(item)
                    texts.append(stamp(item, now))
                    size += len(item)
                    if size >= WRITE_BYTES:
                        await self._send(texts)
                        texts, size = [], 0
                if texts:
                    await self._send(texts)
        except Closed:
            self._gone = True
        finally:
            self._writing = False
            self.clock.idle()
        if self._gone or self._closing:
            self._finish()

    async def _send(self, texts: list[str]) -> None:
        """One write of whole frames (a pong or a close may come between two writes): when
        it is done, the client has taken it."""
        await self.ws.send_texts(texts)
        self.clock.took(trio.current_time())

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
