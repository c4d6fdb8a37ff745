"""The one owner of a connection's end.

The shell tells the ledger what it saw (a connection admitted, a valid handshake, a cause that
ends it, a pair's start and end, its socket closed); the ledger feeds that to the connection's
state machine through the rendezvous, which only it holds, and turns every outcome into what
follows from it: the usage record, the metrics and, once the socket is closed, the admission
slot back. However a connection ends (with or without a task, parked or not, paired or not, at
shutdown), it gets one outcome, at most one record (a pair's is its first side's, as happy) and
one release.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from wormhole_transit.admission import Admission
from wormhole_transit.core.handshake import Handshake
from wormhole_transit.core.machine import Ended, Machine, State
from wormhole_transit.core.rendezvous import Cause, Pair, Rendezvous
from wormhole_transit.core.stats import PairStats, TransitStats
from wormhole_transit.core.usage import Usage
from wormhole_transit.metrics import TransitMetrics
from wormhole_transit.relay import Endpoint

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


@dataclass(eq=False)
class Relaying:
    """A pair from `ok` to its end: its sides, when it paired, and its live counts."""

    first: Connection
    second: Connection
    paired: float
    counts: PairStats = field(default_factory=PairStats)


class Ledger:
    def __init__(self, admission: Admission, stats: TransitStats, metrics: TransitMetrics,
                 record: Record, *, blur_seconds: int | None = None) -> None:
        self.admission = admission
        self.stats = stats
        self.metrics = metrics
        self.record = record
        self.blur_seconds = blur_seconds
        self._rendezvous: Rendezvous[Connection] = Rendezvous()
        self.connections: set[Connection] = set()  # admitted, socket not yet closed
        self.all_closed = trio.Event()  # set whenever `connections` becomes empty

    def admit(self, stream: trio.SocketStream, kind: str, now: float) -> Connection | None:
        """A new connection within the admission limits; None if refused (or gone already)."""
        ip = self.admission.admit(stream)
        if ip is None:
            return None
        conn = Connection(Machine(now, self.blur_seconds), ip)
        self.connections.add(conn)
        if self.all_closed.is_set():
            self.all_closed = trio.Event()
        self.metrics.connections[kind].inc()
        return conn

    def arrive(self, conn: Connection, handshake: Handshake, now: float, *,
               early: bool) -> Pair[Connection] | None:
        """A valid handshake: the pair it completes, or None (it waits, or was impatient).
        The pair's redundant waiters have ended already; the shell only closes them."""
        outcome = self._rendezvous.arrive(conn, handshake, now, early=early)
        if isinstance(outcome, Pair):
            for _waiter, ended in outcome.redundant:
                self._book(ended)
        elif isinstance(outcome, Ended):
            self._book(outcome)
        self._count_waiting()
        return outcome if isinstance(outcome, Pair) else None

    def end(self, conn: Connection, cause: Cause, now: float, relayed_bytes: int = 0) -> None:
        """The shell saw `cause`; book the outcome (nothing if the end was decided already)."""
        ended = self._rendezvous.end(conn, cause, now, relayed_bytes)
        if ended is None:
            return
        if cause is Cause.TIMEOUT:
            self.stats.timeouts[TIMEOUT_PHASES[ended.left]] += 1
        self._book(ended)
        self._count_waiting()

    def pair_started(self, first: Connection, second: Connection, now: float) -> Relaying:
        """`first` waited, `second` just arrived; the returned counts are the relay's."""
        pair = Relaying(first, second, now)
        self.stats.pairs.add(pair.counts)
        self.metrics.waiting.observe(max(second.machine.started - first.machine.started, 0.0))
        return pair

    def pair_ended(self, pair: Relaying, now: float) -> None:
        """One side left: the pair's one happy record, its second side jilted."""
        counts = pair.counts
        self.stats.pairs.discard(counts)
        self.stats.finished_bytes += counts.total_bytes
        self.metrics.pair_duration.observe(max(now - pair.paired, 0.0))
        self.end(pair.first, Cause.LOST, now, counts.total_bytes)
        self.end(pair.second, Cause.LOST, now, counts.total_bytes)

    def close(self, conn: Connection, now: float) -> None:
        """Its socket is closed (or left to the accept loop to close): if nothing decided its
        end, it was lost; then its admission slot goes back. A second call changes nothing."""
        if conn not in self.connections:
            return
        self.end(conn, Cause.LOST, now)
        self.connections.remove(conn)
        self.admission.release(conn.ip)
        if not self.connections:
            self.all_closed.set()

    def _book(self, ended: Ended) -> None:
        """Count and record an outcome (a jilted side's pair is recorded by its first side)."""
        if ended.usage is not None:
            self.stats.moods[ended.mood] += 1
            self.record(ended.usage)

    def _count_waiting(self) -> None:
        self.stats.waiting_sides = self._rendezvous.waiting_connections
        self.stats.waiting_tokens = self._rendezvous.waiting_tokens
