"""A clean batch in one statement: every op of it goes to `mb_batch` as JSON.

Under load the client side of psycopg (a cursor, a pipeline entry and a result per statement)
cost a third of the server's CPU; one statement per batch costs the same whatever its size.
The SQL does what the ops' plans do (`store.py`), calling the same functions; what stays here
is what the plans do in Python: choosing a nameplate to allocate, and usage records.

The JSON is ASCII text, so sending it never fails; PostgreSQL parses it inside `mb_batch`'s
own exception block. If anything there fails (a NUL or a lone surrogate that jsonb refuses, an
index row too big), the function rolls its ops back and answers NULL, and so does `run`: the
caller then runs the batch op by op, where the bad op fails alone. A value JSON cannot encode
at all (a non-finite number, nesting past the recursion limit) sends the batch that way at
once (`Unsendable`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg

from wormhole_mailbox import answers
from wormhole_mailbox import records as usage_rows
from wormhole_mailbox.core import usage
from wormhole_mailbox.core.allocation import AllocationExhausted
from wormhole_mailbox.core.errors import ErrorKind
from wormhole_mailbox.core.ops import (
    Add,
    Allocate,
    Bind,
    Claim,
    Close,
    ListNameplates,
    Op,
    Open,
    Refused,
    Release,
    Result,
)
from wormhole_mailbox.locking import LockKeys
from wormhole_mailbox.records import Records

BATCH_SQL = "SELECT mb_batch(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
TAKEN_SQL = "SELECT mb_lock_and_taken(%s, %s, %s, %s, %s, %s, %s)"
NO_LOCKS = LockKeys()


class Unsendable(Exception):
    """An op holds a value the one-statement path cannot carry."""


class BulkBatch:
    """One batch's ops, encoded for `mb_batch`, and the decoding of its answer."""

    def __init__(
        self, ops: list[Op], *, blur_seconds: float | None, new_mailbox_id: Callable[[], str],
        page_messages: int, open_octets: int,
    ) -> None:
        self.ops = ops
        self.blur_seconds = blur_seconds
        self.new_mailbox_id = new_mailbox_id
        self.page_messages = page_messages  # an open's first page: at most so many messages
        self.open_octets = open_octets  # ...and octets (its share of the batch's bound)
        self.allocating = sorted({op.app for op in ops if isinstance(op, Allocate)})
        self.allocated: dict[int, str | Refused] = {}  # op index -> chosen name, or why none
        self.round_trips = 0

    def encode(self, taken: dict[str, list[str]], choose: Callable[[set[str]], str]) -> str:
        """The ops as JSON text (ASCII); `taken` has the names in use of allocating apps."""
        chosen = {app: set(taken.get(app, ())) for app in self.allocating}
        encoded: list[list[Any]] = []
        for i, op in enumerate(self.ops):
            if isinstance(op, Allocate):
                try:
                    name = choose(chosen[op.app])
                except AllocationExhausted:
                    self.allocated[i] = Refused("no free nameplate", ErrorKind.EXHAUSTED)
                    encoded.append(["l", op.app])  # a harmless placeholder for its answer
                    continue
                chosen[op.app].add(name)
                self.allocated[i] = name
                encoded.append(["c", op.app, name, op.side, op.now, self.new_mailbox_id()])
            else:
                encoded.append(self._encode(op))
        try:
            return json.dumps(encoded, allow_nan=False, separators=(",", ":"))
        except (ValueError, RecursionError) as exc:
            raise Unsendable(str(exc)) from exc

    def _encode(self, op: Op) -> list[Any]:
        match op:
            case Bind():
                return ["b", op.app, op.side, usage.blur(op.now, self.blur_seconds),
                        op.implementation, op.version]
            case ListNameplates():
                return ["l", op.app]
            case Claim():
                return ["c", op.app, op.nameplate, op.side, op.now, self.new_mailbox_id()]
            case Release():
                return ["r", op.app, op.nameplate, op.side]
            case Open():
                return ["o", op.app, op.mailbox, op.side, op.now, self.page_messages,
                        self.open_octets]
            case Add():
                return ["a", op.app, op.mailbox, op.side, op.phase, op.body, op.server_rx,
                        op.msg_id]
            case Close():
                return ["x", op.app, op.mailbox, op.side, op.mood, op.now, op.implicit_open]
        raise TypeError(f"unknown op {op!r}")

    def decode(self, replies: list[Any], records: Records) -> tuple[list[Result], list[Any]]:
        """Each op's result, and the usage rows to insert (appending their `records`)."""
        results: list[Result] = []
        queries: list[Any] = []
        for i, (op, answer) in enumerate(zip(self.ops, replies, strict=True)):
            results.append(self._decode(i, op, answer, records, queries))
        return results, queries

    def _decode(self, i: int, op: Op, answer: Any, records: Records, queries: list[Any],
                ) -> Result:
        match op:
            case Bind():
                return None
            case ListNameplates():
                return [str(name) for name in answer]
            case Allocate():
                name = self.allocated[i]
                claim = name if isinstance(name, Refused) else answers.claimed(*answer)
                return claim if isinstance(claim, Refused) else name
            case Claim():
                return answers.claimed(*answer)
            case Release():
                query = answers.released(op, answer, self.blur_seconds, records)
                queries.extend([query] if query is not None else [])
                return None
            case Open():
                return answers.opened(answer[0], None if answer[0] else answer[1])
            case Add():
                return answers.added(op, *answer)
            case Close():
                error, retired = answer
                result, query = answers.closed(op, error, retired, self.blur_seconds, records)
                queries.extend([query] if query is not None else [])
                return result
        raise TypeError(f"unknown op {op!r}")


def run(
    conn: psycopg.Connection, batch: BulkBatch, keys: LockKeys, *, origin: str,
    max_messages: int, max_bytes: int, choose: Callable[[set[str]], str],
    records: Records,
) -> list[Result] | None:
    """The batch in the caller's transaction: its results, or None (nothing done but taking
    locks) if it must go op by op; or `Unsendable`, with nothing done but taking locks."""
    taken: dict[str, list[str]] = {}
    if batch.allocating:
        # the names in use are read under the locks, before the names are chosen
        row = conn.execute(TAKEN_SQL, keys.params()).fetchone()
        batch.round_trips += 1
        taken = row[0] if row is not None else {}
        keys = NO_LOCKS  # held already
    text = batch.encode(taken, choose)
    row = conn.execute(BATCH_SQL, (text, origin, max_messages, max_bytes, *keys.params())
                       ).fetchone()
    batch.round_trips += 1
    if row is None or row[0] is None:
        return None
    results, queries = batch.decode(row[0], records)
    if queries:  # a failure here fails the transaction, and the caller drops its records
        conn.execute(*usage_rows.insert_all(queries))
    return results
