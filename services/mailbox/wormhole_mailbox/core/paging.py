"""How much of a mailbox one read returns: pages bounded in octets as well as in messages.

A mailbox may hold hundreds of megabytes when its byte cap is raised, so a page counted in
messages alone can be any size: one page is what the database answers at once, what the
server holds for one opener, and what a batch's single jsonb answer carries for every `open`
in it. Sans-IO: the rule (`page_length`) is what `mb_page` (migrations) does in SQL, and the
integration tests check that the two agree.

A message costs the octets of its body, side, phase and id (as JSON text): what it takes in a
page, give or take the frame's fixed fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_PAGE_OCTETS = 1 << 20
DEFAULT_PAGE_MESSAGES = 100
DEFAULT_BATCH_OCTETS = 16 << 20


@dataclass(frozen=True)
class PageBounds:
    """What one page may hold, and what the first pages of all opens in one batch may."""

    octets: int = DEFAULT_PAGE_OCTETS  # a page holds at least one message whatever its size
    messages: int = DEFAULT_PAGE_MESSAGES
    batch_octets: int = DEFAULT_BATCH_OCTETS

    def __post_init__(self) -> None:
        if min(self.octets, self.messages, self.batch_octets) < 1:
            raise ValueError("page bounds must be at least 1")

    def open_octets(self, opens: int) -> int:
        """The octets each `open` of a batch of `opens` may answer with: a page, or an equal
        share of the batch's bound when the opens would pass it together. A share smaller
        than the first message answers no message: the replay reads it as its next page."""
        return min(self.octets, self.batch_octets // max(opens, 1))


def page_length(costs: Sequence[int], *, octets: int, messages: int,
                at_least_one: bool) -> int:
    """How many of the next messages (costing `costs`, in order) make the page: the longest
    run whose costs add up to at most `octets`, at most `messages` long; at least one message
    if `at_least_one` (a replay's page, so it always moves on)."""
    total = 0
    for n, cost in enumerate(costs[:messages]):
        total += cost
        if total > octets:
            return 1 if n == 0 and at_least_one else n
    return min(len(costs), messages)
