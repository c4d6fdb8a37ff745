"""`wormhole-transit`: run the transit relay until SIGTERM."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio
from wormhole_common.cli import start
from wormhole_common.core.fdlimit import raise_open_file_limit
from wormhole_common.database import Database
from wormhole_common.lifecycle import run_service
from wormhole_common.startup import check_port, wait_for_database

from wormhole_transit.server import TransitServer
from wormhole_transit.settings import TransitSettings
from wormhole_transit.usage_writer import UsageRecorder

log = logging.getLogger("wormhole_transit")

SUMMARY = "The Magic Wormhole transit relay: pairs two clients by token and relays bytes."


def check_ports(settings: TransitSettings) -> None:
    check_port("TRANSIT_PORT", settings.host, settings.port)
    if settings.websocket_port is not None:
        check_port("TRANSIT_WEBSOCKET_PORT", settings.host, settings.websocket_port)
    check_port("TRANSIT_METRICS_PORT", settings.metrics_host, settings.metrics_port)


async def open_database(settings: TransitSettings) -> Database | None:
    """The usage database, once it answers or the start-up timeout is over; None if unset.

    A refused login exits at once (`StartupError`); an unreachable server does not stop the
    relay: the recorder keeps retrying and usage records wait in its queue meanwhile.
    """
    url = settings.connection_string()
    if not url:
        log.warning("TRANSIT_DATABASE_URL is not set: relaying without recording usage")
        return None
    shown = settings.database_shown()
    reason = await wait_for_database(url, shown, settings.database_startup_timeout_seconds)
    if reason is not None:
        log.warning("the database (%s) is unreachable (%s): relaying without usage records"
                    " until it answers", shown, reason)
    return Database(url, size=settings.database_pool_size, application_name="wormhole-transit")


def main(argv: Sequence[str] | None = None) -> int:
    settings = start(TransitSettings, "wormhole-transit", SUMMARY, argv)
    raise_open_file_limit()  # each connection is a descriptor (docs/transit-protocol.md §2)
    if settings.blur_usage_seconds:
        log.info("blurring access times to %d seconds", settings.blur_usage_seconds)
    else:
        log.info("not blurring access times")

    async def service(stop: trio.Event) -> None:
        check_ports(settings)
        db = await open_database(settings)
        recorder = UsageRecorder(db, queue_size=settings.usage_queue_size,
                                 log_json=settings.usage_log)
        try:
            await TransitServer(settings, recorder).serve(stop)
        finally:
            if db is not None:
                db.close()

    return run_service(service, settings.database_shown())


if __name__ == "__main__":
    raise SystemExit(main())
