"""Outbound frames as text: strict JSON, encoded once, stamped with `server_tx` when written.

Kept apart from `validation` (which reads what clients send): a frame is encoded when it is
queued and stamped just before its write, so a burst shares one clock reading.
"""

from __future__ import annotations

import json
import math
from typing import Any

from wormhole_mailbox.core.actions import Frame

_STRICT = json.JSONEncoder(allow_nan=False)  # once: json.dumps with options makes one per call


def encode_unstamped(frame: Frame) -> str:
    """The text of one outbound frame (a non-empty object, no `server_tx` yet): strict JSON,
    ASCII-escaped (so a lone surrogate can never make the UTF-8 encoding fail). A non-finite
    number, which validated input never contains, becomes null instead of non-JSON."""
    try:
        return _STRICT.encode(frame)
    except ValueError:
        return _STRICT.encode(_finite(frame))


def stamp(text: str, server_tx: float) -> str:
    """`server_tx` added to an encoded frame just before it is written (a finite float's repr
    is a JSON number)."""
    return f'{text[:-1]}, "server_tx": {server_tx!r}}}'


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value
