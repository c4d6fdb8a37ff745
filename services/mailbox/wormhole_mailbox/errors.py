"""What kind of error a client was sent: a closed set, chosen where the error is raised.

The client sees the exact text (spec's error table); metrics and logs use the kind, so no
code ever has to recover a kind from the English text.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    MALFORMED = "malformed"  # not JSON, not an object, a field missing or of the wrong type
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
    INTERNAL = "internal"  # the database failed
    OTHER = "other"  # a refusal the store passed on that this set does not name


class ProtocolError(Exception):
    """A command the session refuses; the text goes to the client as `error`."""

    def __init__(self, kind: ErrorKind, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text
