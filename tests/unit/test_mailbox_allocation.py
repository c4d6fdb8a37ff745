"""Nameplate allocation (docs/mailbox-protocol.md §5.6) and validation (§6.1), with a seeded random
generator."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import pytest
from wormhole_mailbox.core.allocation import (
    AllocationExhausted,
    choose_nameplate,
    is_valid_nameplate,
)


def names(low: int, high: int) -> set[str]:
    return {str(n) for n in range(low, high + 1)}


class Everything:
    """A `taken` collection that contains every name."""

    def __contains__(self, item: object) -> bool:
        return True

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[str]:
        return iter(())


def test_fresh_app_gets_one_digit() -> None:
    rng = random.Random(1)
    for _ in range(200):
        assert choose_nameplate(set(), rng) in names(1, 9)


def test_one_digit_choice_is_uniform_over_the_free_numbers() -> None:
    rng = random.Random(42)
    counts = Counter(choose_nameplate(set(), rng) for _ in range(9000))
    assert set(counts) == names(1, 9)
    assert all(800 < c < 1200 for c in counts.values()), counts


def test_only_free_numbers_are_picked() -> None:
    rng = random.Random(7)
    taken = names(1, 9) - {"4", "8"}
    picks = {choose_nameplate(taken, rng) for _ in range(100)}
    assert picks == {"4", "8"}


def test_choice_is_reproducible_with_a_seed() -> None:
    a = [choose_nameplate(set(), random.Random(5)) for _ in range(3)]
    b = [choose_nameplate(set(), random.Random(5)) for _ in range(3)]
    assert a == b


def test_tenth_nameplate_gets_two_digits() -> None:
    rng = random.Random(3)
    picks = [choose_nameplate(names(1, 9), rng) for _ in range(500)]
    assert all(p in names(10, 99) for p in picks)
    assert len(set(picks)) > 50  # spread over the width, not a fixed pick


def test_three_digits_after_two() -> None:
    rng = random.Random(3)
    assert choose_nameplate(names(1, 99), rng) in names(100, 999)


def test_zero_and_leading_zero_names_do_not_count_as_taken() -> None:
    rng = random.Random(3)
    assert choose_nameplate({"0", "01", "001"}, rng) in names(1, 9)


def test_wide_range_after_999() -> None:
    rng = random.Random(11)
    taken = names(1, 999)
    for _ in range(50):
        name = choose_nameplate(taken, rng)
        assert 1000 <= int(name) <= 999_999
        assert name not in taken


def test_exhaustion_raises() -> None:
    with pytest.raises(AllocationExhausted):
        choose_nameplate(Everything(), random.Random(0))


@pytest.mark.parametrize("name", ["0", "7", "07", "123", "9" * 40])
def test_valid(name: str) -> None:
    assert is_valid_nameplate(name)


@pytest.mark.parametrize(
    "name", ["", "9" * 41, "a", "1a", "+1", "-1", "1.0", " 1", "1\n", "\u0663", "\u0967\u0968",
             "\uff17", "\u00b2"],
)
def test_invalid(name: str) -> None:
    assert not is_valid_nameplate(name)
