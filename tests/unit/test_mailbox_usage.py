"""Usage records: results, waiting/total times and blurring (docs/mailbox-protocol.md §7)."""

from __future__ import annotations

import pytest
from wormhole_mailbox.core.usage import (
    MailboxUsage,
    NameplateUsage,
    blur,
    mailbox_result,
    mailbox_usage,
    nameplate_result,
    nameplate_usage,
    timing,
)


def test_blur_rounds_down() -> None:
    assert blur(7199.9, 3600) == 3600
    assert blur(7200.0, 3600) == 7200
    assert blur(1_700_000_123.25, 60) == 1_700_000_100


@pytest.mark.parametrize("period", [None, 0])
def test_no_blur(period: float | None) -> None:
    assert blur(1234.5678, period) == 1234.5678


def test_timing_one_side() -> None:
    t = timing([100.0], 130.0)
    assert (t.started, t.waiting_time, t.total_time) == (100.0, None, 30.0)


def test_timing_uses_the_two_earliest_in_any_order() -> None:
    t = timing([105.0, 100.0, 103.0], 110.0)
    assert (t.started, t.waiting_time, t.total_time) == (100.0, 3.0, 10.0)


@pytest.mark.parametrize(
    ("sides", "pruned", "crowded", "expected"),
    [
        (1, False, False, "lonely"),
        (2, False, False, "happy"),
        (1, True, False, "pruney"),
        (2, True, False, "pruney"),
        (3, False, False, "crowded"),
        (3, True, False, "crowded"),
        (2, False, True, "crowded"),
        (2, True, True, "crowded"),
    ],
)
def test_nameplate_result(sides: int, pruned: bool, crowded: bool, expected: str) -> None:
    assert nameplate_result(sides, pruned=pruned, crowded=crowded) == expected


@pytest.mark.parametrize(
    ("moods", "pruned", "crowded", "expected"),
    [
        ([], False, False, "quiet"),
        ([None], False, False, "lonely"),
        (["happy"], False, False, "lonely"),
        (["happy", "happy"], False, False, "happy"),
        ([None, None], False, False, "happy"),
        (["happy", "whatever"], False, False, "happy"),
        (["happy", "lonely"], False, False, "lonely"),
        (["lonely", "errory"], False, False, "errory"),
        (["errory", "lonely"], False, False, "errory"),
        (["scary", "errory"], False, False, "scary"),
        (["lonely", "scary"], False, False, "scary"),
        (["errory"], False, False, "errory"),
        (["scary", "scary"], True, False, "pruney"),
        ([None], True, False, "pruney"),
        (["scary", "happy"], True, True, "crowded"),
        (["happy", "happy", "happy"], False, False, "crowded"),
        (["happy", "happy"], False, True, "crowded"),
    ],
)
def test_mailbox_result_precedence(
    moods: list[str | None], pruned: bool, crowded: bool, expected: str
) -> None:
    assert mailbox_result(moods, pruned=pruned, crowded=crowded) == expected


def test_nameplate_usage_record() -> None:
    record = nameplate_usage("app", [1000.5, 1010.0], 1100.0, pruned=False, crowded=False,
                             blur_seconds=None)
    assert record == NameplateUsage("app", 1000.5, 9.5, 99.5, "happy")


def test_nameplate_usage_blurs_started_only() -> None:
    record = nameplate_usage("app", [3700.5], 3800.0, pruned=True, crowded=False,
                             blur_seconds=3600)
    assert record == NameplateUsage("app", 3600, None, 99.5, "pruney")


def test_mailbox_usage_record() -> None:
    record = mailbox_usage("app", for_nameplate=True, added=[10.0, 4.0], moods=["happy", "scary"],
                           now=20.0, pruned=False, crowded=False, blur_seconds=None)
    assert record == MailboxUsage("app", True, 4.0, 6.0, 16.0, "scary")


def test_mailbox_usage_blurred() -> None:
    record = mailbox_usage("app", for_nameplate=False, added=[125.0], moods=["errory"],
                           now=125.0, pruned=False, crowded=False, blur_seconds=60)
    assert record == MailboxUsage("app", False, 120, None, 0.0, "errory")


def test_mailbox_without_sides_does_not_break_the_record() -> None:
    record = mailbox_usage("app", for_nameplate=True, added=[], moods=[], now=50.0, pruned=True,
                           crowded=False, blur_seconds=None)
    assert record == MailboxUsage("app", True, 50.0, None, 0.0, "pruney")
