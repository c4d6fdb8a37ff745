"""Pairing rules, moods and usage records, without I/O or a clock (spec 1.5, 1.6, 3).

Every time-dependent call takes `now`, so the rules are tested with plain numbers. The trio
shell owns the connections; here they are opaque keys of type `C`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from wormhole_transit.handshake import Handshake

C = TypeVar("C")


class Mood(StrEnum):
    """How a connection ended; a small closed set, also usable as a metric label."""

    HAPPY = "happy"  # paired; one record per pair
    LONELY = "lonely"  # valid handshake, never paired
    REDUNDANT = "redundant"  # waiting duplicate dropped when another one on its token paired
    ERRORY = "errory"  # bad handshake line
    JILTED = "jilted"  # second side of a pair; never recorded (the pair's record is happy)
    EMPTY = "empty"  # no complete handshake: probe, silence, overlong line, WebSocket text
    IMPATIENT = "impatient"  # sent data before its partner arrived


@dataclass(frozen=True)
class Usage:
    """One usage record, with the reference's field meanings."""

    started: float
    total_time: float
    waiting_time: float | None
    total_bytes: int
    mood: Mood

    def as_json_fields(self) -> dict[str, object]:
        """Keys in the reference's order (spec 3.3)."""
        return {
            "started": self.started,
            "total_time": self.total_time,
            "waiting_time": self.waiting_time,
            "total_bytes": self.total_bytes,
            "mood": str(self.mood),
        }


def blur_started(started: float, blur_seconds: int | None) -> float:
    """Round down to the blur period, keeping a float (spec 3.2)."""
    if not blur_seconds:
        return started
    return float(math.floor(started / blur_seconds) * blur_seconds)


def blur_bytes(total: int, blur_seconds: int | None) -> int:
    """Round sizes *up* into coarse buckets (the reference code, not its docs)."""
    if not blur_seconds or total == 0:
        return total
    if total < 1_000_000:
        bucket = 10_000
    elif total < 1_000_000_000:
        bucket = 1_000_000
    else:
        bucket = 100_000_000
    return -(-total // bucket) * bucket


def single_usage(started: float, now: float, mood: Mood, blur_seconds: int | None) -> Usage:
    """The record of a connection that never paired."""
    return Usage(
        started=blur_started(started, blur_seconds),
        total_time=now - started,
        waiting_time=None,
        total_bytes=0,
        mood=mood,
    )


def pair_usage(
    first_started: float, second_started: float, now: float, total_bytes: int,
    blur_seconds: int | None,
) -> Usage:
    """The one `happy` record of a pair, written when the pair ends."""
    started = min(first_started, second_started)
    return Usage(
        started=blur_started(started, blur_seconds),
        total_time=now - started,
        waiting_time=abs(first_started - second_started),
        total_bytes=blur_bytes(total_bytes, blur_seconds),
        mood=Mood.HAPPY,
    )


@dataclass
class Paired(Generic[C]):
    """The arriving connection paired with `partner`; `redundant` must be closed silently."""

    partner: C
    redundant: list[C] = field(default_factory=list)


@dataclass(frozen=True)
class Waiting:
    pass


class PairingTable(Generic[C]):
    """Pending connections by token (spec 1.5).

    A token is forgotten as soon as it pairs, so a later connection on it starts a fresh wait.
    """

    def __init__(self) -> None:
        self._pending: dict[bytes, dict[C, bytes | None]] = {}
        self._token_of: dict[C, bytes] = {}

    def arrive(self, conn: C, handshake: Handshake) -> Paired[C] | Waiting:
        waiting = self._pending.get(handshake.token)
        if waiting:
            for other, side in waiting.items():
                if side is None or handshake.side is None or side != handshake.side:
                    del self._pending[handshake.token]
                    redundant = [c for c in waiting if c is not other]
                    for c in waiting:
                        del self._token_of[c]
                    return Paired(other, redundant)
        self._pending.setdefault(handshake.token, {})[conn] = handshake.side
        self._token_of[conn] = handshake.token
        return Waiting()

    def leave(self, conn: C) -> bool:
        """Forget a waiting connection (closed, impatient, timed out); False if not waiting."""
        token = self._token_of.pop(conn, None)
        if token is None:
            return False
        waiting = self._pending[token]
        del waiting[conn]
        if not waiting:
            del self._pending[token]
        return True

    def is_waiting(self, conn: C) -> bool:
        return conn in self._token_of

    @property
    def waiting_tokens(self) -> int:
        """Tokens with someone waiting: the reference's `current.waiting`."""
        return len(self._pending)

    @property
    def waiting_connections(self) -> int:
        return len(self._token_of)
