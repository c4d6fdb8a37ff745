"""A batch of ops as one statement, `mb_batch`, and the reading of its answer.

What an op does is defined once, in SQL (`mb_op` in `migrations/0004_one_statement.sql`).
Here each op is encoded once (a line of JSON text) and its answer read once. PostgreSQL runs
each op in a subtransaction of its own, so an op that fails (a value it cannot store, an index
row too big) answers its SQLSTATE and leaves nothing behind while the others commit.

The text sent is ASCII (JSON escapes everything else), so sending it never fails; a value
PostgreSQL cannot hold (a NUL, a lone surrogate, `Infinity`) fails its own op when that op's
line is parsed, with a data exception (SQLSTATE class 22): the client's error. An op that
cannot even be encoded here (nesting past Python's recursion limit) fails alone before the
statement is sent. Sans-IO: the caller sends `Statement.params` and hands back the answer.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

from wormhole_mailbox.core import usage
from wormhole_mailbox.core.errors import ErrorKind
from wormhole_mailbox.core.locking import lock_keys
from wormhole_mailbox.core.ops import (
    SKIPPED,
    Add,
    Allocate,
    Bind,
    Claim,
    Close,
    ListNameplates,
    Message,
    Op,
    Open,
    Page,
    Refused,
    Release,
    Result,
)
from wormhole_mailbox.core.paging import PageBounds
from wormhole_mailbox.core.usage import Records

BATCH_SQL = b"SELECT mb_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"

# SQLSTATE class 22, "data exception": a value the op carries is wrong for PostgreSQL.
DATA_EXCEPTION = "22"

_to_json = json.JSONEncoder(separators=(",", ":")).encode  # one encoder for every op


def new_mailbox_id() -> str:
    """13 lowercase base32 characters from 8 random bytes, like the reference."""
    return base64.b32encode(os.urandom(8)).decode("ascii").lower().strip("=")


@dataclass(frozen=True)
class BatchSettings:
    """What every batch of a process carries besides its ops."""

    origin: str  # names this process in message notifications
    max_messages: int  # per mailbox; an add past either limit is refused
    max_bytes: int  # octets of all bodies in a mailbox
    pages: PageBounds  # an open answers with a first page within these
    blur_seconds: float | None  # usage times are rounded down to a multiple of this


@dataclass(frozen=True)
class Failed:
    """An op that failed alone: nothing of it was stored."""

    sqlstate: str | None  # None: it failed here (could not be encoded, or its answer read)
    reason: str

    @property
    def value_refused(self) -> bool:
        """Refused for a value it carried (a data exception): the client's error."""
        return self.sqlstate is not None and self.sqlstate.startswith(DATA_EXCEPTION)


class Statement:
    """One batch's `mb_batch` parameters, and the reading of its answer.

    `after[i]`, if given and not None, is the index of the op that op i depends on: op i runs
    only if that one succeeded (`migrations/0005_dependent_ops.sql`), else it is `SKIPPED`.
    """

    def __init__(self, ops: list[Op], settings: BatchSettings,
                 after: list[int | None] | None = None) -> None:
        self.ops = ops
        self.results: list[Result | Failed] = [None] * len(ops)
        self.sent: list[int] = []  # indices of the ops in the statement, in order
        line_of: dict[int, int] = {}  # op index -> its 1-based line
        lines = []
        for i, op in enumerate(ops):
            depends = after[i] if after is not None else None
            if depends is not None and depends not in line_of:
                self.results[i] = SKIPPED  # what it depends on could not even be sent
                continue
            try:
                line = _to_json(_encode(op))
            except (ValueError, TypeError, RecursionError) as exc:
                self.results[i] = Failed(None, f"cannot be encoded: {type(exc).__name__}")
                continue
            lines.append(line if depends is None else f"[{line_of[depends]},{line}]")
            self.sent.append(i)
            line_of[i] = len(lines)
        opens = sum(isinstance(op, Open) for op in ops)
        blur = settings.blur_seconds
        self.params: list[bytes | None] = [
            "\n".join(lines).encode("ascii"),
            settings.origin.encode(),
            str(settings.max_messages).encode(),
            str(settings.max_bytes).encode(),
            str(settings.pages.messages).encode(),
            # the opens share what one answer may carry
            str(settings.pages.open_octets(opens)).encode(),
            repr(float(blur)).encode() if blur else None,
            *lock_keys(ops).as_text(),
        ]

    def decode(self, answer: bytes | None) -> tuple[list[Result | Failed], Records]:
        """Each op's result (or `Failed`) from `mb_batch`'s answer, and the usage records it
        wrote."""
        answers = json.loads(answer) if answer is not None else None
        if not isinstance(answers, list) or len(answers) != len(self.sent):
            raise ValueError("mb_batch answered something else than one answer per op")
        records: Records = []
        results = list(self.results)
        for i, reply in zip(self.sent, answers, strict=True):
            try:
                results[i] = _decode(self.ops[i], reply, records)
            except (ValueError, KeyError, TypeError) as exc:  # a bug, in SQL or here
                results[i] = Failed(None, f"unexpected answer {reply!r}: {exc}")
        return results, records


def _encode(op: Op) -> list[Any]:
    match op:
        case Bind():
            return ["b", op.app, op.side, op.now, op.implementation, op.version]
        case ListNameplates():
            return ["l", op.app]
        case Allocate():
            return ["n", op.app, op.side, op.now, new_mailbox_id()]
        case Claim():
            return ["c", op.app, op.nameplate, op.side, op.now, new_mailbox_id()]
        case Release():
            return ["r", op.app, op.nameplate, op.side, op.now]
        case Open():
            return ["o", op.app, op.mailbox, op.side, op.now]
        case Add():
            return ["a", op.app, op.mailbox, op.side, op.phase, op.body, op.server_rx,
                    op.msg_id]
        case Close():
            return ["x", op.app, op.mailbox, op.side, op.mood, op.now, op.implicit_open]
    raise TypeError(f"unknown op {op!r}")


def _decode(op: Op, reply: Any, records: Records) -> Result | Failed:
    """One op's answer: a SQLSTATE (it failed), or [refusal, value, usage record]."""
    if isinstance(reply, str):
        return Failed(reply, f"SQLSTATE {reply}")
    refusal, value, record = reply
    if record is not None:
        records.append(usage.from_sql(record))
    if refusal == "skipped":
        return SKIPPED
    if refusal is not None:
        return Refused.of(ErrorKind(refusal))
    match op:
        case ListNameplates():
            return [str(name) for name in value]
        case Allocate():
            return str(value[0])
        case Claim():
            return str(value)
        case Open():
            return page(value)
        case Add():
            return Message(int(value), op.side, op.phase, op.body, op.server_rx, op.msg_id)
    return None  # bind, release, close


def page(answer: Any) -> Page:
    """`mb_page`'s answer: [rows, more], each row [seq, side, phase, body, server_rx, id]."""
    rows, more = answer
    return Page([Message(*row) for row in rows], bool(more))
