"""Process lifecycle: run a trio service until SIGTERM/SIGINT, then shut down in order.

Expected failures (a start-up check, a port taken between the check and the bind, a lost
database) end the process with one line on the log and an exit status, never a traceback.
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator

import trio

from wormhole_common.database import DatabaseUnavailable
from wormhole_common.startup import StartupError

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


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def explain(exc: BaseException, database: str) -> tuple[str, int] | None:
    """One line and an exit status for an expected failure; None for a bug."""
    for leaf in leaves(exc):
        if isinstance(leaf, StartupError):
            return str(leaf), leaf.code
        if isinstance(leaf, DatabaseUnavailable):
            return f"cannot use the database ({database}): {leaf}", 1
        if isinstance(leaf, OSError):
            return f"cannot start: {leaf}", 1
    return None


def run_service(service: Callable[[trio.Event], Awaitable[None]], database: str = "") -> int:
    """Entry point for console scripts; returns the process exit code.

    `database` names the database variable (password masked) for a lost-database message.
    """
    # What exists before serving (modules, classes, settings) lives as long as the process:
    # the cycle collector need not walk it again in every full collection, each of which
    # otherwise stops the event loop for tens of milliseconds under load (docs/benchmarks.md
    # §2.1: the mailbox's p99 at 50 pairs, 79-91 -> 64-66 ms).
    gc.freeze()
    try:
        trio.run(serve_until_signalled, service)
    except Exception as exc:
        explained = explain(exc, database)
        if explained is None:
            raise
        message, code = explained
        log.error("%s", message)
        return code
    return 0
