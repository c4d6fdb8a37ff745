"""When a client counts as not reading: sans-IO, every method takes `now`.

A client is too slow when it takes nothing of what waits for it for `stall_seconds`, not
when a large replay takes long in all. The clock runs only while frames wait to be written.
Two things say the client took something and start it again: a write the socket finished
(`took`), and the count of bytes its TCP acknowledged moving on (`acked`): a frame of a
megabyte may take a slow reader longer than the stall time to read, and its write finishes
only at its end. The writer (`outbound.Outbound`) reports; whoever waits for the writer asks
`deadline` and `stalled`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_STALL_SECONDS = 60


@dataclass
class ReadClock:
    stall_seconds: float = DEFAULT_STALL_SECONDS
    # since when the client has taken nothing of what waits for it; None: nothing waits
    since: float | None = None
    acked_bytes: int | None = None  # the acknowledged count when last seen (None: unknown)

    def waiting(self, now: float, acked: int | None = None) -> None:
        """Frames wait to be written (the clock starts, unless it runs already); `acked`: the
        socket's count of acknowledged bytes, if it has one."""
        if self.since is None:
            self.since = now
            self.acked_bytes = acked

    def took(self, now: float) -> None:
        """A write finished: the client is reading."""
        if self.since is not None:
            self.since = now

    def acked(self, count: int | None, now: float) -> None:
        """The socket's count of bytes acknowledged by the client: reading if it moved."""
        if count is not None and self.acked_bytes is not None and count != self.acked_bytes:
            self.took(now)
        self.acked_bytes = count

    def idle(self) -> None:
        """Nothing waits any more."""
        self.since = None

    def deadline(self) -> float:
        """When the client counts as stalled if it takes nothing more (inf: nothing waits)."""
        return math.inf if self.since is None else self.since + self.stall_seconds

    def stalled(self, now: float) -> bool:
        return now >= self.deadline()
