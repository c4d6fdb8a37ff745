"""Decoding a client's frame and checking its fields: pure functions, no connection state.

Each failure raises `ProtocolError` with the exact text of the spec's error table.
"""

from __future__ import annotations

import json
from typing import Any

from wormhole_mailbox.errors import ErrorKind, ProtocolError

Frame = dict[str, Any]


def error_frame(text: str, orig: Any) -> Frame:
    return {"type": "error", "error": text, "orig": orig}


def decode(raw: str | bytes) -> Any:
    """The frame's JSON value; raises ValueError (or a subclass) or RecursionError."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return json.loads(raw, parse_constant=_reject_constant)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def malformed(text: str) -> ProtocolError:
    return ProtocolError(ErrorKind.MALFORMED, text)


def storable(value: str, key: str) -> str:
    """PostgreSQL text holds no NUL and only valid UTF-8 (no lone surrogates)."""
    if "\x00" in value:
        raise malformed(f"'{key}' must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise malformed(f"'{key}' must be valid Unicode") from None
    return value


def storable_json(value: Any, key: str) -> Any:
    """The same for every string inside a JSON value stored as jsonb (a message `id`)."""
    if isinstance(value, str):
        storable(value, key)
    elif isinstance(value, list):
        for item in value:
            storable_json(item, key)
    elif isinstance(value, dict):
        for name, item in value.items():
            storable(name, key)
            storable_json(item, key)
    return value


def string(msg: Frame, key: str, missing: str) -> str:
    if key not in msg:
        raise malformed(missing)
    value = msg[key]
    if not isinstance(value, str):
        raise malformed(f"'{key}' must be a string")
    return storable(value, key)


def optional_string(msg: Frame, key: str) -> str | None:
    value = msg.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise malformed(f"'{key}' must be a string")
    return storable(value, key)


def client_version(msg: Frame) -> tuple[str | None, str | None]:
    value = msg.get("client_version")
    if value is None:
        return None, None
    if not isinstance(value, list) or len(value) < 2:
        raise malformed("'client_version' must be a list of [implementation, version]")
    return (storable(str(value[0]), "client_version"),
            storable(str(value[1]), "client_version"))
