"""Hashcash v1 stamps for the optional admission step (docs/mailbox-protocol.md §5.3).

No reference server implements this; the Rust client does. A fresh random resource per
connection means a stamp is only good on the connection it was minted for.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

# A stamp whose date we can read must be this close to now; unreadable dates are accepted
# (clients disagree on the format: Rust sends base64 of YYYYMMDD).
MAX_STAMP_AGE = timedelta(days=2)


class StampRejected(Exception):
    """The stamp does not grant permission; the message says why."""


def new_resource() -> str:
    """64 random bits, base64 without ':' (stamps are ':'-separated)."""
    return base64.b64encode(os.urandom(8)).decode("ascii").rstrip("=").replace("/", "_")


def leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def _stamp_date(field: str) -> datetime | None:
    candidates = [field]
    try:
        decoded = base64.b64decode(field + "=" * (-len(field) % 4), validate=True)
        candidates.append(decoded.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        pass
    formats = {6: "%y%m%d", 8: "%Y%m%d", 10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S"}
    for text in candidates:
        fmt = formats.get(len(text))
        if fmt and text.isdigit():
            try:
                return datetime.strptime(text, fmt).replace(tzinfo=UTC)
            except ValueError:
                continue
    return None


def check_stamp(stamp: str, *, resource: str, bits: int, now: float) -> None:
    """Raise `StampRejected` unless `stamp` proves `bits` of work for `resource`."""
    fields = stamp.split(":")
    if len(fields) != 7 or fields[0] != "1":
        raise StampRejected("malformed stamp")
    try:
        claimed = int(fields[1])
    except ValueError:
        raise StampRejected("malformed stamp") from None
    if claimed < bits:
        raise StampRejected(f"stamp has {claimed} bits, {bits} required")
    if fields[3] != resource:
        raise StampRejected("stamp is for another resource")
    date = _stamp_date(fields[2])
    if date is not None and abs(datetime.fromtimestamp(now, UTC) - date) > MAX_STAMP_AGE:
        raise StampRejected("stale stamp")
    if leading_zero_bits(hashlib.sha1(stamp.encode("utf-8")).digest()) < claimed:
        raise StampRejected("stamp does not have the work it claims")


class SpentStamps:
    """Stamps already accepted by this process, so one cannot be presented twice."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def spend(self, stamp: str) -> None:
        if stamp in self._seen:
            raise StampRejected("stamp already used")
        self._seen[stamp] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
