"""TCP connections waiting for a partner, parked without a task: one selector for all of them.

A waiting connection often waits for minutes (the Go sender connects before its user accepts
the offer), and a relay may hold tens of thousands, so each must be cheap: it is detached from
its trio stream and its socket is watched, with all the others, through one kernel selector
(epoll on Linux, kqueue on macOS and the BSDs: `selectors.DefaultSelector`, whose own
descriptor trio waits on) by one task. Readable means the client sent bytes (impatient) or left
(lonely). The lonely timer is the same for every connection, so parking order is deadline order.
"""

from __future__ import annotations

import math
import selectors
import socket
from collections.abc import Callable
from typing import Generic, TypeVar

import trio

C = TypeVar("C")
Event = Callable[[C, socket.socket], None]


class WaitingRoom(Generic[C]):
    def __init__(self, lonely_timeout: float, *, on_readable: Event[C],
                 on_timeout: Event[C]) -> None:
        self.lonely_timeout = lonely_timeout
        self.on_readable = on_readable
        self.on_timeout = on_timeout
        self._selector = selectors.DefaultSelector()
        self._parked: dict[int, tuple[C, socket.socket, float]] = {}  # by fd, oldest first
        self._fd_of: dict[C, int] = {}
        self._sleep = trio.CancelScope()

    def park(self, conn: C, sock: socket.socket) -> None:
        """Watch `sock` (a detached, non-blocking socket) for bytes, its end, or the timer."""
        fd = sock.fileno()
        self._selector.register(fd, selectors.EVENT_READ)  # bytes or the end of the stream
        deadline = trio.current_time() + self.lonely_timeout
        self._parked[fd] = (conn, sock, deadline)
        self._fd_of[conn] = fd
        if len(self._parked) == 1:
            self._sleep.deadline = deadline  # it slept without one; no need to wake it

    def unpark(self, conn: C) -> socket.socket | None:
        """Take a parked connection back (its partner came); None if it is not parked."""
        fd = self._fd_of.pop(conn, None)
        if fd is None:
            return None
        _conn, sock, _deadline = self._parked.pop(fd)
        self._selector.unregister(fd)
        return sock

    def unpark_all(self) -> list[tuple[C, socket.socket]]:
        """At shutdown: every parked connection, no longer watched."""
        taken = [(conn, sock) for conn, sock, _deadline in self._parked.values()]
        for conn, _sock in taken:
            self.unpark(conn)
        return taken

    async def watch(self) -> None:
        """The one task: report readable connections and expired timers, until cancelled."""
        while True:
            deadline = math.inf
            if self._parked:
                deadline = next(iter(self._parked.values()))[2]
            with trio.CancelScope(deadline=deadline) as self._sleep:
                await trio.lowlevel.wait_readable(self._selector.fileno())
            for key, _events in self._selector.select(0):
                self._report(key.fd, self.on_readable)
            now = trio.current_time()
            while self._parked:
                fd, (_conn, _sock, expires) = next(iter(self._parked.items()))
                if expires > now:
                    break
                self._report(fd, self.on_timeout)

    def close(self) -> None:
        self._selector.close()

    def _report(self, fd: int, event: Event[C]) -> None:
        entry = self._parked.get(fd)
        if entry is None:
            return
        conn, sock, _deadline = entry
        self.unpark(conn)
        event(conn, sock)
