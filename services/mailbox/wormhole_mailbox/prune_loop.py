"""The pruning loop: every interval, retire what nobody touched for the channel expiry.

The work itself is `pruning.prune_in_batches` (short transactions, see `_run_store`); this
module only schedules it, keeps this process's subscribed mailboxes alive, writes this
process's `usage_current` row and counts the outcome as each batch commits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg
import trio
from wormhole_common.database import Database

from wormhole_mailbox.core.hub import Hub
from wormhole_mailbox.metrics import MailboxMetrics
from wormhole_mailbox.pruning import DEFAULT_BATCH_SIZE, PruneReport, prune_in_batches
from wormhole_mailbox.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneSettings:
    expiry: float  # seconds without activity before a mailbox is retired
    interval: float  # seconds between runs
    blur: float | None  # usage times are rounded to this
    server_id: str  # this process in `usage_current`
    rebooted: float  # when this process started
    batch_size: int = DEFAULT_BATCH_SIZE  # mailboxes retired per transaction


class PruneLoop:
    def __init__(
        self, db: Database, store: Store, hub: Hub, metrics: MailboxMetrics,
        settings: PruneSettings,
    ) -> None:
        self.db = db
        self.store = store
        self.hub = hub
        self.metrics = metrics
        self.settings = settings

    async def run(self) -> None:
        """Prune every interval until cancelled; a failed run is logged and retried."""
        while True:
            try:
                await self.prune_once(time.time())
            except Exception:
                log.exception("pruning failed; will retry")
            await trio.sleep(self.settings.interval)

    async def prune_once(self, now: float) -> PruneReport:
        try:
            report = await self._run_store(now)
        except Exception:
            self.metrics.prune_runs["failed"].inc()
            raise
        self.metrics.prune_runs["ran" if report.ran else "skipped"].inc()
        if report.mailboxes or report.nameplates:
            log.info("pruned %d mailboxes, %d nameplates", report.mailboxes, report.nameplates)
        return report

    async def _counted(self, report: PruneReport) -> None:
        """What one committed batch retired (counted even if a later batch fails)."""
        self.metrics.pruned["nameplates"].inc(report.nameplates)
        self.metrics.pruned["mailboxes"].inc(report.mailboxes)
        self.metrics.usage(report.records)

    async def _run_store(self, now: float) -> PruneReport:
        """The one place that calls the store's pruning."""
        settings = self.settings
        report = await prune_in_batches(
            self.db, self.store.pruner, now=now, cutoff=now - settings.expiry,
            subscribed=self.hub.subscribed_mailboxes(), batch_size=settings.batch_size,
            on_batch=self._counted,
        )
        count = self.hub.subscriber_count()

        def current(db_conn: psycopg.Connection) -> None:
            self.store.write_current(
                db_conn, server_id=settings.server_id, rebooted=settings.rebooted, now=now,
                blur_seconds=settings.blur, subscribed_connections=count,
            )

        await self.db.run(current)
        return report
