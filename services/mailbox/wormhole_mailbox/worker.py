"""One worker of a `MAILBOX_WORKERS` group: a mailbox server on inherited sockets.

Started only by `WorkerGroup` (`python -m wormhole_mailbox.worker`), with the same
environment as the supervisor, which has already checked the database and migrated it.
"""

from __future__ import annotations

import sys

import trio
from wormhole_common.core.logs import configure_logging
from wormhole_common.database import Database
from wormhole_common.lifecycle import run_service
from wormhole_common.settings import load_settings
from wormhole_common.workers import exit_when_orphaned

from wormhole_mailbox.core.limits import Tally
from wormhole_mailbox.group import inherited_cells, inherited_listener, parse_worker_args
from wormhole_mailbox.server import MailboxServer, WorkerShare
from wormhole_mailbox.settings import MailboxSettings


def main(argv: list[str] | None = None) -> int:
    args = parse_worker_args(sys.argv[1:] if argv is None else argv)
    settings = load_settings(MailboxSettings)  # the supervisor checked it already
    configure_logging(settings.log_level)
    listeners = [inherited_listener(fd) for fd in args.listen_fd]
    metrics_listener = inherited_listener(args.metrics_fd)
    share = WorkerShare(Tally(inherited_cells(args.tally_fd), args.index), args.split)

    async def service(stop: trio.Event) -> None:
        db = Database(
            settings.connection_string(), size=settings.database_pool_size,
            application_name=f"wormhole-mailbox-{args.index}",
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(exit_when_orphaned, args.parent, stop)
                await db.wait_until_available(settings.database_startup_timeout_seconds)
                server = MailboxServer(settings, db, share)
                await server.serve(stop, listeners=listeners, metrics_listener=metrics_listener)
                nursery.cancel_scope.cancel()
        finally:
            db.close()

    return run_service(service, settings.database_shown())


if __name__ == "__main__":
    raise SystemExit(main())
