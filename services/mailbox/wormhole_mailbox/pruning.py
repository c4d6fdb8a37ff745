"""Pruning: keep the mailboxes a process serves alive, retire the abandoned ones.

A backlog can be large (tens of thousands of rows), so `prune_in_batches` works through it in
short transactions of at most `batch_size` mailboxes each: the locks of one batch are held for
a moment, and commands touching those mailboxes wait at most that long. Retiring takes its
locks through `mb_lock`, in the same global order as the command batches; touching never
waits for a lock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

import psycopg
from wormhole_common.database import Database

from wormhole_mailbox.core import usage
from wormhole_mailbox.core.locking import LockKeys

PRUNE_LOCK_KEY = 0x7072756E65  # "prune": one pruner at a time across processes
DEFAULT_BATCH_SIZE = 500

Key = tuple[str, str]  # (app, mailbox)


@dataclass(frozen=True)
class PruneReport:
    touched: int
    nameplates: int
    mailboxes: int
    ran: bool  # False when another process holds the pruning lock
    records: tuple[usage.NameplateUsage | usage.MailboxUsage, ...] = ()
    candidates: int = 0  # stale mailboxes looked at (some may have been touched meanwhile)

    def __add__(self, other: PruneReport) -> PruneReport:
        return PruneReport(
            self.touched + other.touched, self.nameplates + other.nameplates,
            self.mailboxes + other.mailboxes, self.ran and other.ran,
            self.records + other.records, self.candidates + other.candidates,
        )


class Pruner:
    def __init__(self, *, blur_seconds: float | None) -> None:
        self.blur_seconds = blur_seconds

    @staticmethod
    def touch(conn: psycopg.Connection, *, subscribed: Sequence[Key], now: float) -> int:
        """Mark `subscribed` mailboxes as used now (they are live here, whatever their age).

        Rows another transaction holds are skipped, so touching never waits and takes no part
        in a deadlock: the holder is a command on that mailbox, and every command that locks
        a mailbox row marks it used itself.
        """
        if not subscribed:
            return 0
        cur = conn.execute(
            "UPDATE mailboxes m SET updated = %s FROM ("
            "  SELECT b.app_id, b.id FROM mailboxes b"
            "    JOIN unnest(%s::text[], %s::text[]) AS s(app, id)"
            "      ON b.app_id = s.app AND b.id = s.id"
            "  FOR UPDATE OF b SKIP LOCKED) AS l"
            " WHERE m.app_id = l.app_id AND m.id = l.id",
            (now, [a for a, _ in subscribed], [m for _, m in subscribed]),
        )
        return cur.rowcount

    def retire(
        self, conn: psycopg.Connection, *, now: float, cutoff: float, limit: int | None,
        subscribed: Sequence[Key] = (),
    ) -> PruneReport:
        """Retire up to `limit` mailboxes untouched since `cutoff`, except `subscribed`
        (touched at the end: holding their rows must not precede waiting for locks).

        Only the holder of the pruning lock retires; a mailbox touched after it was picked is
        seen as live under its lock and kept. Each retired mailbox costs advisory locks until
        the end of the transaction: keep `limit` small (PostgreSQL's lock table is shared).
        """
        row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK_KEY,)).fetchone()
        report = PruneReport(0, 0, 0, ran=bool(row and row[0]))
        if report.ran:
            stale = [(a, m) for a, m in conn.execute(
                "SELECT app_id, id FROM mailboxes WHERE updated <= %s"
                " AND (app_id, id) NOT IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
                " ORDER BY updated, app_id, id LIMIT %s",
                (cutoff, [a for a, _ in subscribed], [m for _, m in subscribed], limit),
            ).fetchall()]
            if stale:
                conn.execute(*LockKeys(mailboxes=stale, retiring=stale).query())
                report = self._retire(conn, stale, cutoff, now)
        touched = self.touch(conn, subscribed=subscribed, now=now)
        return report + PruneReport(touched, 0, 0, ran=True)

    def _retire(
        self, conn: psycopg.Connection, stale: list[Key], cutoff: float, now: float,
    ) -> PruneReport:
        """Retire those of `stale` still untouched since `cutoff`; `mb_prune_recorded` writes
        their usage rows and returns the records."""
        row = conn.execute(
            "SELECT mb_prune_recorded(%s, %s, %s, %s, %s)",
            ([a for a, _ in stale], [m for _, m in stale], cutoff, now, self.blur_seconds),
        ).fetchone()
        records = tuple(usage.from_sql(record) for record in (row[0] if row else []))
        nameplates = sum(isinstance(r, usage.NameplateUsage) for r in records)
        return PruneReport(0, nameplates, len(records) - nameplates, ran=True,
                           records=records, candidates=len(stale))


async def prune_in_batches(
    db: Database, pruner: Pruner, *, now: float, cutoff: float, subscribed: list[Key],
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[PruneReport], Awaitable[None]] | None = None,
) -> PruneReport:
    """Touch `subscribed`, then retire stale mailboxes, `batch_size` per transaction.

    `on_batch` is told each committed transaction's report (usage records to count), so what
    committed is accounted for even if a later batch fails.
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    total = PruneReport(0, 0, 0, ran=True)
    for start in range(0, len(subscribed), batch_size):
        chunk = subscribed[start:start + batch_size]
        touched = await db.run(partial(pruner.touch, subscribed=chunk, now=now))
        total += PruneReport(touched, 0, 0, ran=True)
    while True:
        report = await db.run(
            lambda conn: pruner.retire(conn, now=now, cutoff=cutoff, limit=batch_size))
        total += report
        if on_batch is not None:
            await on_batch(report)
        if not report.ran or report.candidates < batch_size:
            return total
