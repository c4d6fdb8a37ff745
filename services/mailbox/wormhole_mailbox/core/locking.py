"""Which locks a batch of ops takes first, so that writers of several processes never deadlock.

Every writing transaction calls `mb_lock` (see the migrations) before anything else with the
keys of all it will touch; the function takes them in one global order. Keys holding a string
PostgreSQL cannot hold (a NUL, a lone surrogate) are left out: the op carrying it fails alone
when its own text is parsed, so it needs no lock, and taking the locks never fails because of
one client's value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wormhole_mailbox.core.ops import Add, Allocate, Claim, Close, Op, Open, Release

Query = tuple[str, tuple[Any, ...]]

LOCK_SQL = "SELECT mb_lock(%s, %s, %s, %s, %s, %s, %s)"


def _sendable(*texts: str) -> bool:
    for text in texts:
        if "\x00" in text:
            return False
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


@dataclass
class LockKeys:
    alloc_apps: list[str] = field(default_factory=list)
    nameplates: list[tuple[str, str]] = field(default_factory=list)  # claimed or released
    mailboxes: list[tuple[str, str]] = field(default_factory=list)  # written
    retiring: list[tuple[str, str]] = field(default_factory=list)  # may retire, with nameplates

    def __bool__(self) -> bool:
        return bool(self.alloc_apps or self.nameplates or self.mailboxes or self.retiring)

    def query(self) -> Query:
        return (LOCK_SQL, self.params())

    def as_text(self) -> list[bytes]:
        """`mb_lock`'s arguments as text parameters (array literals, UTF-8)."""
        return [_array_literal(keys) for keys in self.params()]

    def params(self) -> tuple[list[str], ...]:
        """`mb_lock`'s arguments."""
        return (
            self.alloc_apps,
            [a for a, _ in self.nameplates], [n for _, n in self.nameplates],
            [a for a, _ in self.mailboxes], [m for _, m in self.mailboxes],
            [a for a, _ in self.retiring], [m for _, m in self.retiring],
        )


def _array_literal(texts: list[str]) -> bytes:
    """A `text[]` in PostgreSQL's input syntax: every element quoted, `"` and `\\` escaped."""
    quoted = ('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in texts)
    return ("{" + ",".join(quoted) + "}").encode("utf-8")


def lock_keys(ops: list[Op]) -> LockKeys:
    keys = LockKeys()
    for op in ops:
        match op:
            case Allocate() if _sendable(op.app):
                keys.alloc_apps.append(op.app)
            case Claim() | Release() if _sendable(op.app, op.nameplate):
                keys.nameplates.append((op.app, op.nameplate))
            case Open() | Add() if _sendable(op.app, op.mailbox):
                keys.mailboxes.append((op.app, op.mailbox))
            case Close() if _sendable(op.app, op.mailbox):
                keys.mailboxes.append((op.app, op.mailbox))
                keys.retiring.append((op.app, op.mailbox))
    return keys
