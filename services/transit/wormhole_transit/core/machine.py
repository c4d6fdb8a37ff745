"""One relay connection's life as an explicit state machine, without I/O or a clock.

    handshaking --ok--> waiting --partner--> relaying --lost--> done
         |                 |
         +--bad/overlong/  +--early data/redundant/lost/timeout--> done
            lost/timeout --> done

Every input is a method; the ones that end the connection take `now` and return `Ended`, the
connection's mood and its usage record (docs/transit-protocol.md §8). This is the only place
a mood is decided.
The shell (`connection.py`) performs the I/O that goes with each transition: `bad handshake\\n`
for errory, `impatient\\n` for impatient, a silent close otherwise, `ok\\n` when relaying.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from wormhole_transit.core.usage import Mood, Usage, pair_usage, single_usage


class State(StrEnum):
    HANDSHAKING = "handshaking"
    WAITING = "waiting"
    RELAYING = "relaying"
    DONE = "done"


class InvalidInput(Exception):
    """An input the current state does not accept: a bug in the shell, never a client's."""


@dataclass(frozen=True)
class Ended:
    """How the connection ended; `usage` is None only for the second side of a pair (jilted),
    whose pair the first side records, exactly once (the reference's rule)."""

    mood: Mood
    usage: Usage | None
    left: State  # the state the connection was in: a timeout's phase


class Machine:
    __slots__ = ("_first", "_partner_started", "blur_seconds", "mood", "started", "state")

    def __init__(self, started: float, blur_seconds: int | None = None) -> None:
        self.started = started
        self.blur_seconds = blur_seconds
        self.state = State.HANDSHAKING
        self.mood: Mood | None = None  # once done
        self._partner_started = started
        self._first = False

    def handshake_ok(self) -> None:
        """A valid line: wait for a partner (the rendezvous may pair it at once)."""
        self._expect(State.HANDSHAKING)
        self.state = State.WAITING

    def handshake_bad(self, now: float) -> Ended:
        """A complete line that is not a handshake: `bad handshake\\n`, then close."""
        self._expect(State.HANDSHAKING)
        return self._end(Mood.ERRORY, now)

    def handshake_overlong(self, now: float) -> Ended:
        """Too long without a line end: close without a word (the reference's `empty`)."""
        self._expect(State.HANDSHAKING)
        return self._end(Mood.EMPTY, now)

    def early_data(self, now: float) -> Ended:
        """Bytes while waiting for a partner: `impatient\\n`, then close
        (docs/transit-protocol.md §4.4)."""
        self._expect(State.WAITING)
        return self._end(Mood.IMPATIENT, now)

    def partner(self, partner_started: float, *, first: bool) -> None:
        """Paired: `first` is the side that waited, which records the pair when it ends."""
        self._expect(State.WAITING)
        self.state = State.RELAYING
        self._partner_started = partner_started
        self._first = first

    def redundant(self, now: float) -> Ended:
        """Another connection on the token paired: close without a word
        (docs/transit-protocol.md §4.2)."""
        self._expect(State.WAITING)
        return self._end(Mood.REDUNDANT, now)

    def timeout(self, now: float) -> Ended:
        """The handshake or the lonely timer ran out (relaying connections have no timer)."""
        if self.state not in (State.HANDSHAKING, State.WAITING):
            raise InvalidInput(f"timeout while {self.state}")
        return self._end(Mood.EMPTY if self.state is State.HANDSHAKING else Mood.LONELY, now)

    def lost(self, now: float, relayed_bytes: int = 0) -> Ended | None:
        """The connection (or, when relaying, its pair) ended; None if it had already ended.

        `relayed_bytes` are the pair's bytes in both directions, for the happy record.
        """
        if self.state is State.DONE:
            return None
        if self.state is State.HANDSHAKING:
            return self._end(Mood.EMPTY, now)
        if self.state is State.WAITING:
            return self._end(Mood.LONELY, now)
        self.state = State.DONE
        if not self._first:
            self.mood = Mood.JILTED
            return Ended(Mood.JILTED, None, State.RELAYING)
        self.mood = Mood.HAPPY
        usage = pair_usage(self.started, self._partner_started, now, relayed_bytes,
                           self.blur_seconds)
        return Ended(Mood.HAPPY, usage, State.RELAYING)

    def _expect(self, state: State) -> None:
        if self.state is not state:
            raise InvalidInput(f"expected {state}, was {self.state}")

    def _end(self, mood: Mood, now: float) -> Ended:
        left, self.state, self.mood = self.state, State.DONE, mood
        return Ended(mood, single_usage(self.started, now, mood, self.blur_seconds), left)
