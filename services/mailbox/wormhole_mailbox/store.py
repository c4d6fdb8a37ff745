"""Executes ops against PostgreSQL: one SQL function call per command, usage rows alongside.

Everything here runs in a worker thread inside a transaction the caller owns (see
`wormhole_common.database`); the functions it calls are in `migrations/0001_initial.sql`.
"""

from __future__ import annotations

import base64
import os
import random

import psycopg
from psycopg.types.json import Jsonb

from wormhole_mailbox import answers, bulk
from wormhole_mailbox.bulk import BulkBatch
from wormhole_mailbox.core import usage
from wormhole_mailbox.core.allocation import AllocationExhausted, choose_nameplate
from wormhole_mailbox.core.errors import ErrorKind
from wormhole_mailbox.core.ops import (
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
from wormhole_mailbox.locking import LockKeys, lock_keys
from wormhole_mailbox.pipeline import OpFailed, Plan, run_plans
from wormhole_mailbox.pruning import Pruner
from wormhole_mailbox.records import Records

# A real exchange stores fewer than 10 messages of under 10 KB; a text sent through the
# mailbox is one body of at most a frame (1 MiB). These leave room for both and for long
# dilation sessions (a few messages per reconnection), yet bound what one mailbox may hold.
DEFAULT_MAX_MESSAGES = 1000
DEFAULT_MAX_BYTES = 4 << 20
APP_LOCK_NAMESPACE = 0x6E61  # pg_advisory_xact_lock(namespace, hash(app)) for allocation

PAGE_SQL = "SELECT mb_page(%s, %s, %s, %s, %s, %s)"


def new_mailbox_id() -> str:
    """13 lowercase base32 characters from 8 random bytes, like the reference."""
    return base64.b32encode(os.urandom(8)).decode("ascii").lower().strip("=")


class Store:
    def __init__(
        self, *, blur_seconds: float | None, rng: random.Random | None = None,
        origin: str = "", max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES, pages: PageBounds | None = None,
    ) -> None:
        self.blur_seconds = blur_seconds
        self.rng = rng or random.SystemRandom()
        self.origin = origin  # names this process in message notifications
        self.max_messages = max_messages  # per mailbox; an add past either limit is refused
        self.max_bytes = max_bytes  # octets of all bodies in a mailbox
        # `open` returns the first page of the mailbox; the shell reads the rest with
        # `replay.pages(after=<last seq>)`
        self.pages = pages or PageBounds()
        self.pruner = Pruner(blur_seconds=blur_seconds)
        self.round_trips = 0  # pipelines sent by `execute_many`, for tests and benchmarks

    def execute_many(
        self, conn: psycopg.Connection, ops: list[Op], records: Records | None = None, *,
        one_by_one: bool = False,
    ) -> list[Result | OpFailed]:
        """Run many ops in the caller's transaction: in one statement (`bulk`) unless one of
        them fails (or `one_by_one`), then op by op (`pipeline`).

        An op whose statement PostgreSQL rejects gets `OpFailed` and leaves nothing behind
        from that statement; the others are unaffected. Usage records of statements that
        committed with the transaction are appended to `records`.
        """
        sink: Records = [] if records is None else records
        keys = lock_keys(ops)
        # the opens share what one answer may carry, whichever way the batch goes
        open_octets = self.pages.open_octets(sum(isinstance(op, Open) for op in ops))
        results = None if one_by_one else self._in_one_statement(
            conn, ops, keys, sink, open_octets)
        if results is not None:
            return list(results)
        # some op fails: each goes in its own savepoint, after the locks (held already if the
        # one statement ran, which is harmless).
        # Allocations in one batch read the nameplate list in the same round, before any of
        # them has claimed: names chosen earlier in the batch count as taken.
        chosen: dict[str, set[str]] = {}
        plans = [self._plan(op, chosen, sink, open_octets) for op in ops]
        outcome = run_plans(conn, plans, [keys.query()] if keys else [])
        self.round_trips += outcome.round_trips
        return outcome.results

    def _in_one_statement(
        self, conn: psycopg.Connection, ops: list[Op], keys: LockKeys, records: Records,
        open_octets: int,
    ) -> list[Result] | None:
        batch = BulkBatch(ops, blur_seconds=self.blur_seconds, new_mailbox_id=new_mailbox_id,
                          page_messages=self.pages.messages, open_octets=open_octets)
        try:
            return bulk.run(conn, batch, keys, origin=self.origin,
                            max_messages=self.max_messages, max_bytes=self.max_bytes,
                            choose=self._choose, records=records)
        except bulk.Unsendable:
            return None
        finally:
            self.round_trips += batch.round_trips

    def _choose(self, taken: set[str]) -> str:
        return choose_nameplate(taken, self.rng)

    def _plan(self, op: Op, chosen: dict[str, set[str]], records: Records,
              open_octets: int) -> Plan:
        match op:
            case Bind():
                return self._bind(op)
            case ListNameplates():
                return self._list(op)
            case Allocate():
                return self._allocate(op, chosen.setdefault(op.app, set()))
            case Claim():
                return self._claim(op.app, op.nameplate, op.side, op.now)
            case Release():
                return self._release(op, records)
            case Open():
                return self._open(op, open_octets)
            case Add():
                return self._add(op)
            case Close():
                return self._close(op, records)
        raise TypeError(f"unknown op {op!r}")

    # -- commands (plans) ----------------------------------------------------------------------

    def _bind(self, op: Bind) -> Plan:
        yield (
            "INSERT INTO usage_client_versions"
            " (app_id, side, connect_time, implementation, version) VALUES (%s, %s, %s, %s, %s)",
            (op.app, op.side, usage.blur(op.now, self.blur_seconds), op.implementation, op.version),
        )
        return None

    @staticmethod
    def _list(op: ListNameplates) -> Plan:
        rows = yield ("SELECT name FROM nameplates WHERE app_id = %s ORDER BY name", (op.app,))
        return [row[0] for row in rows]

    def _allocate(self, op: Allocate, chosen: set[str]) -> Plan:
        rows = yield ("SELECT mb_lock_and_list(%s, %s)", (op.app, APP_LOCK_NAMESPACE))
        try:
            name = choose_nameplate(chosen.union(rows[0][0]), self.rng)
        except AllocationExhausted:
            return Refused("no free nameplate", ErrorKind.EXHAUSTED)
        chosen.add(name)
        claimed = yield from self._claim(op.app, name, op.side, op.now)
        return claimed if isinstance(claimed, Refused) else name

    @staticmethod
    def _claim(app: str, name: str, side: str, now: float) -> Plan:
        rows = yield (
            "SELECT o_mid, error FROM mb_claim(%s, %s, %s, %s, %s)",
            (app, name, side, now, new_mailbox_id()),
        )
        return answers.claimed(*rows[0])

    def _release(self, op: Release, records: Records) -> Plan:
        rows = yield ("SELECT mb_release(%s, %s, %s)", (op.app, op.nameplate, op.side))
        query = answers.released(op, rows[0][0] if rows else None, self.blur_seconds, records)
        if query is not None:
            yield query
        return None

    def _open(self, op: Open, octets: int) -> Plan:
        rows = yield (
            "SELECT mb_open_side(%s, %s, %s, %s, false)", (op.app, op.mailbox, op.side, op.now)
        )
        if rows and rows[0][0]:
            return answers.opened(rows[0][0], None)
        rows = yield (PAGE_SQL, (op.app, op.mailbox, 0, octets, self.pages.messages, False))
        return answers.opened(None, rows[0][0])

    def _add(self, op: Add) -> Plan:
        rows = yield (
            "SELECT o_seq, o_full FROM mb_add(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (op.app, op.mailbox, op.side, op.phase, op.body, op.server_rx, Jsonb(op.msg_id),
             self.origin, self.max_messages, self.max_bytes),
        )
        return answers.added(op, *rows[0])

    def _close(self, op: Close, records: Records) -> Plan:
        rows = yield (
            "SELECT error, retired FROM mb_close(%s, %s, %s, %s, %s, %s)",
            (op.app, op.mailbox, op.side, op.mood, op.now, op.implicit_open),
        )
        error, retired = rows[0]
        result, query = answers.closed(op, error, retired, self.blur_seconds, records)
        if query is not None:
            yield query
        return result

    @staticmethod
    def messages_by_seq(
        conn: psycopg.Connection, seqs: list[int]
    ) -> list[tuple[str, str, Message]]:
        """(app, mailbox, message) for stored messages announced by other processes."""
        rows = conn.execute(
            "SELECT app_id, mailbox_id, seq, side, phase, body, server_rx, msg_id FROM messages"
            " WHERE seq = ANY(%s) ORDER BY seq",
            (seqs,),
        ).fetchall()
        return [(row[0], row[1], Message(*row[2:])) for row in rows]

    @staticmethod
    def messages(conn: psycopg.Connection, app: str, mailbox: str) -> list[Message]:
        """All of the mailbox's messages, in order."""
        rows = conn.execute(
            "SELECT seq, side, phase, body, server_rx, msg_id FROM messages"
            " WHERE app_id = %s AND mailbox_id = %s ORDER BY seq", (app, mailbox)).fetchall()
        return [Message(*row) for row in rows]

    @staticmethod
    def page(
        conn: psycopg.Connection, app: str, mailbox: str, after: int = 0,
        bounds: PageBounds | None = None,
    ) -> Page:
        """A page of the mailbox's messages after seq `after`, in order: at least one message
        if there is any, so a replay always moves on."""
        bounds = bounds or PageBounds()
        row = conn.execute(PAGE_SQL, (app, mailbox, after, bounds.octets, bounds.messages,
                                      True)).fetchone()
        assert row is not None
        return answers.paged(row[0])

    @staticmethod
    def write_current(
        conn: psycopg.Connection, *, server_id: str, rebooted: float, now: float,
        blur_seconds: float | None, subscribed_connections: int,
    ) -> None:
        conn.execute(
            "INSERT INTO usage_current"
            " (server_id, rebooted, updated, blur_time, connections_websocket)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (server_id) DO UPDATE SET"
            " rebooted = EXCLUDED.rebooted, updated = EXCLUDED.updated,"
            " blur_time = EXCLUDED.blur_time,"
            " connections_websocket = EXCLUDED.connections_websocket",
            (server_id, rebooted, now, blur_seconds, subscribed_connections),
        )
