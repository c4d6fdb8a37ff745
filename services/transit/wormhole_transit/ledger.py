"""The shell's books: what it keeps per connection, which connections are open, and the
outcomes their state machines decided (counted for metrics, recorded as usage)."""

from __future__ import annotations

from collections.abc import Callable

import trio

from wormhole_transit.admission import Admission
from wormhole_transit.machine import Ended, Machine, State
from wormhole_transit.records import Usage
from wormhole_transit.relay import Endpoint
from wormhole_transit.rendezvous import Rendezvous
from wormhole_transit.stats import TransitStats

TIMEOUT_PHASES = {State.HANDSHAKING: "handshake", State.WAITING: "lonely"}

Record = Callable[[Usage], None]


class Connection:
    """What the shell keeps per connection besides its state machine."""

    __slots__ = ("endpoint", "ip", "machine", "pair_done", "pending", "released", "scope")

    def __init__(self, machine: Machine, ip: str) -> None:
        self.machine = machine
        self.ip = ip
        self.scope = trio.CancelScope()  # its task's handshake and wait: timers, wake, drain
        self.endpoint: Endpoint | None = None
        self.pending = b""  # bytes read before `ok`, for the partner
        # A waiting WebSocket connection's task: let go of its socket; may return.
        self.released: trio.Event | None = None
        self.pair_done: trio.Event | None = None


class Ledger:
    def __init__(self, rendezvous: Rendezvous[Connection], admission: Admission,
                 stats: TransitStats, record: Record) -> None:
        self.rendezvous = rendezvous
        self.admission = admission
        self.stats = stats
        self.record = record
        self.connections: set[Connection] = set()
        self.all_closed = trio.Event()  # set whenever `connections` becomes empty

    def opened(self, conn: Connection) -> None:
        self.connections.add(conn)
        if self.all_closed.is_set():
            self.all_closed = trio.Event()

    def ended(self, ended: Ended | None) -> None:
        """Count and record an outcome the state machine decided."""
        if ended is None:
            return
        if ended.usage is not None:
            self.stats.moods[ended.mood] += 1
            self.record(ended.usage)
        self.count_waiting()

    def timeout(self, conn: Connection, now: float) -> None:
        ended = self.rendezvous.timeout(conn, now)
        self.stats.timeouts[TIMEOUT_PHASES[ended.left]] += 1
        self.ended(ended)

    def count_waiting(self) -> None:
        self.stats.waiting_sides = self.rendezvous.waiting_connections
        self.stats.waiting_tokens = self.rendezvous.waiting_tokens

    def closed(self, conn: Connection) -> None:
        """The connection's socket is closed: give its admission slot back."""
        self.connections.discard(conn)
        self.admission.release(conn.ip)
        if not self.connections:
            self.all_closed.set()
