"""`wormhole-transit`: run the transit relay until SIGTERM."""

from __future__ import annotations

import logging
import resource

import trio
from wormhole_common.database import Database
from wormhole_common.lifecycle import run_service
from wormhole_common.logs import configure_logging
from wormhole_common.settings import load_or_exit

from wormhole_transit.server import TransitServer
from wormhole_transit.settings import TransitSettings
from wormhole_transit.usage import UsageRecorder

log = logging.getLogger("wormhole_transit")


def raise_fd_limit() -> None:
    """Each connection is a file descriptor; 1024 capped the reference once (its issue #2)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and soft >= hard):
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d: %s", soft, exc)
        return
    log.info("raised the open-file limit from %d to %d", soft, hard)


def main() -> int:
    settings = load_or_exit(TransitSettings)
    configure_logging(settings.log_level)
    raise_fd_limit()
    if settings.blur_usage_seconds:
        log.info("blurring access times to %d seconds", settings.blur_usage_seconds)
    else:
        log.info("not blurring access times")

    async def service(stop: trio.Event) -> None:
        db = None
        url = settings.connection_string()
        if url:
            db = Database(url, size=settings.database_pool_size,
                          application_name="wormhole-transit")
        else:
            log.warning("TRANSIT_DATABASE_URL is not set: relaying without recording usage")
        recorder = UsageRecorder(db, queue_size=settings.usage_queue_size,
                                 log_json=settings.usage_log)
        try:
            await TransitServer(settings, recorder).serve(stop)
        finally:
            if db is not None:
                db.close()

    try:
        return run_service(service)
    except OSError as exc:
        log.error("cannot listen (TRANSIT_PORT %s, TRANSIT_METRICS_PORT %s): %s",
                  settings.port, settings.metrics_port, exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
