"""`MAILBOX_WORKERS` > 1: a supervisor process and that many mailbox workers.

The supervisor checks the database and applies migrations once, binds the public port (each
worker its own socket, each client address sent to one worker: `steering`) and one private
loopback metrics port per worker, and starts the workers with those sockets inherited, and
the tally of their open connections (`limits.Tally`, a few shared bytes). Workers are ordinary
mailbox servers sharing one database, exactly like replicas: messages reach a subscriber on
another worker through LISTEN/NOTIFY. The public metrics port belongs to the supervisor, which
serves every worker's metrics on one page, labelled by worker, and is ready while at least one
worker is.
"""

from __future__ import annotations

import argparse
import logging
import mmap
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from typing import Final

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge
from wormhole_common import http
from wormhole_common.group_metrics import GroupCollector
from wormhole_common.listening import bound
from wormhole_common.observability import MetricsEndpoint
from wormhole_common.workers import Supervisor

from wormhole_mailbox.metrics import PREFIX
from wormhole_mailbox.settings import MailboxSettings
from wormhole_mailbox.steering import open_routes

log = logging.getLogger(__name__)

SCRAPE_SECONDS = 2  # a worker that does not answer in time is left off the page
KILL_MARGIN_SECONDS = 0.5  # past the grace, before a stuck worker is killed
CELL: Final = "q"  # a tally cell: a signed 64-bit integer


class WorkerGroup:
    def __init__(self, settings: MailboxSettings) -> None:
        self.settings = settings
        self.collector = GroupCollector()
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        Gauge(f"{PREFIX}_workers", "Worker processes configured (MAILBOX_WORKERS).",
              registry=self.registry).set(settings.workers)
        self.restarts = Counter(
            f"{PREFIX}_worker_restarts_total",
            "Workers that exited on their own and were started again.", registry=self.registry)
        self.metrics_ports: list[int] = []
        self.supervisor: Supervisor | None = None
        self.tally_fd, self.tally = shared_cells(settings.workers)

    async def serve(self, stop: trio.Event) -> None:
        workers = self.settings.workers
        routes = await open_routes(self.settings.host, self.settings.port, workers,
                                   by_address=self.settings.workers_by_address
                                   and not self.settings.trusted_proxies)
        private = [(await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
                   for _ in range(workers)]
        self.metrics_ports = [listener.socket.getsockname()[1] for listener in private]
        listen_fds = [[listener.socket.fileno() for listener in own] for own in routes.listeners]
        metrics_fds = [listener.socket.fileno() for listener in private]
        self.supervisor = Supervisor(
            workers,
            lambda index: worker_command(index, listen_fds[index], metrics_fds[index],
                                         self.tally_fd, routes.split),
            pass_fds=lambda index: [*listen_fds[index], metrics_fds[index], self.tally_fd],
            # a worker closes its connections within the grace, then cancels what is left;
            # one still running a moment later is stuck, and killing it loses nothing acked
            shutdown_seconds=self.settings.shutdown_grace_seconds + KILL_MARGIN_SECONDS,
            on_restart=self._restarted,
        )
        log.info("mailbox listening on %s (/v1) with %d workers, %s",
                 bound(routes.listeners[0]), workers,
                 "each client address served by one of them" if routes.split == 1
                 else "per-address limits divided among them")
        async with trio.open_nursery() as nursery:
            if self.settings.metrics_port:
                metrics = MetricsEndpoint(self.registry, ready=self._ready, refresh=self._scrape)
                await nursery.start(
                    metrics.serve, self.settings.metrics_host, self.settings.metrics_port)
            nursery.start_soon(self._close_on_stop, stop, [*routes.all(), *private])
            await self.supervisor.run(stop)
            nursery.cancel_scope.cancel()
        log.info("mailbox workers stopped")

    def _restarted(self, index: int) -> None:
        """A worker died with its connections: they no longer count in the server's total."""
        self.tally[index] = 0
        self.restarts.inc()

    @staticmethod
    async def _close_on_stop(stop: trio.Event, listeners: list[trio.SocketListener]) -> None:
        """Our copies of the sockets go at once: with the workers' copies closed too, the
        kernel refuses new connections instead of queueing them for nobody."""
        await stop.wait()
        for listener in listeners:
            await listener.aclose()

    async def _scrape(self) -> None:
        pages: dict[str, str] = {}

        async def one(index: int, port: int) -> None:
            with trio.move_on_after(SCRAPE_SECONDS):
                status, body = await http.get("127.0.0.1", port, "/metrics")
                if status == 200:
                    pages[str(index)] = body.decode("utf-8")

        async with trio.open_nursery() as nursery:
            for index, port in enumerate(self.metrics_ports):
                nursery.start_soon(one, index, port)
        self.collector.update(dict(sorted(pages.items())))

    async def _ready(self) -> bool:
        for port in self.metrics_ports:
            with trio.move_on_after(SCRAPE_SECONDS):
                try:
                    status, _ = await http.get("127.0.0.1", port, "/readyz")
                except OSError:
                    continue
                if status == 200:
                    return True
        return False


def worker_command(
    index: int, listen_fds: Sequence[int], metrics_fd: int, tally_fd: int, split: int,
) -> list[str]:
    return [sys.executable, "-m", "wormhole_mailbox.worker", "--index", str(index),
            "--parent", str(os.getpid()), "--metrics-fd", str(metrics_fd),
            "--tally-fd", str(tally_fd), "--split", str(split),
            *(arg for fd in listen_fds for arg in ("--listen-fd", str(fd)))]


def shared_cells(count: int) -> tuple[int, memoryview]:
    """`count` zeroed integers in memory shared with the workers, which inherit the
    descriptor (`inherited_cells`); a memfd where there is one, else an unlinked file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("wormhole-mailbox-tally")
    else:
        with tempfile.TemporaryFile() as file:
            fd = os.dup(file.fileno())
    os.set_inheritable(fd, False)  # passed to the workers only, through pass_fds
    os.ftruncate(fd, count * 8)
    return fd, inherited_cells(fd)


def inherited_cells(fd: int) -> memoryview:
    return memoryview(mmap.mmap(fd, os.fstat(fd).st_size)).cast(CELL)


def inherited_listener(fd: int) -> trio.SocketListener:
    return trio.SocketListener(trio.socket.from_stdlib_socket(socket.socket(fileno=fd)))


def parse_worker_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wormhole_mailbox.worker",
                                     description="One mailbox worker (started by its group).")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--metrics-fd", type=int, required=True)
    parser.add_argument("--tally-fd", type=int, required=True)
    parser.add_argument("--split", type=int, default=1,
                        help="per-address limits divided by this (1: each address comes here)")
    parser.add_argument("--listen-fd", type=int, action="append", required=True)
    return parser.parse_args(argv)

