"""What a command asks of the state store, and what the store answers.

The session (sans-IO) turns frames into these; the store executes them in PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wormhole_mailbox.core.errors import ErrorKind


@dataclass(frozen=True)
class Bind:
    app: str
    side: str
    implementation: str | None
    version: str | None
    now: float


@dataclass(frozen=True)
class ListNameplates:
    app: str


@dataclass(frozen=True)
class Allocate:
    app: str
    side: str
    now: float


@dataclass(frozen=True)
class Claim:
    app: str
    side: str
    nameplate: str
    now: float


@dataclass(frozen=True)
class Release:
    app: str
    side: str
    nameplate: str
    now: float


@dataclass(frozen=True)
class Open:
    app: str
    side: str
    mailbox: str
    now: float


@dataclass(frozen=True)
class Add:
    app: str
    side: str
    mailbox: str
    phase: str
    body: str
    server_rx: float
    msg_id: Any


@dataclass(frozen=True)
class Close:
    app: str
    side: str
    mailbox: str
    mood: str | None
    now: float
    implicit_open: bool


Key = tuple[str, str]  # (app, mailbox): a mailbox's identity

Op = Bind | ListNameplates | Allocate | Claim | Release | Open | Add | Close


@dataclass(frozen=True)
class Message:
    """A stored message; `seq` orders it and de-duplicates live copies against replay."""

    seq: int
    side: str
    phase: str
    body: str
    server_rx: float
    msg_id: Any

    def frame(self) -> dict[str, Any]:
        return {
            "type": "message",
            "side": self.side,
            "phase": self.phase,
            "body": self.body,
            "server_rx": self.server_rx,
            "id": self.msg_id,
        }


@dataclass(frozen=True)
class Page:
    """Messages of a mailbox in order (an `open` answers with the first page), and whether
    more follow them: the replay then reads the rest (`replay.pages`)."""

    messages: list[Message]
    more: bool = False


@dataclass(frozen=True)
class Refused:
    """The store refused the command; `error` is the exact text for the client."""

    error: str
    kind: ErrorKind

    @classmethod
    def of(cls, kind: ErrorKind) -> Refused:
        """The refusal of this kind (one of `REFUSALS`: the codes the SQL functions answer,
        docs/mailbox-protocol.md §9.1), with its text for the client."""
        return cls(REFUSALS[kind], kind)


# The store's refusals: their texts for the client, by kind.
REFUSALS = {
    ErrorKind.CROWDED: "crowded",
    ErrorKind.RECLAIMED: "reclaimed",
    ErrorKind.EXHAUSTED: "no free nameplate",
    ErrorKind.FULL: "mailbox is full",
    ErrorKind.GONE: "mailbox is gone",
}

# A value the database refused (a data exception) although the session's checks let it
# through: the client's command, not the database, is at fault, and nothing of it was stored.
UNSTORABLE = Refused("a value of this command cannot be stored", ErrorKind.UNSTORABLE)


class Skipped:
    """An op that was not run because an op of the same connection it depended on did not
    succeed (docs/mailbox-protocol.md §3.3): the shell handles its command again, in order."""

    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED = Skipped()


# What each op yields on success.
Result = None | str | list[str] | Page | Message | Refused | Skipped
