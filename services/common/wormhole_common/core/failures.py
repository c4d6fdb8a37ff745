"""Logging failures during an outage: one line per kind, then a periodic summary.

When the database is down every op fails the same way; a line (or a traceback) per op buries
the one line that says what happened. The first failure of each kind is logged at once, later
ones are counted and summarised at most once per `interval`, and recovery is logged once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable


class FailureLog:
    def __init__(
        self, log: logging.Logger, what: str, *, interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.what = what
        self.interval = interval
        self.clock = clock
        self._seen: set[str] = set()  # kinds logged since the last recovery
        self._unreported: Counter[str] = Counter()
        self._total = 0
        self._last_summary = clock()

    def failed(self, kind: str, detail: str) -> None:
        self._total += 1
        if kind not in self._seen:
            self._seen.add(kind)
            self.log.warning("%s failed (%s): %s", self.what, kind, detail)
        else:
            self._unreported[kind] += 1
        now = self.clock()
        if self._unreported and now - self._last_summary >= self.interval:
            self.log.warning("%s: %s more failures in the last %.0f s (%s)", self.what,
                             sum(self._unreported.values()), now - self._last_summary,
                             _describe(self._unreported))
            self._unreported.clear()
            self._last_summary = now

    def succeeded(self) -> None:
        if self._total:
            self.log.warning("%s works again after %d failures", self.what, self._total)
            self._seen.clear()
            self._unreported.clear()
            self._total = 0
            self._last_summary = self.clock()


def _describe(counts: Counter[str]) -> str:
    return ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items()))
