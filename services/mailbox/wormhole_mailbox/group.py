"""`MAILBOX_WORKERS` > 1: a supervisor process and that many mailbox workers.

The supervisor checks the database and applies migrations once, binds the public port and one
private loopback metrics port per worker, and starts the workers with those sockets
inherited. Workers are ordinary mailbox servers sharing one database, exactly like replicas:
messages reach a subscriber on another worker through LISTEN/NOTIFY. The public metrics port
belongs to the supervisor, which serves every worker's metrics on one page, labelled by
worker, and is ready while at least one worker is.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge
from wormhole_common.group_metrics import GroupCollector
from wormhole_common.http import read_head
from wormhole_common.listening import bound, open_listeners
from wormhole_common.observability import MetricsEndpoint
from wormhole_common.workers import Supervisor

from wormhole_mailbox.metrics import PREFIX
from wormhole_mailbox.settings import MailboxSettings

log = logging.getLogger(__name__)

SCRAPE_SECONDS = 2  # a worker that does not answer in time is left off the page
KILL_MARGIN_SECONDS = 0.5  # past the grace, before a stuck worker is killed


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

    async def serve(self, stop: trio.Event) -> None:
        listeners = await open_listeners(self.settings.port, self.settings.host)
        private = [(await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
                   for _ in range(self.settings.workers)]
        self.metrics_ports = [listener.socket.getsockname()[1] for listener in private]
        listen_fds = [listener.socket.fileno() for listener in listeners]
        metrics_fds = [listener.socket.fileno() for listener in private]
        self.supervisor = Supervisor(
            self.settings.workers,
            lambda index: worker_command(index, listen_fds, metrics_fds[index]),
            pass_fds=[*listen_fds, *metrics_fds],
            # a worker closes its connections within the grace, then cancels what is left;
            # one still running a moment later is stuck, and killing it loses nothing acked
            shutdown_seconds=self.settings.shutdown_grace_seconds + KILL_MARGIN_SECONDS,
            on_restart=lambda _: self.restarts.inc(),
        )
        log.info("mailbox listening on %s (/v1) with %d workers",
                 bound(listeners), self.settings.workers)
        async with trio.open_nursery() as nursery:
            if self.settings.metrics_port:
                metrics = MetricsEndpoint(self.registry, ready=self._ready, refresh=self._scrape)
                await nursery.start(
                    metrics.serve, self.settings.metrics_host, self.settings.metrics_port)
            nursery.start_soon(self._close_on_stop, stop, [*listeners, *private])
            await self.supervisor.run(stop)
            nursery.cancel_scope.cancel()
        log.info("mailbox workers stopped")

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
                status, body = await http_get(port, "/metrics")
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
                    status, _ = await http_get(port, "/readyz")
                except OSError:
                    continue
                if status == 200:
                    return True
        return False


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """One GET to a worker's private endpoint, which closes after answering."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\n\r\n".encode("ascii"))
        head = await read_head(stream)
        if head is None:
            return 0, b""
        chunks = [head.split(b"\r\n\r\n", 1)[1]]
        while chunk := await stream.receive_some(65536):
            chunks.append(chunk)
    status = int(head.split(b" ", 2)[1])
    return status, b"".join(chunks)


def worker_command(index: int, listen_fds: Sequence[int], metrics_fd: int) -> list[str]:
    return [sys.executable, "-m", "wormhole_mailbox.worker", "--index", str(index),
            "--parent", str(os.getpid()), "--metrics-fd", str(metrics_fd),
            *(arg for fd in listen_fds for arg in ("--listen-fd", str(fd)))]


def inherited_listener(fd: int) -> trio.SocketListener:
    return trio.SocketListener(trio.socket.from_stdlib_socket(socket.socket(fileno=fd)))


def parse_worker_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wormhole_mailbox.worker",
                                     description="One mailbox worker (started by its group).")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--metrics-fd", type=int, required=True)
    parser.add_argument("--listen-fd", type=int, action="append", required=True)
    return parser.parse_args(argv)

