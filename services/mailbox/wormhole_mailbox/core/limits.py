"""Admission and quotas per client address and in total, sans-IO (docs/mailbox-protocol.md
§2.7, §9.3).

The shell asks before it acts and reports what happened; every time-dependent call takes `now`.
A refusal is a `Refusal`: a metric label from `REFUSAL_REASONS` and the exact text the client
gets (a protocol `error` for an op; the HTTP body or close reason for a connection).

Addresses are keyed by `address_key` (`wormhole_common.core.addresses`): an IPv4 address (also
written IPv4-mapped), or the /64 an IPv6 address is in.
Memory is bounded: at most `max_tracked` keys per kind of state, idle ones forgotten first.

Every limit is the server's, whatever `MAILBOX_WORKERS` is. In a worker group the kernel sends
each address to one worker (`steering`), so that worker's per-address state is the server's;
where it cannot, every worker enforces its share (`LimitSettings.shared_by`). The total number
of connections is counted across workers (`Tally`).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from wormhole_common.core.addresses import address_key
from wormhole_common.core.fdlimit import MEMORY_CEILING

# A connection may cause this many `error` replies at once, then this many a second: honest
# clients never cause more than a couple; a hostile one is slowed to the pace of an honest one.
ERROR_BURST = 20
ERRORS_PER_SECOND = 5

# Refused sockets answered with a 503 at once (each holds a descriptor for up to a second);
# past this many, more are closed without an answer, so a flood cannot use up descriptors.
ANSWERED_REFUSALS = 16

# A real exchange stores fewer than 10 messages of under 10 KB; a text sent through the
# mailbox is one body of at most a frame (1 MiB). These leave room for both and for long
# dilation sessions (a few messages per reconnection), yet bound what one mailbox may hold
# (an `add` past either gets 'mailbox is full').
MAILBOX_MAX_MESSAGES = 1000
MAILBOX_MAX_BYTES = 4 << 20

# Pruning removes channels idle for CHANNEL_EXPIRY_SECONDS, every PRUNE_INTERVAL_SECONDS.
CHANNEL_EXPIRY_SECONDS = 11 * 60
PRUNE_INTERVAL_SECONDS = 5 * 60

REFUSAL_REASONS = ("connections_total", "connections_per_address", "allocations_rate",
                   "mailboxes_rate", "nameplates_held")


@dataclass(frozen=True)
class Refusal:
    reason: str  # one of REFUSAL_REASONS
    text: str


REFUSALS = {
    "connections_total": Refusal(
        "connections_total", "too many connections; try again later"),
    "connections_per_address": Refusal(
        "connections_per_address", "too many connections from your address; try again later"),
    "allocations_rate": Refusal(
        "allocations_rate", "too many allocations from your address; try again in a minute"),
    "mailboxes_rate": Refusal(
        "mailboxes_rate", "too many new mailboxes from your address; try again in a minute"),
    "nameplates_held": Refusal(
        "nameplates_held",
        "too many nameplates held by your address; release some or try again later"),
}


@dataclass(frozen=True)
class LimitSettings:
    """Defaults a real user never meets, argued in docs/configuration.md (MAILBOX_* variables)."""

    max_connections: int = MEMORY_CEILING  # the server's (every worker's) connections
    max_process_connections: int | None = None  # this process's, if fewer (its descriptors)
    max_connections_per_address: int = 250
    allocations_per_minute: float = 60  # also the burst: a full bucket holds a minute's worth
    mailboxes_per_minute: float = 60
    nameplates_per_address: int = 100
    nameplate_linger_seconds: float = CHANNEL_EXPIRY_SECONDS + PRUNE_INTERVAL_SECONDS
    max_tracked: int = 32_768  # addresses remembered per kind of state: 25 MiB at most in all

    def shared_by(self, workers: int) -> LimitSettings:
        """What each of `workers` workers enforces when any of them may see any address: its
        share of every per-address cap (rounded up) and rate (with a burst of at least one),
        so an address gets at most N * ceil(cap / N) from the server, within N - 1 of the cap.
        An address whose connections land unevenly is refused before it reaches the cap (and
        a refused retry may land on a worker with room). The total is not divided: `Tally`
        counts it across workers."""
        if workers <= 1:
            return self
        return replace(
            self,
            max_connections_per_address=math.ceil(self.max_connections_per_address / workers),
            allocations_per_minute=self.allocations_per_minute / workers,
            mailboxes_per_minute=self.mailboxes_per_minute / workers,
            nameplates_per_address=math.ceil(self.nameplates_per_address / workers),
        )


class Cells(Protocol):
    """One integer per worker: a list, or a memoryview of shared memory."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[int]: ...
    def __setitem__(self, index: int, value: int, /) -> None: ...


class Tally:
    """Open connections of every worker of a group, one cell each: a worker writes only its
    own cell (no lock, so a killed worker cannot leave one held) and reads the sum. Two
    workers admitting at the same instant may each see the other's count before it grew, so
    the server total can pass the cap by at most N - 1, briefly. A worker that dies leaves its
    cell as it was; the supervisor zeroes it (its connections died with it)."""

    def __init__(self, cells: Cells, index: int) -> None:
        self.cells = cells
        self.index = index

    @property
    def workers(self) -> int:
        return len(self.cells)

    def set(self, count: int) -> None:
        self.cells[self.index] = count

    def total(self) -> int:
        return sum(self.cells)


class Connections:
    """Open connections, in total (counted at accept, before any byte is read) and per
    address (counted once the address is known: at accept without a proxy, else at upgrade).
    In a worker group the total is the server's, through `tally`."""

    def __init__(self, settings: LimitSettings, tally: Tally | None = None) -> None:
        self.settings = settings
        self.tally = tally
        self.process_cap = min(settings.max_connections,
                               settings.max_process_connections or settings.max_connections)
        self.total = 0
        self.per_key: Counter[str] = Counter()
        self.answering = 0  # refused sockets being answered now

    def answer_refusal(self) -> bool:
        """Whether a refused socket may be answered (then call `answered()`), or must just
        be closed."""
        if self.answering >= ANSWERED_REFUSALS:
            return False
        self.answering += 1
        return True

    def answered(self) -> None:
        self.answering -= 1

    def accept(self) -> Refusal | None:
        """A socket was accepted; on None the caller must call `closed()` when it is gone."""
        tally = self.tally
        if self.total >= self.process_cap or (
                tally is not None and tally.total() >= self.settings.max_connections):
            return REFUSALS["connections_total"]
        self.total += 1
        if tally is not None:
            tally.set(self.total)
        return None

    def closed(self) -> None:
        self.total -= 1
        if self.tally is not None:
            self.tally.set(self.total)

    def admit(self, host: str) -> Refusal | None:
        """The client's address is known; on None the caller must call `leave(host)`."""
        key = address_key(host)
        if self.per_key[key] >= self.settings.max_connections_per_address:
            return REFUSALS["connections_per_address"]
        self.per_key[key] += 1
        return None

    def leave(self, host: str) -> None:
        key = address_key(host)
        self.per_key[key] -= 1
        if self.per_key[key] <= 0:
            del self.per_key[key]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """A token bucket per key: `capacity` tokens, refilled at `per_second`. A bucket that has
    refilled completely is forgotten (it is the same as a new one); past `max_tracked` keys the
    least recently used are forgotten, which only ever errs towards admitting.

    `per_minute` is a rate that is also its burst, at least one token (else a rate under one
    a minute, or a worker's share of one, would never admit anything)."""

    @classmethod
    def per_minute(cls, rate: float, max_tracked: int) -> TokenBuckets:
        return cls(max(1.0, rate), rate / 60, max_tracked)

    def __init__(self, capacity: float, per_second: float, max_tracked: int) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.max_tracked = max_tracked
        self.buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def refill_seconds(self) -> float:
        return self.capacity / self.per_second

    def take(self, key: str, now: float) -> bool:
        """Take one token if there is one."""
        self._forget_idle(now)
        bucket = self.buckets.pop(key, None) or _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity,
                            bucket.tokens + max(0.0, now - bucket.stamp) * self.per_second)
        bucket.stamp = now
        taken = bucket.tokens >= 1
        if taken:
            bucket.tokens -= 1
        self.buckets[key] = bucket  # most recently used last
        while len(self.buckets) > self.max_tracked:
            self.buckets.popitem(last=False)
        return taken

    def _forget_idle(self, now: float) -> None:
        # Least recently used first: once one has not refilled yet, none after it has.
        while self.buckets:
            oldest = next(iter(self.buckets.values()))
            if oldest.stamp + self.refill_seconds > now:
                return
            self.buckets.popitem(last=False)


@dataclass(slots=True)
class _Held:
    live: int = 0  # held by open connections
    # Held by closed connections: [expiry, count], expiries whole minutes apart, ascending.
    lingering: list[list[float]] = field(default_factory=list)  # short: a deque costs 600 B
    lingering_count: int = 0


class NameplateHolds:
    """Nameplates held per address: counted while the connection that allocated or claimed one
    is open and has not released it, then for `linger` seconds more (the nameplate outlives
    its connection until released or pruned). Expiry times are rounded up to whole minutes,
    so an address costs at most linger/60 + 1 small entries whatever it does."""

    def __init__(self, cap: int, linger: float, max_tracked: int) -> None:
        self.cap = cap
        self.linger = linger
        self.max_tracked = max_tracked
        self.held: OrderedDict[str, _Held] = OrderedDict()

    def count(self, key: str, now: float) -> int:
        held = self.held.get(key)
        if held is None:
            return 0
        while held.lingering and held.lingering[0][0] <= now:
            held.lingering_count -= int(held.lingering.pop(0)[1])
        total = held.live + held.lingering_count
        if not total:
            del self.held[key]
        return total

    def full(self, key: str, now: float) -> bool:
        return self.count(key, now) >= self.cap

    def hold(self, key: str) -> None:
        held = self.held.pop(key, None) or _Held()
        held.live += 1
        self.held[key] = held
        while len(self.held) > self.max_tracked:
            self.held.popitem(last=False)

    def release(self, key: str) -> None:
        held = self.held.get(key)
        if held is not None and held.live > 0:
            held.live -= 1

    def linger_from(self, key: str, now: float) -> None:
        """A connection closed still holding one: count it until it would have expired."""
        held = self.held.get(key)
        if held is None or held.live <= 0:
            return
        held.live -= 1
        expiry = math.ceil((now + self.linger) / 60) * 60
        if held.lingering and held.lingering[-1][0] >= expiry:
            held.lingering[-1][1] += 1
        else:
            held.lingering.append([expiry, 1])
        held.lingering_count += 1
        self.held.move_to_end(key)


class Limits:
    """All of one server's limits (a worker's part of them: `Tally`, `shared_by`);
    `client()` gives a connection its own view."""

    def __init__(self, settings: LimitSettings, tally: Tally | None = None) -> None:
        self.settings = settings
        self.connections = Connections(settings, tally)
        self.allocations = TokenBuckets.per_minute(settings.allocations_per_minute,
                                                   settings.max_tracked)
        self.mailboxes = TokenBuckets.per_minute(settings.mailboxes_per_minute,
                                                 settings.max_tracked)
        self.nameplates = NameplateHolds(settings.nameplates_per_address,
                                         settings.nameplate_linger_seconds, settings.max_tracked)

    def client(self, host: str) -> ClientQuota:
        """The quota of one connection from `host` (the address the trusted proxy reports)."""
        return ClientQuota(self, address_key(host))


class ClientQuota:
    """What one connection may still do. Ask before an op (`allocate`, `claim`, `open`: None
    means go ahead), report successes (`holding`), releases and the close.

    Charged once per thing a connection can make the server create: an `allocate` to the
    allocation rate; a `claim` of a name it did not allocate, or an `open` of a mailbox it did
    not claim, to the mailbox rate (so an honest sender and receiver pay one each).
    """

    def __init__(self, limits: Limits, key: str) -> None:
        self.limits = limits
        self.key = key
        self.names: set[str] = set()  # nameplates this connection holds
        self.mailboxes: set[str] = set()  # mailboxes its claims returned
        self.errors = _Bucket(ERROR_BURST, 0.0)  # errors it may still cause without a pause

    def erred(self, now: float) -> float:
        """The connection caused an `error` reply: how long to read nothing more from it
        (0: no pause)."""
        errors = self.errors
        errors.tokens = min(ERROR_BURST,
                            errors.tokens + max(0.0, now - errors.stamp) * ERRORS_PER_SECOND)
        errors.stamp = now
        errors.tokens -= 1
        return max(0.0, -errors.tokens / ERRORS_PER_SECOND)

    def allocate(self, now: float) -> Refusal | None:
        if self.limits.nameplates.full(self.key, now):
            return REFUSALS["nameplates_held"]
        if not self.limits.allocations.take(self.key, now):
            return REFUSALS["allocations_rate"]
        return None

    def claim(self, name: str, now: float) -> Refusal | None:
        if name in self.names:
            return None
        if self.limits.nameplates.full(self.key, now):
            return REFUSALS["nameplates_held"]
        if not self.limits.mailboxes.take(self.key, now):
            return REFUSALS["mailboxes_rate"]
        return None

    def open(self, mailbox: str, now: float) -> Refusal | None:
        if mailbox in self.mailboxes or self.limits.mailboxes.take(self.key, now):
            return None
        return REFUSALS["mailboxes_rate"]

    def holding(self, name: str, mailbox: str | None = None) -> None:
        """An allocate (no mailbox) or claim (its mailbox) of `name` succeeded."""
        if mailbox is not None:
            self.mailboxes.add(mailbox)
        if name not in self.names:
            self.names.add(name)
            self.limits.nameplates.hold(self.key)

    def released(self, name: str) -> None:
        if name in self.names:
            self.names.discard(name)
            self.limits.nameplates.release(self.key)

    def close(self, now: float) -> None:
        for _ in self.names:
            self.limits.nameplates.linger_from(self.key, now)
        self.names.clear()
