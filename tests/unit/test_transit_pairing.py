"""Pairing rules, moods and usage records, with explicit times (spec 1.5, 3)."""

from __future__ import annotations

import pytest
from wormhole_transit.handshake import Handshake
from wormhole_transit.pairing import (
    Mood,
    Paired,
    PairingTable,
    Usage,
    Waiting,
    blur_bytes,
    blur_started,
    pair_usage,
    single_usage,
)

T = b"t" * 64
U = b"u" * 64


def hs(side: bytes | None, token: bytes = T) -> Handshake:
    return Handshake(token, side)


def test_different_sides_pair() -> None:
    table: PairingTable[str] = PairingTable()
    assert table.arrive("a", hs(b"1" * 16)) == Waiting()
    assert table.waiting_tokens == 1
    assert table.arrive("b", hs(b"2" * 16)) == Paired("a", [])
    assert table.waiting_tokens == 0
    assert not table.is_waiting("a")


@pytest.mark.parametrize(("first", "second"), [
    (None, None), (None, b"2" * 16), (b"1" * 16, None),
])
def test_legacy_pairs_with_anything(first: bytes | None, second: bytes | None) -> None:
    table: PairingTable[str] = PairingTable()
    table.arrive("a", hs(first))
    assert table.arrive("b", hs(second)) == Paired("a", [])


def test_same_side_waits_then_third_picks_one_and_drops_the_other() -> None:
    table: PairingTable[str] = PairingTable()
    same = b"1" * 16
    assert table.arrive("a", hs(same)) == Waiting()
    assert table.arrive("b", hs(same)) == Waiting()
    assert table.waiting_tokens == 1
    assert table.waiting_connections == 2
    result = table.arrive("c", hs(b"3" * 16))
    assert isinstance(result, Paired)
    assert {result.partner, *result.redundant} == {"a", "b"}
    assert len(result.redundant) == 1
    assert table.waiting_connections == 0


def test_token_forgotten_after_pairing_third_waits_afresh() -> None:
    table: PairingTable[str] = PairingTable()
    table.arrive("a", hs(b"1" * 16))
    table.arrive("b", hs(b"2" * 16))
    assert table.arrive("c", hs(b"3" * 16)) == Waiting()
    assert table.arrive("d", hs(b"4" * 16)) == Paired("c", [])


def test_tokens_are_case_sensitive_and_sides_are_per_token() -> None:
    table: PairingTable[str] = PairingTable()
    table.arrive("a", hs(b"1" * 16, b"a" * 64))
    assert table.arrive("b", hs(b"2" * 16, b"A" * 64)) == Waiting()
    assert table.arrive("c", hs(b"1" * 16, U)) == Waiting()
    assert table.waiting_tokens == 3


def test_departed_connection_does_not_pair() -> None:
    table: PairingTable[str] = PairingTable()
    table.arrive("a", hs(b"1" * 16))
    assert table.leave("a")
    assert not table.leave("a")
    assert table.waiting_tokens == 0
    assert table.arrive("b", hs(b"2" * 16)) == Waiting()


def test_leave_keeps_other_waiters() -> None:
    table: PairingTable[str] = PairingTable()
    table.arrive("a", hs(b"1" * 16))
    table.arrive("b", hs(b"1" * 16))
    table.leave("a")
    assert table.arrive("c", hs(b"2" * 16)) == Paired("b", [])


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
