"""Every command in a valid form, one wrong value of each class a field can take, and the
valid commands to send after one: the sweeps of the session (unit) and of the server
(integration) spoil one field at a time with these."""

from __future__ import annotations

from typing import Any

MISSING = object()  # the field left out of the command

BAD_VALUES: dict[str, Any] = {
    "missing": MISSING,
    "null": None,
    "number": 7,
    "bool": True,
    "list": ["1"],
    "object": {"1": "1"},
    "empty": "",
    "nul": "1\x00",
    "surrogate": "1\ud800",
    "control": "1\x1b",
    "long": "1" * 100_000,  # past every field's limit but the body's, within one frame
}

VALID: dict[str, dict[str, Any]] = {
    "ping": {"ping": 1},
    "bind": {"appid": "app", "side": "side1", "client_version": ["python", "0.24.0"]},
    "list": {},
    "allocate": {},
    "claim": {"nameplate": "5"},
    "release": {"nameplate": "5"},
    "open": {"mailbox": "mb"},
    "add": {"phase": "pake", "body": "aa", "id": "0001"},
    "close": {"mailbox": "mb", "mood": "happy"},
}

# (command, field) for every field of every command
SPOILED = [(kind, key) for kind, command in VALID.items() for key in command]

FOLLOW_UPS: list[dict[str, Any]] = [
    {"type": "ping", "ping": 2},
    {"type": "bind", "appid": "app", "side": "side1"},
    {"type": "list"},
    {"type": "allocate"},
    {"type": "claim", "nameplate": "5"},
    {"type": "release"},
    {"type": "release", "nameplate": "5"},
    {"type": "open", "mailbox": "mb"},
    {"type": "add", "phase": "pake", "body": "aa"},
    {"type": "close"},
    {"type": "close", "mailbox": "mb", "mood": "happy"},
]


def spoiled(kind: str, key: str, value: Any) -> dict[str, Any]:
    """`kind`'s valid command with `key` set to `value` (or left out: `MISSING`)."""
    msg = {"type": kind, **VALID[kind]}
    if value is MISSING:
        del msg[key]
    else:
        msg[key] = value
    return msg
