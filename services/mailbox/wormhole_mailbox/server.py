"""The mailbox server: wires the parts together, listens, accepts, and owns the lifecycle.

The way of one `add`: `front.serve_stream` (TCP, HTTP upgrade) → `connection.ClientConnection`
(reader) → `session.Session` (rules: actions) → `batcher.Batcher` (group commit) →
`store.Store` (one statement, `sqlbatch`; each op's effect is SQL) → at commit
`delivery.local_delivery` → `hub.Hub` → each subscribed `ClientConnection` (writer). Other
processes learn of it through `delivery.RemoteDelivery`.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from functools import partial

import trio
from wormhole_common.accepting import serve_listeners
from wormhole_common.core.fdlimit import (
    ADDRESSES_SERVED,
    MEMORY_CEILING,
    connection_limits,
    raise_open_file_limit,
)
from wormhole_common.database import Database
from wormhole_common.listening import bound, open_listeners
from wormhole_common.observability import MetricsEndpoint

from wormhole_mailbox.batcher import Batcher
from wormhole_mailbox.connection import ClientHandler, Services
from wormhole_mailbox.core.hub import Hub
from wormhole_mailbox.core.limits import Limits, LimitSettings, Tally
from wormhole_mailbox.core.paging import PageBounds
from wormhole_mailbox.core.session import SessionConfig
from wormhole_mailbox.delivery import RemoteDelivery, local_delivery
from wormhole_mailbox.front import serve_socket
from wormhole_mailbox.gauges import refresh_in_use
from wormhole_mailbox.metrics import MailboxMetrics
from wormhole_mailbox.prune_loop import PruneLoop, PruneSettings
from wormhole_mailbox.replay import pages as replay_pages
from wormhole_mailbox.settings import MailboxSettings
from wormhole_mailbox.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerShare:
    """A worker's part of its group's limits: the tally of every worker's connections, and
    the number the per-address limits are divided by (1: each address comes to one worker)."""

    tally: Tally
    split: int = 1


class MailboxServer:
    def __init__(
        self, settings: MailboxSettings, db: Database, share: WorkerShare | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.metrics = metrics = MailboxMetrics()
        if db.observer is None:
            db.observer = metrics.database
        self.hub = Hub()
        self.server_id = secrets.token_hex(8)
        pages = PageBounds(octets=settings.replay_page_bytes,
                           batch_octets=settings.replay_batch_bytes)
        store = Store(blur_seconds=settings.blur_usage_seconds, origin=self.server_id,
                      max_messages=settings.mailbox_max_messages,
                      max_bytes=settings.mailbox_max_bytes, pages=pages)
        self.batcher = Batcher(db, store, on_message=local_delivery(self.hub, metrics.messages),
                               on_usage=metrics.usage,
                               command_timeout=settings.command_timeout_seconds)
        self.delivery = RemoteDelivery(db, self.hub, lambda: store.origin)
        self.pruner = PruneLoop(db, store, self.hub, metrics, PruneSettings(
            expiry=settings.channel_expiry_seconds, interval=settings.prune_interval_seconds,
            blur=settings.blur_usage_seconds, server_id=self.server_id, rebooted=time.time(),
        ))
        services = Services(
            hub=self.hub, submit=self.batcher.submit, start=self.batcher.start, metrics=metrics,
            ping_interval=settings.websocket_ping_interval_seconds,
            ping_timeout=settings.websocket_ping_timeout_seconds,
            write_timeout=settings.websocket_write_timeout_seconds,
            command_timeout=settings.command_timeout_seconds,
            replay=lambda key, after: replay_pages(db, *key, after=after, bounds=pages),
            read_stall=settings.read_stall_seconds,
        )
        config = SessionConfig(
            motd=settings.motd, advertise_version=settings.advertise_version,
            signal_error=settings.signal_error, hashcash_bits=settings.hashcash,
            allow_list=settings.allow_list,
        )
        self.limits = open_limits(settings, share)
        self.handler = ClientHandler(services, config, settings.trusted_proxies,
                                         self.limits)
        self.port: int | None = None  # while accepting connections
        metrics.watch_connections(lambda: len(self.handler.connections))
        self.endpoint = MetricsEndpoint(
            metrics.registry, ready=self._ready, refresh=partial(refresh_in_use, db, metrics))

    async def serve(
        self, stop: trio.Event, *,
        listeners: list[trio.SocketListener] | None = None,
        metrics_listener: trio.SocketListener | None = None,
        task_status: trio.TaskStatus[MailboxServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until `stop` is set, then close every connection and return.

        A worker of a group passes the sockets its supervisor bound; otherwise the server
        binds `MAILBOX_PORT` and `MAILBOX_METRICS_PORT` itself.
        """
        async with trio.open_nursery() as background:
            if metrics_listener is not None:
                await background.start(self.endpoint.serve_listeners, [metrics_listener])
            elif self.settings.metrics_port:
                await background.start(
                    self.endpoint.serve, self.settings.metrics_host, self.settings.metrics_port)
            background.start_soon(self.batcher.run)
            await background.start(self.handler.run)
            background.start_soon(self.pruner.run)
            await background.start(self.delivery.run)
            async with trio.open_nursery() as handlers:
                accepting = await handlers.start(self._accept, handlers, listeners)
                task_status.started(self)
                await stop.wait()
                accepting.cancel()
                await self._close_connections()
                handlers.cancel_scope.cancel()
            background.cancel_scope.cancel()
        log.info("mailbox stopped")

    async def _accept(
        self, handlers: trio.Nursery, listeners: list[trio.SocketListener] | None,
        task_status: trio.TaskStatus[trio.CancelScope],
    ) -> None:
        """Accept connections into `handlers` until the returned scope is cancelled."""
        if listeners is None:
            listeners = await open_listeners(self.settings.port, self.settings.host)
        self.port = listeners[0].socket.getsockname()[1]
        handle = partial(serve_socket, handle=self.handler, metrics=self.metrics,
                         connections=self.limits.connections,
                         trusted_proxies=self.settings.trusted_proxies)
        try:
            with trio.CancelScope() as accepting:
                log.info("mailbox listening on %s (/v1)", bound(listeners))
                task_status.started(accepting)
                await serve_listeners(handle, listeners, handlers)
        finally:
            self.port = None  # not ready any more
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def _close_connections(self) -> None:
        """Close every client connection (1001), giving them the grace period at most."""
        log.info("stopping: closing %d connections", len(self.handler.connections))
        with trio.move_on_after(self.settings.shutdown_grace_seconds):
            async with trio.open_nursery() as closing:
                for connection in list(self.handler.connections):
                    closing.start_soon(connection.shut_down)

    async def _ready(self) -> bool:
        """Listening, and the database answers."""
        if self.port is None:
            return False
        await self.db.ping()
        return True


def open_limits(settings: MailboxSettings, share: WorkerShare | None = None) -> Limits:
    """Raise the open-file limit to the hard limit (as the relay does) and size the limits
    from what it got: connections leave descriptors for the database, the listeners and
    `/metrics`, and one address may take at most a quarter of them. Unset, the server's total
    is every worker's descriptors, at most `MEMORY_CEILING` (memory is the machine's)."""
    open_files = raise_open_file_limit()
    # the pool, the listening connection and the batcher's own
    sized = connection_limits(open_files, database_connections=settings.database_pool_size + 2,
                              per_address=settings.max_connections_per_ip)
    workers = 1 if share is None else share.tally.workers
    total = settings.max_connections or min(MEMORY_CEILING, sized.total * workers)
    limits = LimitSettings(
        max_connections=total,
        max_process_connections=settings.max_connections or sized.total,
        max_connections_per_address=min(settings.max_connections_per_ip,
                                        max(1, total // ADDRESSES_SERVED)),
        allocations_per_minute=settings.allocations_per_minute,
        mailboxes_per_minute=settings.new_mailboxes_per_minute,
        nameplates_per_address=settings.nameplates_per_ip,
        nameplate_linger_seconds=settings.channel_expiry_seconds
        + settings.prune_interval_seconds,
    )
    if share is None:
        return Limits(limits)
    share.tally.set(0)
    return Limits(limits.shared_by(share.split), share.tally)
