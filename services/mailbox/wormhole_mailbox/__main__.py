"""`wormhole-mailbox`: run the mailbox server until SIGTERM."""

from __future__ import annotations

import logging

import trio
from wormhole_common.database import Database, DatabaseUnavailable
from wormhole_common.lifecycle import run_service
from wormhole_common.logs import configure_logging
from wormhole_common.migrations import migrate
from wormhole_common.settings import load_or_exit

from wormhole_mailbox.group import WorkerGroup
from wormhole_mailbox.server import MailboxServer
from wormhole_mailbox.settings import MailboxSettings

log = logging.getLogger("wormhole_mailbox")


def main() -> int:
    settings = load_or_exit(MailboxSettings)
    configure_logging(settings.log_level)

    async def service(stop: trio.Event) -> None:
        db = Database(
            settings.connection_string(), size=settings.database_pool_size,
            application_name="wormhole-mailbox",
        )
        try:
            await db.wait_until_available(settings.database_startup_timeout_seconds)
            await migrate(db, "mailbox", "wormhole_mailbox")
            if settings.workers > 1:
                db.close()  # the workers have their own pools
                await WorkerGroup(settings).serve(stop)
            else:
                await MailboxServer(settings, db).serve(stop)
        finally:
            db.close()

    try:
        return run_service(service)
    except* DatabaseUnavailable as group:
        log.error("cannot use the database (MAILBOX_DATABASE_URL): %s", group.exceptions[0])
    except* OSError as group:
        log.error("cannot listen (MAILBOX_PORT %s, MAILBOX_METRICS_PORT %s): %s",
                  settings.port, settings.metrics_port, group.exceptions[0])
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
