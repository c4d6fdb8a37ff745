"""Nameplate allocation: the shortest free number, chosen at random within its width."""

from __future__ import annotations

import random
import re
from collections.abc import Collection

# ASCII digits only: the reference's `\d` also admits other scripts' digits
# (docs/mailbox-protocol.md §6.1).
_NAMEPLATE = re.compile(r"[0-9]{1,40}")

WIDTHS = ((1, 9), (10, 99), (100, 999))
WIDE_RANGE = (1000, 999_999)
WIDE_TRIES = 1000


class AllocationExhausted(Exception):
    """Every short number is taken and random picks in the wide range kept colliding."""


def is_valid_nameplate(name: str) -> bool:
    return _NAMEPLATE.fullmatch(name) is not None


def choose_nameplate(taken: Collection[str], rng: random.Random) -> str:
    """Pick a free nameplate given the names that exist in the app."""
    for low, high in WIDTHS:
        free = [n for n in range(low, high + 1) if str(n) not in taken]
        if free:
            return str(rng.choice(free))
    for _ in range(WIDE_TRIES):
        name = str(rng.randint(*WIDE_RANGE))
        if name not in taken:
            return name
    raise AllocationExhausted("no free nameplate")
