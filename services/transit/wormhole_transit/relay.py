"""Moving bytes between the two halves of a pair, with bounded buffers.

TCP-TCP pairs on Linux use splice(2) through a pipe once a direction carries bulk data: bytes
go socket -> pipe -> socket inside the kernel, so the relay never copies payload and at most
one pipe's worth (`PIPE_SIZE`) is held per direction. Every other combination (WebSocket
halves, or a kernel without splice) uses a copy loop holding at most one received chunk per
direction. Either way a stalled
reader stops the relay reading from the sender: that is the back-pressure.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from typing import Literal, Protocol

import trio
from wormhole_common.wsconnection import Closed, WebSocket

from wormhole_transit.core.stats import PairStats

CHUNK = 64 * 1024
PIPE_SIZE = 1 << 20  # /proc/sys/fs/pipe-max-size default; fewer syscalls per MiB
LINGER_SECONDS = 2.0  # how long a graceful close waits for the peer's FIN
HAS_SPLICE = hasattr(os, "splice") and hasattr(os, "SPLICE_F_NONBLOCK")
_SPLICE_FLAGS = (os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK) if HAS_SPLICE else 0
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_NO_SPLICE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


class Lost(Exception):
    """The peer went away abruptly (reset, broken pipe, protocol violation)."""


class Endpoint(Protocol):
    """One half of a pair, seen as a byte stream."""

    async def receive(self) -> bytes:
        """Up to CHUNK bytes; b"" at end of stream; raises `Lost`."""

    async def send(self, data: bytes) -> None:
        """All of `data`, waiting while the peer is slow; raises `Lost`."""

    async def close(self) -> None:
        """Flush, tell the peer we are done, release the connection; never raises."""


class StreamEndpoint:
    """A TCP connection, or any half-closeable trio stream (tests use memory streams)."""

    __slots__ = ("stream",)

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stream = stream

    async def receive(self) -> bytes:
        try:
            data = await self.stream.receive_some(CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise Lost(str(exc)) from exc
        return data if isinstance(data, bytes) else bytes(data)

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise Lost(str(exc)) from exc

    async def close(self) -> None:
        await close_streams([self])

    async def drain(self) -> None:
        """Read and drop until the peer's EOF (or an error)."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                 trio.BusyResourceError):
            while await self.stream.receive_some(CHUNK):
                pass


async def close_streams(endpoints: list[StreamEndpoint]) -> None:
    """Flush and FIN each one, then read until each peer's FIN within one linger period,
    then close: closing a socket with unread input sends RST, which can destroy data still
    on its way to the peer. Never raises; shielded from cancellation."""
    with trio.CancelScope(shield=True):
        for endpoint in endpoints:
            stream = endpoint.stream
            if isinstance(stream, trio.SocketStream):  # FIN at once: no need to yield
                with contextlib.suppress(OSError):
                    stream.socket.shutdown(socket.SHUT_WR)
                continue
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                     trio.BusyResourceError):
                await stream.send_eof()
        with trio.move_on_after(LINGER_SECONDS):
            for endpoint in endpoints:
                await endpoint.drain()
        for endpoint in endpoints:
            if isinstance(endpoint.stream, trio.SocketStream):
                endpoint.stream.socket.close()
            else:
                await trio.aclose_forcefully(endpoint.stream)


class WebSocketEndpoint:
    """Binary messages in, one message per chunk out; a text message is a protocol error."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def receive(self) -> bytes:
        while True:
            try:
                message = await self.ws.receive()
            except Closed:
                return b""
            if isinstance(message, str):
                raise Lost("text message")
            if message:
                return message

    async def send(self, data: bytes) -> None:
        try:
            await self.ws.send_binary(data)
        except Closed as exc:
            raise Lost("websocket closed") from exc

    async def close(self) -> None:
        # closing must never fail the caller
        with (trio.CancelScope(shield=True), contextlib.suppress(Exception)):
            with trio.move_on_after(LINGER_SECONDS):
                await self.ws.close(1000)
            await self.ws.aclose()


Ended = Literal["source", "destination"]  # which side of a direction went away


async def _copy(src: Endpoint, dst: Endpoint, stats: PairStats, *,
                bulk_stops: bool = False) -> Ended | None:
    """Copy chunks until a side ends; with `bulk_stops`, None once CHUNK bytes have passed."""
    copied = 0
    while True:
        try:
            data = await src.receive()
        except Lost:
            return "source"
        if not data:
            return "source"
        stats.total_bytes += len(data)
        stats.buffered += len(data)
        try:
            await dst.send(data)
        except Lost:
            return "destination"
        finally:
            stats.buffered -= len(data)
        copied += len(data)
        if bulk_stops and copied >= CHUNK:
            return None


class _SpliceUnsupported(Exception):
    pass


async def _splice(
    src: trio.socket.SocketType, dst: trio.socket.SocketType, stats: PairStats,
) -> Ended:
    """socket -> pipe -> socket in the kernel, one pipe-full at a time."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    held = 0
    moved_any = False
    try:
        with contextlib.suppress(OSError):  # a smaller pipe only means more system calls
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_SIZE)
        src_fd, dst_fd = src.fileno(), dst.fileno()
        while True:
            await trio.lowlevel.checkpoint()
            try:
                n = os.splice(src_fd, write_end, PIPE_SIZE, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(src)
                continue
            except OSError as exc:
                if not moved_any and exc.errno in _NO_SPLICE:
                    raise _SpliceUnsupported from exc
                return "source"
            if n == 0:
                return "source"
            moved_any = True
            held = n
            stats.total_bytes += n
            stats.buffered += n
            while held:
                try:
                    m = os.splice(read_end, dst_fd, held, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(dst)
                    continue
                except OSError:
                    return "destination"
                held -= m
                stats.buffered -= m
    finally:
        stats.buffered -= held
        os.close(read_end)
        os.close(write_end)


async def _direction(src: Endpoint, dst: Endpoint, stats: PairStats, use_splice: bool) -> Ended:
    """Copy, and move to splice(2) once CHUNK bytes show a bulk transfer: a short exchange
    never pays for the two pipes."""
    if (use_splice and isinstance(src, StreamEndpoint) and isinstance(dst, StreamEndpoint)
            and isinstance(src.stream, trio.SocketStream)
            and isinstance(dst.stream, trio.SocketStream)):
        ended = await _copy(src, dst, stats, bulk_stops=True)
        if ended is not None:
            return ended
        try:
            return await _splice(src.stream.socket, dst.stream.socket, stats)
        except _SpliceUnsupported:
            pass
    return await _copy(src, dst, stats) or "source"  # None only with bulk_stops


async def relay(
    a: Endpoint, b: Endpoint, stats: PairStats, *, use_splice: bool = HAS_SPLICE,
) -> None:
    """Copy both ways until one side goes away (no half-close, docs/transit-protocol.md §5.3).

    When a source ends, what was already read has been delivered and the other direction is
    stopped: the relay no longer reads from the survivor. When a destination fails, the other
    direction (reading from that same broken peer) is left to deliver what it already read.
    """
    async with trio.open_nursery() as nursery:

        async def run(src: Endpoint, dst: Endpoint) -> None:
            if await _direction(src, dst, stats, use_splice) == "source":
                nursery.cancel_scope.cancel()

        nursery.start_soon(run, b, a)
        await run(a, b)
