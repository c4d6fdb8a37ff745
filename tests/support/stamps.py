"""Minting hashcash stamps, as a client with `MAILBOX_PERMISSIONS=hashcash` must."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from wormhole_mailbox.core.hashcash import leading_zero_bits


def mint_stamp(resource: str, bits: int, now: float) -> str:
    """Find a valid stamp (costs about 2**bits hashes)."""
    date = datetime.fromtimestamp(now, UTC).strftime("%y%m%d")
    rand = secrets.token_hex(8)
    counter = 0
    while True:
        stamp = f"1:{bits}:{date}:{resource}::{rand}:{counter:x}"
        if leading_zero_bits(hashlib.sha1(stamp.encode()).digest()) >= bits:
            return stamp
        counter += 1
