"""Metrics and health over HTTP: `/metrics`, `/healthz`, `/readyz` on a port of their own.

A tiny trio HTTP/1.0-style server (one request per connection, then close) so the services
need no thread and no web framework. Each service owns a `CollectorRegistry`; the page is
`prometheus_client.generate_latest(registry)`. `/readyz` awaits a check the service provides
(its listener is up and its database answers); `/healthz` only says the process serves.
Before `/metrics` is rendered an optional `refresh` coroutine may update gauges that need a
query (bounded by a timeout, failures logged and ignored).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from wormhole_common.accepting import close_now
from wormhole_common.core.websocket import HandshakeError, check_host
from wormhole_common.http import answer, read_head, refusal, response, split_head
from wormhole_common.listening import bound, open_listeners

log = logging.getLogger(__name__)

REQUEST_SECONDS = 5  # to send the request head
CHECK_SECONDS = 3  # a readiness check or refresh that takes longer fails

ReadyCheck = Callable[[], Awaitable[bool]]
Refresh = Callable[[], Awaitable[None]]

# Durations of a unit of database work, from sub-millisecond to the statement timeout.
DATABASE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# Human-scale waits: a second person typing a code, a file being received.
HUMAN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)



class DatabaseMetrics:
    """Latency and errors of units of database work; the `Database` adapter's observer."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.duration = Histogram(
            f"{prefix}_database_query_duration_seconds",
            "Time to run one unit of database work (one transaction), including connecting.",
            registry=registry, buckets=DATABASE_BUCKETS,
        )
        self.errors = Counter(
            f"{prefix}_database_errors_total",
            "Units of database work that failed with a database error (not a refused value).",
            registry=registry,
        )

    def __call__(self, seconds: float, failed: bool) -> None:
        self.duration.observe(seconds)
        if failed:
            self.errors.inc()


def build_info(registry: CollectorRegistry, prefix: str, version: str) -> Gauge:
    gauge = Gauge(f"{prefix}_build_info", "Always 1; the running release in the version label.",
                  ["version"], registry=registry)
    gauge.labels(version).set(1)
    return gauge


def package_version(distribution: str = "wormhole-stack") -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


@dataclass
class MetricsEndpoint:
    registry: CollectorRegistry
    ready: ReadyCheck
    refresh: Refresh | None = None
    port: int | None = None  # the bound port once serving (0 asks the kernel for one)

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; `task_status.started(port)` once listening."""
        listeners = await open_listeners(port, host)
        log.info("metrics on %s (/metrics)", bound(listeners))
        await self.serve_listeners(listeners, task_status=task_status)

    async def serve_listeners(
        self, listeners: list[trio.SocketListener], *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on sockets already bound (a worker's inherited private port, which only its
        supervisor reads: not logged as an endpoint)."""
        self.port = int(listeners[0].socket.getsockname()[1])
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(REQUEST_SECONDS):
                try:
                    head = await read_head(stream)
                except HandshakeError as exc:  # a head over the limit
                    await answer(stream, refusal(exc))
                    return
                if head is None:
                    return
                await answer(stream, await self.respond(head))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await close_now(stream)

    async def respond(self, head: bytes) -> bytes:
        """The whole HTTP response to one request head."""
        try:
            request, _ = split_head(head)
            check_host(request)
        except HandshakeError as exc:
            return refusal(exc)
        method, target = request.method.decode("latin-1"), request.target.decode("latin-1")
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return response(405, b"method not allowed\n")
        if path == "/metrics":
            if self.refresh is not None:
                await self._refresh()
            body = generate_latest(self.registry)
            return response(200, body, CONTENT_TYPE_LATEST, head_only=method == "HEAD")
        if path == "/healthz":
            return response(200, b"ok\n", head_only=method == "HEAD")
        if path == "/readyz":
            ok = await self._ready()
            return response(200 if ok else 503, b"ready\n" if ok else b"not ready\n",
                             head_only=method == "HEAD")
        return response(404, b"not found\n")

    async def _ready(self) -> bool:
        try:
            with trio.move_on_after(CHECK_SECONDS):
                return await self.ready()
        except Exception as exc:
            log.info("not ready: %s", exc)
        return False

    async def _refresh(self) -> None:
        assert self.refresh is not None
        started = time.monotonic()
        try:
            with trio.move_on_after(CHECK_SECONDS):
                await self.refresh()
        except Exception as exc:
            log.warning("could not refresh metrics (%.2fs): %s", time.monotonic() - started, exc)
