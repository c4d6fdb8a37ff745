"""Executes ops against PostgreSQL: one SQL function call per command, usage rows alongside.

Everything here runs in a worker thread inside a transaction the caller owns (see
`wormhole_common.database`); the functions it calls are in `migrations/0001_initial.sql`.
"""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from wormhole_mailbox import usage
from wormhole_mailbox.allocation import AllocationExhausted, choose_nameplate
from wormhole_mailbox.errors import ErrorKind
from wormhole_mailbox.ops import (
    Add,
    Allocate,
    Bind,
    Claim,
    Close,
    ListNameplates,
    Message,
    Op,
    Open,
    Refused,
    Release,
    Result,
)

APP_LOCK_NAMESPACE = 0x6E61  # pg_advisory_xact_lock(namespace, hash(app)) for allocation
PRUNE_LOCK_KEY = 0x7072756E65  # "prune": one pruner at a time across processes
# One writing transaction at a time across processes. A batch touches many nameplates and
# mailboxes in no global order, so two processes' batches would otherwise deadlock now and
# then (PostgreSQL notices only after deadlock_timeout, 1 s). Batches are short, group
# commits: serialising them costs little, and each process's Python work stays parallel.
WRITE_LOCK_KEY = 0x77726974  # "writ"
WRITE_LOCK_SQL = f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"

MESSAGES_SQL = (
    "SELECT seq, side, phase, body, server_rx, msg_id FROM messages"
    " WHERE app_id = %s AND mailbox_id = %s AND seq > %s ORDER BY seq"
)

Query = tuple[str, tuple[Any, ...]]
# An op's work: yields queries, receives each one's rows, returns the op's result.
Plan = Generator[Query, list[tuple[Any, ...]], Result]
# Usage records written by a unit of work; counted as metrics once it has committed.
Records = list[usage.NameplateUsage | usage.MailboxUsage]


def new_mailbox_id() -> str:
    """13 lowercase base32 characters from 8 random bytes, like the reference."""
    return base64.b32encode(os.urandom(8)).decode("ascii").lower().strip("=")


@dataclass(frozen=True)
class PruneReport:
    touched: int
    nameplates: int
    mailboxes: int
    ran: bool  # False when another process holds the pruning lock
    records: tuple[usage.NameplateUsage | usage.MailboxUsage, ...] = ()


class Store:
    def __init__(
        self, *, blur_seconds: float | None, rng: random.Random | None = None,
        origin: str = "",
    ) -> None:
        self.blur_seconds = blur_seconds
        self.rng = rng or random.SystemRandom()
        self.origin = origin  # names this process in message notifications

    def execute(self, conn: psycopg.Connection, op: Op) -> Result:
        """Run one op on its own (the batch path is `execute_many`)."""
        return self.execute_many(conn, [op])[0]

    def execute_many(
        self, conn: psycopg.Connection, ops: list[Op], records: Records | None = None,
    ) -> list[Result]:
        """Run many ops in the caller's transaction, in few round trips.

        Each op is a plan that yields one query at a time; every round sends the next query of
        all unfinished plans in one pipeline, so a batch costs as many round trips as its
        longest plan (two or three), not one per statement. Plans never touch the same rows in
        an order that matters within a round except through row locks, which PostgreSQL
        serialises in pipeline order. Usage records written are appended to `records`.
        """
        # Allocations in one batch read the nameplate list in the same round, before any of
        # them has claimed: names chosen earlier in the batch count as taken.
        chosen: dict[str, set[str]] = {}
        plans = [self._plan(op, chosen, records) for op in ops]
        results: list[Result] = [None] * len(plans)
        pending: dict[int, Query] = {}
        for i in range(len(plans)):
            self._advance(plans, i, None, pending, results)
        locked = False
        while pending:
            with conn.pipeline():
                if not locked:
                    conn.execute(WRITE_LOCK_SQL)
                    locked = True
                cursors = {i: conn.execute(sql, params) for i, (sql, params) in pending.items()}
            pending = {}
            for i, cur in cursors.items():
                rows = cur.fetchall() if cur.description is not None else []
                self._advance(plans, i, rows, pending, results)
        return results

    @staticmethod
    def _advance(
        plans: list[Plan], i: int, rows: list[tuple[Any, ...]] | None,
        pending: dict[int, Query], results: list[Result],
    ) -> None:
        try:
            pending[i] = next(plans[i]) if rows is None else plans[i].send(rows)
        except StopIteration as done:
            results[i] = done.value

    def _plan(self, op: Op, chosen: dict[str, set[str]], records: Records | None) -> Plan:
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
                return self._open(op)
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
        mailbox, error = rows[0]
        return Refused.from_sql(error) if error else str(mailbox)

    def _release(self, op: Release, records: Records | None) -> Plan:
        rows = yield ("SELECT mb_release(%s, %s, %s)", (op.app, op.nameplate, op.side))
        summary = rows[0][0] if rows else None
        if summary is not None:
            yield self._nameplate_record(op.app, summary, op.now, pruned=False, records=records)
        return None

    @staticmethod
    def _open(op: Open) -> Plan:
        rows = yield (
            "SELECT mb_open_side(%s, %s, %s, %s, false)", (op.app, op.mailbox, op.side, op.now)
        )
        if rows and rows[0][0]:
            return Refused.from_sql(rows[0][0])
        rows = yield (MESSAGES_SQL, (op.app, op.mailbox, 0))
        return [Message(*row) for row in rows]

    def _add(self, op: Add) -> Plan:
        rows = yield (
            "SELECT mb_add(%s, %s, %s, %s, %s, %s, %s, %s)",
            (op.app, op.mailbox, op.side, op.phase, op.body, op.server_rx, Jsonb(op.msg_id),
             self.origin),
        )
        if not rows or rows[0][0] is None:
            return Refused("mailbox is gone", ErrorKind.GONE)
        return Message(rows[0][0], op.side, op.phase, op.body, op.server_rx, op.msg_id)

    def _close(self, op: Close, records: Records | None) -> Plan:
        rows = yield (
            "SELECT error, retired FROM mb_close(%s, %s, %s, %s, %s, %s)",
            (op.app, op.mailbox, op.side, op.mood, op.now, op.implicit_open),
        )
        error, retired = rows[0]
        if error:
            return Refused.from_sql(error)
        if retired is not None:
            yield self._mailbox_record(op.app, retired, op.now, pruned=False, records=records)
        return None

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
    def messages(conn: psycopg.Connection, app: str, mailbox: str, after: int = 0) -> list[Message]:
        rows = conn.execute(MESSAGES_SQL, (app, mailbox, after)).fetchall()
        return [Message(*row) for row in rows]

    # -- usage ---------------------------------------------------------------------------------

    def _nameplate_record(
        self, app: str, summary: dict[str, Any], now: float, *, pruned: bool,
        records: Records | None = None,
    ) -> Query:
        record = usage.nameplate_usage(
            app, summary["added"] or [now], now, pruned=pruned,
            crowded=bool(summary.get("crowded")), blur_seconds=self.blur_seconds,
        )
        if records is not None:
            records.append(record)
        return (
            "INSERT INTO usage_nameplates (app_id, started, waiting_time, total_time, result)"
            " VALUES (%s, %s, %s, %s, %s)",
            (record.app_id, record.started, record.waiting_time, record.total_time, record.result),
        )

    def _mailbox_record(
        self, app: str, summary: dict[str, Any], now: float, *, pruned: bool,
        records: Records | None = None,
    ) -> Query:
        added = [t for t in (summary.get("added") or []) if t is not None]
        moods = summary.get("moods") or []
        record = usage.mailbox_usage(
            app, for_nameplate=bool(summary.get("for_nameplate")), added=added,
            moods=moods[: len(added)], now=now, pruned=pruned,
            crowded=bool(summary.get("crowded")), blur_seconds=self.blur_seconds,
        )
        if records is not None:
            records.append(record)
        return (
            "INSERT INTO usage_mailboxes"
            " (app_id, for_nameplate, started, waiting_time, total_time, result)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (record.app_id, record.for_nameplate, record.started, record.waiting_time,
             record.total_time, record.result),
        )

    # -- pruning -------------------------------------------------------------------------------

    def prune(
        self, conn: psycopg.Connection, *, now: float, cutoff: float,
        subscribed: list[tuple[str, str]],
    ) -> PruneReport:
        """Keep subscribed mailboxes alive, then retire everything not touched since `cutoff`.

        Every process touches its own subscribed mailboxes; only the holder of the pruning lock
        deletes, and it skips rows another transaction has locked (it will see them next run).
        """
        conn.execute(WRITE_LOCK_SQL)
        touched = 0
        if subscribed:
            cur = conn.execute(
                "UPDATE mailboxes m SET updated = %s"
                " FROM unnest(%s::text[], %s::text[]) AS s(app, id)"
                " WHERE m.app_id = s.app AND m.id = s.id",
                (now, [a for a, _ in subscribed], [m for _, m in subscribed]),
            )
            touched = cur.rowcount
        row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK_KEY,)).fetchone()
        if not row or not row[0]:
            return PruneReport(touched, 0, 0, ran=False)
        old = conn.execute(
            "SELECT app_id, id FROM mailboxes WHERE updated <= %s FOR UPDATE SKIP LOCKED", (cutoff,)
        ).fetchall()
        nameplates = 0
        records: Records = []
        for app, mailbox in old:
            plates = conn.execute(
                "SELECT n.name, n.crowded, array_agg(s.added) FILTER (WHERE s.added IS NOT NULL)"
                " FROM nameplates n LEFT JOIN nameplate_sides s"
                "   ON s.app_id = n.app_id AND s.name = n.name"
                " WHERE n.app_id = %s AND n.mailbox_id = %s GROUP BY n.name, n.crowded",
                (app, mailbox),
            ).fetchall()
            for _name, crowded, added in plates:
                conn.execute(*self._nameplate_record(
                    app, {"added": added or [], "crowded": crowded}, now, pruned=True,
                    records=records,
                ))
                nameplates += 1
            summary = conn.execute("SELECT mb_retire_mailbox(%s, %s)", (app, mailbox)).fetchone()
            if summary and summary[0] is not None:
                conn.execute(*self._mailbox_record(
                    app, summary[0], now, pruned=True, records=records))
        return PruneReport(touched, nameplates, len(old), ran=True, records=tuple(records))

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
