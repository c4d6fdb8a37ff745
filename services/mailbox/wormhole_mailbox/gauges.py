"""Gauges read from the database when `/metrics` is scraped (shared by all replicas)."""

from __future__ import annotations

import psycopg
from wormhole_common.database import Database

from wormhole_mailbox.metrics import MailboxMetrics


def _in_use(db_conn: psycopg.Connection) -> tuple[int, int]:
    row = db_conn.execute(
        "SELECT (SELECT count(*) FROM nameplates), (SELECT count(*) FROM mailboxes)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def refresh_in_use(db: Database, metrics: MailboxMetrics) -> None:
    nameplates, mailboxes = await db.run(_in_use)
    metrics.nameplates_in_use.set(nameplates)
    metrics.mailboxes_in_use.set(mailboxes)
