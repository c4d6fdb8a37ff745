"""Counts the relay keeps about itself, updated by the shell and read by metrics and the
`current` snapshot, so neither of those needs to know the server."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from wormhole_transit.core.usage import Mood


@dataclass(eq=False)
class PairStats:
    """Bytes received from both clients since `ok`, and bytes the relay holds right now."""

    total_bytes: int = 0
    buffered: int = 0


@dataclass(eq=False)
class TransitStats:
    connections_open: int = 0
    waiting_sides: int = 0  # connections with a valid handshake waiting for their partner
    waiting_tokens: int = 0  # tokens with someone waiting: the reference's `current.waiting`
    pairs: set[PairStats] = field(default_factory=set)
    finished_bytes: int = 0  # bytes of pairs that have ended
    moods: Counter[Mood] = field(default_factory=Counter)  # recorded outcomes
    refused: Counter[str] = field(default_factory=Counter)  # by reason
    timeouts: Counter[str] = field(default_factory=Counter)  # by phase: handshake, lonely

    @property
    def buffered_bytes(self) -> int:
        """Payload bytes the relay itself holds right now, over all pairs."""
        return sum(p.buffered for p in self.pairs)

    @property
    def live_bytes(self) -> int:
        """Bytes received so far by pairs still relaying."""
        return sum(p.total_bytes for p in self.pairs)
