"""Hashcash v1 stamps (docs/mailbox-protocol.md §5.3)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest
from wormhole_mailbox.core.hashcash import (
    SpentStamps,
    StampRejected,
    check_stamp,
    leading_zero_bits,
    new_resource,
)

from tests.support.stamps import mint_stamp

NOW = datetime(2026, 5, 15, 12, 0, tzinfo=UTC).timestamp()
RESOURCE = "abcDEF12"


def sha1_bits(stamp: str) -> int:
    return leading_zero_bits(hashlib.sha1(stamp.encode()).digest())


def search(prefix: str, bits: int, *, enough: bool) -> str:
    """The first `prefix + counter` whose hash does (or does not) have `bits` zero bits."""
    counter = 0
    while True:
        stamp = f"{prefix}{counter:x}"
        if (sha1_bits(stamp) >= bits) == enough:
            return stamp
        counter += 1


def test_leading_zero_bits() -> None:
    assert leading_zero_bits(b"\x00\x00") == 16
    assert leading_zero_bits(b"\x80\x00") == 0
    assert leading_zero_bits(b"\x00\x01") == 15
    assert leading_zero_bits(b"\x0f") == 4


def test_minted_stamp_is_accepted_and_well_formed() -> None:
    stamp = mint_stamp(RESOURCE, 10, NOW)
    fields = stamp.split(":")
    assert len(fields) == 7 and fields[0] == "1" and fields[1] == "10"
    assert fields[3] == RESOURCE
    assert sha1_bits(stamp) >= 10
    check_stamp(stamp, resource=RESOURCE, bits=10, now=NOW)


def test_more_bits_than_required_is_fine() -> None:
    check_stamp(mint_stamp(RESOURCE, 12, NOW), resource=RESOURCE, bits=8, now=NOW)


def test_claimed_bits_below_required_is_refused() -> None:
    with pytest.raises(StampRejected, match="bits"):
        check_stamp(mint_stamp(RESOURCE, 4, NOW), resource=RESOURCE, bits=8, now=NOW)


def test_stamp_that_lacks_the_claimed_work_is_refused() -> None:
    stamp = search(f"1:16:260515:{RESOURCE}::rand:", 16, enough=False)
    with pytest.raises(StampRejected, match="work"):
        check_stamp(stamp, resource=RESOURCE, bits=8, now=NOW)


def test_other_resource_is_refused() -> None:
    with pytest.raises(StampRejected, match="resource"):
        check_stamp(mint_stamp("other", 8, NOW), resource=RESOURCE, bits=8, now=NOW)


@pytest.mark.parametrize("stamp", ["", "1:8", "1:8:260515:r::x", "0:8:260515:r::x:0",
                                   "1:eight:260515:r::x:0", "1:8:260515:r::x:0:extra"])
def test_malformed_is_refused(stamp: str) -> None:
    with pytest.raises(StampRejected, match="malformed"):
        check_stamp(stamp, resource="r", bits=8, now=NOW)


@pytest.mark.parametrize("date", ["260510", "20260510", "2605101200", "260510120000"])
def test_stale_readable_dates_are_refused(date: str) -> None:
    stamp = search(f"1:8:{date}:{RESOURCE}::rand:", 8, enough=True)
    with pytest.raises(StampRejected, match="stale"):
        check_stamp(stamp, resource=RESOURCE, bits=8, now=NOW)


def test_future_dates_are_refused_too() -> None:
    stamp = search(f"1:8:260601:{RESOURCE}::rand:", 8, enough=True)
    with pytest.raises(StampRejected, match="stale"):
        check_stamp(stamp, resource=RESOURCE, bits=8, now=NOW)


@pytest.mark.parametrize("date", ["260515", "260514", "20260516", "2605151159"])
def test_recent_dates_are_accepted(date: str) -> None:
    stamp = search(f"1:8:{date}:{RESOURCE}::rand:", 8, enough=True)
    check_stamp(stamp, resource=RESOURCE, bits=8, now=NOW)


def test_rust_base64_date_is_understood() -> None:
    fresh = base64.b64encode(b"20260515").decode().rstrip("=")
    stale = base64.b64encode(b"20250515").decode().rstrip("=")
    check_stamp(search(f"1:8:{fresh}:{RESOURCE}::r:", 8, enough=True),
                resource=RESOURCE, bits=8, now=NOW)
    with pytest.raises(StampRejected, match="stale"):
        check_stamp(search(f"1:8:{stale}:{RESOURCE}::r:", 8, enough=True),
                    resource=RESOURCE, bits=8, now=NOW)


def test_unreadable_dates_are_accepted() -> None:
    check_stamp(search(f"1:8:whenever:{RESOURCE}::r:", 8, enough=True),
                resource=RESOURCE, bits=8, now=NOW)


def test_spent_stamps_refuse_reuse() -> None:
    spent = SpentStamps()
    spent.spend("a")
    spent.spend("b")
    with pytest.raises(StampRejected, match="used"):
        spent.spend("a")


def test_spent_stamps_forget_the_oldest_beyond_capacity() -> None:
    spent = SpentStamps(capacity=2)
    for stamp in ("a", "b", "c"):
        spent.spend(stamp)
    spent.spend("a")  # forgotten, so accepted again
    with pytest.raises(StampRejected):
        spent.spend("c")


def test_new_resource_is_random_and_colon_free() -> None:
    resources = {new_resource() for _ in range(100)}
    assert len(resources) == 100
    for resource in resources:
        assert ":" not in resource and "/" not in resource and "=" not in resource
        assert len(resource) == 11  # 64 bits of base64
