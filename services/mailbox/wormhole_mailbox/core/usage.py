"""Usage records: outcome moods, waiting and total times, blurring (docs/mailbox-protocol.md §7)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Moods a client may report that change the mailbox result, lowest precedence first.
_MOOD_RESULTS = ("lonely", "errory", "scary")


def blur(t: float, blur_seconds: float | None) -> float:
    """Round a time down to a multiple of the blur period (no blurring when unset)."""
    if not blur_seconds:
        return t
    return blur_seconds * (t // blur_seconds)


@dataclass(frozen=True)
class Timing:
    started: float
    waiting_time: float | None
    total_time: float


def timing(added: Sequence[float], now: float) -> Timing:
    """Times from the sides' arrival times (any order); `added` must not be empty."""
    times = sorted(added)
    waiting = times[1] - times[0] if len(times) > 1 else None
    return Timing(started=times[0], waiting_time=waiting, total_time=now - times[0])


def nameplate_result(sides: int, *, pruned: bool, crowded: bool) -> str:
    result = "happy" if sides == 2 else "lonely"
    if pruned:
        result = "pruney"
    if crowded or sides > 2:
        result = "crowded"
    return result


def mailbox_result(moods: Sequence[str | None], *, pruned: bool, crowded: bool) -> str:
    """Later rules override earlier ones: crowded > pruney > scary > errory > lonely > happy."""
    sides = len(moods)
    result = "quiet" if sides == 0 else "lonely" if sides == 1 else "happy"
    for mood in _MOOD_RESULTS:
        if mood in moods:
            result = mood
    if pruned:
        result = "pruney"
    if crowded or sides > 2:
        result = "crowded"
    return result


@dataclass(frozen=True)
class NameplateUsage:
    app_id: str
    started: float
    waiting_time: float | None
    total_time: float
    result: str


@dataclass(frozen=True)
class MailboxUsage:
    app_id: str
    for_nameplate: bool
    started: float
    waiting_time: float | None
    total_time: float
    result: str


def nameplate_usage(
    app_id: str, added: Sequence[float], now: float, *, pruned: bool, crowded: bool,
    blur_seconds: float | None,
) -> NameplateUsage:
    t = timing(added, now)
    return NameplateUsage(
        app_id=app_id,
        started=blur(t.started, blur_seconds),
        waiting_time=t.waiting_time,
        total_time=t.total_time,
        result=nameplate_result(len(added), pruned=pruned, crowded=crowded),
    )


def mailbox_usage(
    app_id: str, *, for_nameplate: bool, added: Sequence[float], moods: Sequence[str | None],
    now: float, pruned: bool, crowded: bool, blur_seconds: float | None,
) -> MailboxUsage:
    # A mailbox with no side rows must not break the record (the reference's did,
    # docs/mailbox-protocol.md §10.2): it started now.
    t = timing(added or [now], now)
    return MailboxUsage(
        app_id=app_id,
        for_nameplate=for_nameplate,
        started=blur(t.started, blur_seconds),
        waiting_time=t.waiting_time,
        total_time=t.total_time,
        result=mailbox_result(moods, pruned=pruned, crowded=crowded),
    )
