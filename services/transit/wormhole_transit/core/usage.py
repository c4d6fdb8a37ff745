"""Usage records: moods, the reference's record fields and its blurring, without I/O
(docs/transit-protocol.md §9).

The moods are decided by the connection state machine (`machine.py`); this module only says
what a record holds and how it is blurred.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


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
        """Keys in the reference's order (docs/transit-protocol.md §9.3)."""
        return {
            "started": self.started,
            "total_time": self.total_time,
            "waiting_time": self.waiting_time,
            "total_bytes": self.total_bytes,
            "mood": str(self.mood),
        }


def blur_started(started: float, blur_seconds: int | None) -> float:
    """Round down to the blur period, keeping a float (docs/transit-protocol.md §9.2)."""
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
