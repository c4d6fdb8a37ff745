"""Usage records and blurring, with explicit times (docs/transit-protocol.md §9)."""

from __future__ import annotations

import pytest
from wormhole_transit.core.usage import (
    Mood,
    Usage,
    blur_bytes,
    blur_started,
    pair_usage,
    single_usage,
)


def test_pair_usage_uses_earlier_start_and_counts_both_ways() -> None:
    usage = pair_usage(100.0, 103.5, 110.0, 12345, None)
    assert usage == Usage(started=100.0, total_time=10.0, waiting_time=3.5, total_bytes=12345,
                          mood=Mood.HAPPY)
    assert pair_usage(103.5, 100.0, 110.0, 0, None).waiting_time == 3.5


@pytest.mark.parametrize("mood", [Mood.LONELY, Mood.ERRORY, Mood.IMPATIENT, Mood.REDUNDANT,
                                  Mood.EMPTY])
def test_single_usage_has_no_waiting_time_and_no_bytes(mood: Mood) -> None:
    assert single_usage(50.0, 52.25, mood, None) == Usage(50.0, 2.25, None, 0, mood)


def test_json_fields_in_reference_order() -> None:
    fields = pair_usage(1.0, 2.0, 4.0, 7, None).as_json_fields()
    assert list(fields) == ["started", "total_time", "waiting_time", "total_bytes", "mood"]
    assert fields["mood"] == "happy"


def test_blurred_pair_usage() -> None:
    usage = pair_usage(1795290226.75, 1795290227.0, 1795290230.0, 21028154, 3600)
    assert usage.started == 1795287600.0
    assert isinstance(usage.started, float)
    assert usage.total_bytes == 22_000_000
    assert usage.total_time == pytest.approx(3.25)
    assert usage.waiting_time == 0.25


@pytest.mark.parametrize(("size", "blurred"), [
    (0, 0), (1, 10_000), (12_345, 20_000), (999_999, 1_000_000), (1_000_000, 1_000_000),
    (1_000_001, 2_000_000), (999_999_999, 1_000_000_000), (1_000_000_000, 1_000_000_000),
    (1_000_000_001, 1_100_000_000),
])
def test_blur_bytes_rounds_up_into_buckets(size: int, blurred: int) -> None:
    assert blur_bytes(size, 3600) == blurred
    assert blur_bytes(size, None) == size


def test_blur_started() -> None:
    assert blur_started(7199.9, 3600) == 3600.0
    assert blur_started(7199.9, None) == 7199.9
