"""What a session asks its connection's shell to do; the shell does it and decides nothing.

Actions are executed in order. A `Perform` is always last: the shell runs the op in the store
and hands the result back to `Session.complete` (or the failure to `session.store_failed`), which
returns the next actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from wormhole_mailbox.core.errors import ErrorKind
from wormhole_mailbox.core.limits import REFUSAL_REASONS
from wormhole_mailbox.core.ops import Key, Op

Frame = dict[str, Any]


@dataclass(frozen=True)
class Send:
    """Queue a frame for the client."""

    frame: Frame


@dataclass(frozen=True)
class Subscribe:
    """Receive live messages of this mailbox, held back until `Replayed`.

    Issued before the `open` reaches the store, so a message stored meanwhile is either in the
    replay or held, never missed.
    """

    key: Key


@dataclass(frozen=True)
class Unsubscribe:
    """Stop receiving live messages (no-op when not subscribed)."""


@dataclass(frozen=True)
class Replayed:
    """The replay boundary: messages `seqs` are queued; release held live ones not among them."""

    seqs: tuple[int, ...]


@dataclass(frozen=True)
class ReplayRest:
    """More messages follow the `open`'s first page: stream the rest of the mailbox (messages
    after seq `after`) from the store, a page at a time as the client reads them, then mark
    the replay boundary as `Replayed` would, with `seqs` and every seq streamed."""

    after: int
    seqs: tuple[int, ...]


@dataclass(frozen=True)
class Pause:
    """Read nothing more from the client for `seconds` (it keeps sending refused frames)."""

    seconds: float


@dataclass(frozen=True)
class Perform:
    """Run `op` in the store; `orig` is the command, echoed if it fails."""

    op: Op
    orig: Frame


@dataclass(frozen=True)
class CloseConnection:
    """Close the WebSocket; with `flush`, frames already queued are written first."""

    code: int
    reason: str
    flush: bool


class Metric(Enum):
    COMMANDS = "commands"
    ERRORS = "errors"
    MOODS = "moods"
    DROPPED = "dropped"
    REFUSALS = "refusals"


@dataclass(frozen=True)
class Count:
    """Increment a metric; `label` is one of `LABELS[metric]`."""

    metric: Metric
    label: str


Action = (Send | Subscribe | Unsubscribe | Replayed | ReplayRest | Pause | Perform
          | CloseConnection | Count)

COMMANDS = ("ping", "bind", "list", "allocate", "claim", "release", "open", "add", "close",
            "submit-permissions")
MOODS = ("happy", "lonely", "errory", "scary", "unwelcome")
DROP_REASONS = ("handshake_timeout", "bad_upgrade", "head_too_large", "too_slow", "write_timeout",
                "ping_timeout", "permission_denied", "database", "command_timeout",
                "protocol_error", "invalid_utf8", "too_big")

# Every label each counter can carry: client strings never become label values.
LABELS: dict[Metric, tuple[str, ...]] = {
    Metric.COMMANDS: (*COMMANDS, "other", "invalid"),
    Metric.ERRORS: tuple(kind.value for kind in ErrorKind),
    Metric.MOODS: (*MOODS, "none", "other"),
    Metric.DROPPED: DROP_REASONS,
    Metric.REFUSALS: REFUSAL_REASONS,
}


def command_label(kind: object) -> str:
    """`invalid`: not a JSON object with a string type; `other`: a type we do not know."""
    if not isinstance(kind, str):
        return "invalid"
    return kind if kind in COMMANDS else "other"


def mood_label(mood: str | None) -> str:
    if mood is None:
        return "none"
    return mood if mood in MOODS else "other"
