"""`wormhole-mailbox`: run the mailbox server until SIGTERM."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio
from wormhole_common.cli import start
from wormhole_common.database import Database
from wormhole_common.lifecycle import run_service
from wormhole_common.migrations import migrate
from wormhole_common.startup import StartupError, check_port, wait_for_database

from wormhole_mailbox.group import WorkerGroup
from wormhole_mailbox.server import MailboxServer
from wormhole_mailbox.settings import MailboxSettings

log = logging.getLogger("wormhole_mailbox")

SUMMARY = "The Magic Wormhole mailbox server (rendezvous): WebSocket clients on /v1."


def main(argv: Sequence[str] | None = None) -> int:
    settings = start(MailboxSettings, "wormhole-mailbox", SUMMARY, argv)
    shown = settings.database_shown()

    async def service(stop: trio.Event) -> None:
        check_port("MAILBOX_PORT", settings.host, settings.port)
        check_port("MAILBOX_METRICS_PORT", settings.metrics_host, settings.metrics_port)
        url = settings.connection_string()
        patience = settings.database_startup_timeout_seconds
        reason = await wait_for_database(url, shown, patience)
        if reason is not None:
            raise StartupError(f"cannot reach the database ({shown}) within {patience:g} s:"
                               f" {reason}")
        db = Database(url, size=settings.database_pool_size, application_name="wormhole-mailbox")
        try:
            await migrate(db, "mailbox", "wormhole_mailbox")
            if settings.workers > 1:
                db.close()  # the workers have their own pools
                await WorkerGroup(settings).serve(stop)
            else:
                await MailboxServer(settings, db).serve(stop)
        finally:
            db.close()

    return run_service(service, shown)


if __name__ == "__main__":
    raise SystemExit(main())
