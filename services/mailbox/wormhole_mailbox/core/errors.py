"""What kind of error a client was sent: a closed set, chosen where the error is raised.

The client sees the exact text (docs/mailbox-protocol.md §9); metrics and logs use the kind,
so no code ever has to recover a kind from the English text.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    MALFORMED = "malformed"  # not JSON, not an object, a field missing or of the wrong type
    TOO_DEEP = "too_deep"  # a frame nested deeper than the protocol allows
    OUT_OF_RANGE = "out_of_range"  # a number JSON cannot represent (1e400, 5000 digits)
    TOO_LONG = "too_long"  # a field longer than its limit
    BAD_CHARACTERS = "bad_characters"  # control characters, NUL, lone surrogates in a field
    REFUSED_LIMIT = "refused_limit"  # a quota of the client's address (limits.py)
    UNBOUND = "unbound"  # a command before `bind`
    UNKNOWN_TYPE = "unknown_type"
    SEQUENCE = "sequence"  # a command out of order or repeated (only one claim, ...)
    INVALID_NAMEPLATE = "invalid_nameplate"
    PERMISSION_DENIED = "permission_denied"
    CROWDED = "crowded"  # a third side
    RECLAIMED = "reclaimed"  # a side claiming a nameplate it released
    EXHAUSTED = "exhausted"  # no free nameplate to allocate
    GONE = "gone"  # an `add` to a mailbox that was retired
    FULL = "full"  # an `add` past the mailbox's message or byte limit
    UNSTORABLE = "unstorable"  # a value PostgreSQL refused (data exception) past our checks
    INTERNAL = "internal"  # the database failed
    TIMEOUT = "timeout"  # the database did not answer within the command's deadline


class ProtocolError(Exception):
    """A command the session refuses; the text goes to the client as `error`."""

    def __init__(self, kind: ErrorKind, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text


class LimitRefused(ProtocolError):
    """A command a quota of the client's address refuses; `reason` is its metric label."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(ErrorKind.REFUSED_LIMIT, text)
        self.reason = reason
