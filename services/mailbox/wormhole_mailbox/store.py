"""Executes ops against PostgreSQL: one SQL function call per command, usage rows alongside.

Everything here runs in a worker thread inside a transaction the caller owns (see
`wormhole_common.database`); the functions it calls are in `migrations/0001_initial.sql`.
"""

from __future__ import annotations

import base64
import os
import random
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from wormhole_mailbox import usage
from wormhole_mailbox.allocation import AllocationExhausted, choose_nameplate
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


def new_mailbox_id() -> str:
    """13 lowercase base32 characters from 8 random bytes, like the reference."""
    return base64.b32encode(os.urandom(8)).decode("ascii").lower().strip("=")


@dataclass(frozen=True)
class PruneReport:
    touched: int
    nameplates: int
    mailboxes: int
    ran: bool  # False when another process holds the pruning lock


class Store:
    def __init__(self, *, blur_seconds: float | None, rng: random.Random | None = None) -> None:
        self.blur_seconds = blur_seconds
        self.rng = rng or random.SystemRandom()

    def execute(self, conn: psycopg.Connection, op: Op) -> Result:
        match op:
            case Bind():
                self._bind(conn, op)
                return None
            case ListNameplates():
                return self.list_nameplates(conn, op.app)
            case Allocate():
                return self._allocate(conn, op)
            case Claim():
                return self._claim(conn, op.app, op.nameplate, op.side, op.now)
            case Release():
                self._release(conn, op)
                return None
            case Open():
                return self._open(conn, op)
            case Add():
                return self._add(conn, op)
            case Close():
                return self._close(conn, op)
        raise TypeError(f"unknown op {op!r}")

    # -- commands ------------------------------------------------------------------------------

    def _bind(self, conn: psycopg.Connection, op: Bind) -> None:
        conn.execute(
            "INSERT INTO usage_client_versions"
            " (app_id, side, connect_time, implementation, version) VALUES (%s, %s, %s, %s, %s)",
            (op.app, op.side, usage.blur(op.now, self.blur_seconds), op.implementation, op.version),
        )

    @staticmethod
    def list_nameplates(conn: psycopg.Connection, app: str) -> list[str]:
        rows = conn.execute(
            "SELECT name FROM nameplates WHERE app_id = %s ORDER BY name", (app,)
        ).fetchall()
        return [row[0] for row in rows]

    def _allocate(self, conn: psycopg.Connection, op: Allocate) -> str | Refused:
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (APP_LOCK_NAMESPACE, op.app))
        taken = set(self.list_nameplates(conn, op.app))
        try:
            name = choose_nameplate(taken, self.rng)
        except AllocationExhausted:
            return Refused("no free nameplate")
        claimed = self._claim(conn, op.app, name, op.side, op.now)
        return claimed if isinstance(claimed, Refused) else name

    def _claim(
        self, conn: psycopg.Connection, app: str, name: str, side: str, now: float
    ) -> str | Refused:
        row = conn.execute(
            "SELECT o_mid, error FROM mb_claim(%s, %s, %s, %s, %s)",
            (app, name, side, now, new_mailbox_id()),
        ).fetchone()
        assert row is not None
        mailbox, error = row
        return Refused(error) if error else str(mailbox)

    def _release(self, conn: psycopg.Connection, op: Release) -> None:
        row = conn.execute(
            "SELECT mb_release(%s, %s, %s)", (op.app, op.nameplate, op.side)
        ).fetchone()
        summary = row[0] if row else None
        if summary is not None:
            self._record_nameplate(conn, op.app, summary, op.now, pruned=False)

    def _open(self, conn: psycopg.Connection, op: Open) -> list[Message] | Refused:
        row = conn.execute(
            "SELECT mb_open_side(%s, %s, %s, %s, false)", (op.app, op.mailbox, op.side, op.now)
        ).fetchone()
        if row and row[0]:
            return Refused(row[0])
        return self.messages(conn, op.app, op.mailbox)

    @staticmethod
    def messages(conn: psycopg.Connection, app: str, mailbox: str, after: int = 0) -> list[Message]:
        rows = conn.execute(
            "SELECT seq, side, phase, body, server_rx, msg_id FROM messages"
            " WHERE app_id = %s AND mailbox_id = %s AND seq > %s ORDER BY seq",
            (app, mailbox, after),
        ).fetchall()
        return [Message(*row) for row in rows]

    def _add(self, conn: psycopg.Connection, op: Add) -> Message | Refused:
        row = conn.execute(
            "SELECT mb_add(%s, %s, %s, %s, %s, %s, %s)",
            (op.app, op.mailbox, op.side, op.phase, op.body, op.server_rx, Jsonb(op.msg_id)),
        ).fetchone()
        if row is None or row[0] is None:
            return Refused("mailbox is gone")
        return Message(row[0], op.side, op.phase, op.body, op.server_rx, op.msg_id)

    def _close(self, conn: psycopg.Connection, op: Close) -> Refused | None:
        row = conn.execute(
            "SELECT error, retired FROM mb_close(%s, %s, %s, %s, %s, %s)",
            (op.app, op.mailbox, op.side, op.mood, op.now, op.implicit_open),
        ).fetchone()
        assert row is not None
        error, retired = row
        if error:
            return Refused(error)
        if retired is not None:
            self._record_mailbox(conn, op.app, retired, op.now, pruned=False)
        return None

    # -- usage ---------------------------------------------------------------------------------

    def _record_nameplate(
        self, conn: psycopg.Connection, app: str, summary: dict[str, Any], now: float,
        *, pruned: bool,
    ) -> None:
        record = usage.nameplate_usage(
            app, summary["added"] or [now], now, pruned=pruned,
            crowded=bool(summary.get("crowded")), blur_seconds=self.blur_seconds,
        )
        conn.execute(
            "INSERT INTO usage_nameplates (app_id, started, waiting_time, total_time, result)"
            " VALUES (%s, %s, %s, %s, %s)",
            (record.app_id, record.started, record.waiting_time, record.total_time, record.result),
        )

    def _record_mailbox(
        self, conn: psycopg.Connection, app: str, summary: dict[str, Any], now: float,
        *, pruned: bool,
    ) -> None:
        added = [t for t in (summary.get("added") or []) if t is not None]
        moods = summary.get("moods") or []
        record = usage.mailbox_usage(
            app, for_nameplate=bool(summary.get("for_nameplate")), added=added,
            moods=moods[: len(added)], now=now, pruned=pruned,
            crowded=bool(summary.get("crowded")), blur_seconds=self.blur_seconds,
        )
        conn.execute(
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
        touched = 0
        if subscribed:
            cur = conn.execute(
                "UPDATE mailboxes m SET updated = %s FROM unnest(%s::text[], %s::text[]) AS s(app, id)"
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
        for app, mailbox in old:
            plates = conn.execute(
                "SELECT n.name, n.crowded, array_agg(s.added) FILTER (WHERE s.added IS NOT NULL)"
                " FROM nameplates n LEFT JOIN nameplate_sides s"
                "   ON s.app_id = n.app_id AND s.name = n.name"
                " WHERE n.app_id = %s AND n.mailbox_id = %s GROUP BY n.name, n.crowded",
                (app, mailbox),
            ).fetchall()
            for _name, crowded, added in plates:
                self._record_nameplate(
                    conn, app, {"added": added or [], "crowded": crowded}, now, pruned=True
                )
                nameplates += 1
            summary = conn.execute("SELECT mb_retire_mailbox(%s, %s)", (app, mailbox)).fetchone()
            if summary and summary[0] is not None:
                self._record_mailbox(conn, app, summary[0], now, pruned=True)
        return PruneReport(touched, nameplates, len(old), ran=True)

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
