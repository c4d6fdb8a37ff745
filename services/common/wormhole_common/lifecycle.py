"""Process lifecycle: run a trio service until SIGTERM/SIGINT, then shut down in order."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger(__name__)



async def _wait_for_signal(stop: trio.Event, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop.set()
            return


async def serve_until_signalled(service: Callable[[trio.Event], Awaitable[None]]) -> None:
    """Run `service(stop)`; `stop` is set on the first SIGTERM/SIGINT.

    The service is expected to stop accepting, finish or close its connections and return.
    """
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(_wait_for_signal, stop)
        await service(stop)
        nursery.cancel_scope.cancel()


def run_service(service: Callable[[trio.Event], Awaitable[None]]) -> int:
    """Entry point for console scripts; returns the process exit code."""
    trio.run(serve_until_signalled, service)
    return 0
