"""Where connections meet: the pending table driving each connection's state machine.

Everything a valid handshake decides happens here in one call (docs/transit-protocol.md §4):
who pairs with whom, who becomes redundant, and whether bytes sent with the line are
impatient or are relayed to a partner that was already waiting. No I/O and no clock: `now` is
passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from wormhole_transit.handshake import Handshake
from wormhole_transit.machine import Ended, Machine
from wormhole_transit.pairing import Paired, PairingTable


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
            return self.early_data(conn, now)
        return Wait()

    def early_data(self, conn: C, now: float) -> Ended:
        """A waiting connection sent bytes: impatient."""
        self._table.leave(conn)
        return conn.machine.early_data(now)

    def timeout(self, conn: C, now: float) -> Ended:
        self._table.leave(conn)
        return conn.machine.timeout(now)

    def lost(self, conn: C, now: float, relayed_bytes: int = 0) -> Ended | None:
        """The connection ended (or its pair did); None if its end was already decided."""
        self._table.leave(conn)
        return conn.machine.lost(now, relayed_bytes)

    @property
    def waiting_tokens(self) -> int:
        return self._table.waiting_tokens

    @property
    def waiting_connections(self) -> int:
        return self._table.waiting_connections
