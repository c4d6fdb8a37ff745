"""Where connections meet: the pending table driving each connection's state machine.

Everything a valid handshake decides happens here in one call (docs/transit-protocol.md §4):
who pairs with whom, who becomes redundant, and whether bytes sent with the line are
impatient or are relayed to a partner that was already waiting. Everything else the shell sees
that ends a connection is one `Cause` fed to `end`. These two calls are the only way the shell
drives a connection's state machine. No I/O and no clock: `now` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from wormhole_transit.core.handshake import Handshake
from wormhole_transit.core.machine import Ended, Machine
from wormhole_transit.core.pairing import Paired, PairingTable


class Participant(Protocol):
    @property
    def machine(self) -> Machine: ...


C = TypeVar("C", bound=Participant)


@dataclass
class Pair(Generic[C]):
    """`first` waited, `second` just arrived; each redundant waiter must be closed silently."""

    first: C
    second: C
    redundant: list[tuple[C, Ended]] = field(default_factory=list)


@dataclass(frozen=True)
class Wait:
    """No partner yet: watch the connection until a partner, data, its end or the timer."""


class Cause(StrEnum):
    """What the shell saw that ends a connection (pairing and redundancy are the rendezvous's)."""

    BAD_LINE = "bad_line"  # a complete line that is not a handshake
    OVERLONG_LINE = "overlong_line"  # too long without a line end
    EARLY_DATA = "early_data"  # bytes while waiting for a partner
    TIMEOUT = "timeout"  # the handshake or the lonely timer ran out
    LOST = "lost"  # the connection (or, when relaying, its pair) ended


class Rendezvous(Generic[C]):
    def __init__(self) -> None:
        self._table: PairingTable[C] = PairingTable()

    def arrive(self, conn: C, handshake: Handshake, now: float, *,
               early: bool = False) -> Pair[C] | Wait | Ended:
        """A valid handshake; `early`: bytes followed the line in the same read."""
        conn.machine.handshake_ok()
        outcome = self._table.arrive(conn, handshake)
        if isinstance(outcome, Paired):
            first = outcome.partner
            redundant = [(c, c.machine.redundant(now)) for c in outcome.redundant]
            first.machine.partner(conn.machine.started, first=True)
            conn.machine.partner(first.machine.started, first=False)
            return Pair(first, conn, redundant)
        if early:
            self._table.leave(conn)
            return conn.machine.early_data(now)
        return Wait()

    def end(self, conn: C, cause: Cause, now: float, relayed_bytes: int = 0) -> Ended | None:
        """How `cause` ends the connection. Only `LOST` may come after the end was decided
        (the socket closes after every end): then None. `relayed_bytes`: a pair's, for its
        happy record."""
        self._table.leave(conn)
        machine = conn.machine
        if cause is Cause.LOST:
            return machine.lost(now, relayed_bytes)
        if cause is Cause.TIMEOUT:
            return machine.timeout(now)
        if cause is Cause.EARLY_DATA:
            return machine.early_data(now)
        if cause is Cause.BAD_LINE:
            return machine.handshake_bad(now)
        return machine.handshake_overlong(now)

    @property
    def waiting_tokens(self) -> int:
        return self._table.waiting_tokens

    @property
    def waiting_connections(self) -> int:
        return self._table.waiting_connections
