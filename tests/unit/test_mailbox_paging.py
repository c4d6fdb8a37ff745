"""How much of a mailbox one page holds: octets and messages, at least one message for a
replay; the opens of one batch share what its answer may carry. Explicit sizes, no store."""

from __future__ import annotations

import pytest
from wormhole_mailbox.core.paging import PageBounds, page_length

MIB = 1 << 20


def replay_page(costs: list[int], octets: int = MIB, messages: int = 100) -> int:
    return page_length(costs, octets=octets, messages=messages, at_least_one=True)


def test_a_page_holds_messages_while_their_octets_fit() -> None:
    assert replay_page([400_000, 400_000, 400_000]) == 2
    assert replay_page([MIB // 2, MIB // 2, 1]) == 2  # exactly the bound fits
    assert replay_page([100] * 5) == 5  # the whole rest of the mailbox
    assert replay_page([]) == 0


def test_a_message_bigger_than_a_page_comes_alone() -> None:
    assert replay_page([1_000_100, 1_000_100]) == 1
    assert replay_page([5 * MIB, 10]) == 1
    assert replay_page([10, 5 * MIB]) == 1  # not with a small one before it


def test_a_page_holds_at_most_its_count_of_messages() -> None:
    assert replay_page([0] * 1000, messages=100) == 100
    assert replay_page([10] * 7, messages=3) == 3


def test_a_first_page_may_hold_no_message() -> None:
    """An open's first page (its share of a batch) need not move on: the replay does."""
    assert page_length([600, 10], octets=500, messages=100, at_least_one=False) == 0
    assert page_length([300, 300], octets=500, messages=100, at_least_one=False) == 1


def test_the_issue_case_is_one_message_a_page() -> None:
    """150 bodies of 1,000,000 octets (plus side, phase, id) with the default bound."""
    costs = [1_000_000 + 20] * 150
    pages, start = [], 0
    while start < len(costs):
        n = replay_page(costs[start:])
        pages.append(n)
        start += n
    assert pages == [1] * 150


@pytest.mark.parametrize(("opens", "share"), [
    (0, MIB), (1, MIB), (16, MIB), (17, (16 * MIB) // 17), (512, 32 * 1024)])
def test_the_opens_of_a_batch_share_its_bound(opens: int, share: int) -> None:
    bounds = PageBounds()
    assert bounds.open_octets(opens) == share
    assert opens * bounds.open_octets(opens) <= bounds.batch_octets


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PageBounds(octets=0)
