"""The trio shell: WebSocket connections in, sessions and the store in between.

Each connection has one reader (frames in, strictly in order: ack and result of a command are
queued before the next command is looked at), one writer (frames out, always text, stamped
with `server_tx` just before writing) and a keep-alive pinger, all in the connection's nursery.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)
from wormhole_common.database import Database, DatabaseUnavailable, Listener
from wormhole_common.http import read_head
from wormhole_common.observability import MetricsEndpoint
from wsproto.events import TextMessage

from wormhole_mailbox import hashcash
from wormhole_mailbox.addresses import peer_address
from wormhole_mailbox.batcher import Batcher, StoreFailed
from wormhole_mailbox.front import ReplayStream, is_upgrade, plain_response
from wormhole_mailbox.hub import Hub, Key, Subscriber
from wormhole_mailbox.metrics import MailboxMetrics
from wormhole_mailbox.ops import Add, Close, ListNameplates, Message, Open, Refused
from wormhole_mailbox.session import Frame, Session, Step, WelcomeConfig, error_frame
from wormhole_mailbox.settings import MailboxSettings
from wormhole_mailbox.store import Store

log = logging.getLogger(__name__)

SERVER_HEADER = b"Magic Wormhole Mailbox (wormhole-stack)"
OUTBOUND_QUEUE = 4096  # frames waiting for one slow client before it is dropped
MAX_MESSAGE_BYTES = 1 << 20
NOTIFY_CHANNEL = "wormhole_mailbox_messages"  # see mb_add in migrations/0001_initial.sql
HANDSHAKE_SECONDS = 10  # to send a request head and complete the upgrade


class Peer(NamedTuple):
    host: str
    port: int


def _set_event() -> trio.Event:
    event = trio.Event()
    event.set()
    return event


async def send_texts(ws: WebSocketConnection, texts: list[str]) -> None:
    """Send text frames with one write to the socket.

    trio-websocket writes each message with its own `send_all`; on a busy server the syscalls
    dominate, so several frames are framed by the connection's wsproto state and written at
    once, under the same lock trio-websocket uses (its internals, pinned in pyproject.toml).
    """
    if len(texts) == 1:
        await ws.send_message(texts[0])
        return
    if ws._close_reason:
        raise ConnectionClosed(ws._close_reason)
    data = b"".join(ws._wsproto.send(TextMessage(data=text)) for text in texts)
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise ConnectionClosed(ws._close_reason) from None


@dataclass(eq=False)
class Connection:
    ws: WebSocketConnection
    session: Session
    outbound: trio.MemorySendChannel[Frame]
    metrics: MailboxMetrics
    subscription: tuple[Key, Subscriber] | None = None
    overflowed: bool = False
    drained: trio.Event = field(default_factory=trio.Event)  # the writer has finished
    settled: trio.Event = field(default_factory=_set_event)  # no command is half-answered

    def send(self, frame: Frame) -> None:
        if frame["type"] == "error":
            self.metrics.error(frame.get("error"))
        try:
            self.outbound.send_nowait(frame)
        except trio.WouldBlock:
            self.overflowed = True
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


def encode(frame: Frame, server_tx: float) -> str:
    text = json.dumps(frame)
    return f'{text[:-1]}, "server_tx": {server_tx!r}}}'


class MailboxServer:
    def __init__(self, settings: MailboxSettings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.metrics = MailboxMetrics()
        if db.observer is None:
            db.observer = self.metrics.database
        self.hub = Hub()
        self.server_id = secrets.token_hex(8)
        self.store = Store(blur_seconds=settings.blur_usage_seconds, origin=self.server_id)
        self.batcher = Batcher(db, self.store, on_message=self._publish,
                               on_usage=self.metrics.usage)
        self.welcome_config = WelcomeConfig(
            motd=settings.motd,
            advertise_version=settings.advertise_version,
            signal_error=settings.signal_error,
            hashcash_bits=settings.hashcash,
        )
        self.spent_stamps = hashcash.SpentStamps()
        self.connections: set[Connection] = set()
        self.rebooted = time.time()
        self.port: int | None = None
        self.metrics.watch_connections(lambda: len(self.connections))
        self.endpoint = MetricsEndpoint(
            self.metrics.registry, ready=self._ready, refresh=self._refresh_gauges)

    # -- lifecycle -----------------------------------------------------------------------------

    async def serve(
        self, stop: trio.Event, *,
        listeners: list[trio.SocketListener] | None = None,
        metrics_listener: trio.SocketListener | None = None,
        task_status: trio.TaskStatus[MailboxServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until `stop`; a worker passes the sockets its group bound for it."""
        async with trio.open_nursery() as background:
            if metrics_listener is not None:
                await background.start(self.endpoint.serve_listeners, [metrics_listener])
            elif self.settings.metrics_port:
                await background.start(
                    self.endpoint.serve, self.settings.metrics_host, self.settings.metrics_port)
            background.start_soon(self.batcher.run)
            background.start_soon(self._prune_loop)
            await background.start(self._listen_loop)
            async with trio.open_nursery() as handlers:
                if listeners is None:
                    listeners = await trio.open_tcp_listeners(
                        self.settings.port, host=self.settings.host)
                self.port = listeners[0].socket.getsockname()[1]
                accepting = trio.CancelScope()

                async def accept(
                    task_status: trio.TaskStatus[list[trio.SocketListener]],
                ) -> None:
                    with accepting:
                        await trio.serve_listeners(
                            self._serve_stream, listeners, handler_nursery=handlers,
                            task_status=task_status,
                        )

                await handlers.start(accept)
                log.info("mailbox listening on %s:%s (/v1)", self.settings.host, self.port)
                task_status.started(self)
                await stop.wait()
                log.info("stopping: closing %d connections", len(self.connections))
                self.port = None  # not ready any more
                accepting.cancel()
                for listener in listeners:
                    await listener.aclose()
                with trio.move_on_after(self.settings.shutdown_grace_seconds):
                    async with trio.open_nursery() as closing:
                        for conn in list(self.connections):
                            closing.start_soon(conn.ws.aclose, 1001, "server shutting down")
                handlers.cancel_scope.cancel()
            background.cancel_scope.cancel()
        log.info("mailbox stopped")

    async def _ready(self) -> bool:
        """Listening, and the database answers."""
        if self.port is None:
            return False
        await self.db.ping()
        return True

    async def _refresh_gauges(self) -> None:
        def count(conn: Any) -> Any:
            return conn.execute(
                "SELECT (SELECT count(*) FROM nameplates), (SELECT count(*) FROM mailboxes)"
            ).fetchone()

        nameplates, mailboxes = await self.db.run(count)
        self.metrics.nameplates_in_use.set(nameplates)
        self.metrics.mailboxes_in_use.set(mailboxes)

    # -- connections ---------------------------------------------------------------------------

    async def _serve_stream(self, stream: trio.SocketStream) -> None:
        """One TCP connection: a WebSocket on /v1, or a plain HTTP request."""
        head: bytes | None = None
        try:
            with trio.move_on_after(HANDSHAKE_SECONDS) as handshake:
                head = await read_head(stream)
                if head is not None and not is_upgrade(head):
                    self.metrics.connections["http"].inc()
                    await stream.send_all(plain_response(head))
                    head = None
            if head is None:
                if handshake.cancelled_caught:
                    self.metrics.dropped["handshake_timeout"].inc()
                await stream.aclose()
                return
            async with trio.open_nursery() as nursery:
                request: WebSocketRequest | None = None
                with trio.move_on_after(HANDSHAKE_SECONDS):
                    request = await wrap_server_stream(
                        nursery, ReplayStream(stream, head), max_message_size=MAX_MESSAGE_BYTES
                    )
                if request is None:
                    self.metrics.dropped["handshake_timeout"].inc()
                else:
                    host, port = stream.socket.getpeername()[:2]
                    await self._handle(request, Peer(str(host), int(port)))
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle(self, request: WebSocketRequest, peer: Peer) -> None:
        # trio-websocket swallows a handler's exception silently; a bug must at least be logged.
        try:
            await self._serve_request(request, peer)
        except Exception:
            log.exception("connection handler failed")

    async def _serve_request(self, request: WebSocketRequest, peer: Peer) -> None:
        if request.path.rstrip("/") != "/v1":
            await request.reject(404, body=b"Not Found\n")
            return
        ws = await request.accept(extra_headers=[(b"Server", SERVER_HEADER)])
        self.metrics.connections["websocket"].inc()
        try:
            await self._converse(request, ws, peer)
        finally:
            with trio.move_on_after(2):
                await ws.aclose()

    async def _converse(
        self, request: WebSocketRequest, ws: WebSocketConnection, peer: Peer
    ) -> None:
        address = peer_address(
            peer.host, peer.port, request.headers, self.settings.trusted_proxies
        )
        session = Session(self.welcome_config, spent=self.spent_stamps)
        send, receive = trio.open_memory_channel[Frame](OUTBOUND_QUEUE)
        conn = Connection(ws, session, send, self.metrics)
        conn.send(session.welcome(address))
        self.connections.add(conn)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, conn, receive)
                nursery.start_soon(self._keepalive, ws)
                try:
                    await self._read(conn)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self.connections.discard(conn)
            self._unsubscribe(conn)

    async def _write(self, conn: Connection, receive: trio.MemoryReceiveChannel[Frame]) -> None:
        """Write frames in order; while a command is being answered, gather its frames first.

        An `ack` then waits for its command's result (milliseconds), and both leave in one
        write together with any `message` that was queued between them.
        """
        try:
            async for frame in receive:
                await conn.settled.wait()
                frames = [frame]
                while True:
                    try:
                        frames.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                now = time.time()
                await send_texts(conn.ws, [encode(f, now) for f in frames])
        except ConnectionClosed:
            pass
        finally:
            conn.drained.set()

    async def _keepalive(self, ws: WebSocketConnection) -> None:
        while True:
            await trio.sleep(self.settings.websocket_ping_interval_seconds)
            try:
                with trio.move_on_after(self.settings.websocket_ping_timeout_seconds) as scope:
                    await ws.ping()
            except ConnectionClosed:
                return
            if scope.cancelled_caught:
                self.metrics.dropped["ping_timeout"].inc()
                await ws.aclose(1001, "ping timeout")
                return

    async def _read(self, conn: Connection) -> None:
        while not conn.overflowed:
            try:
                raw = await conn.ws.get_message()
            except ConnectionClosed:
                return
            log.debug("received %.200r", raw)
            step = conn.session.receive(raw, time.time())
            self.metrics.command(step.orig.get("type") if step.orig is not None else None)
            if isinstance(step.op, Close):
                self.metrics.client_mood(step.op.mood)
            for reply in step.replies:
                conn.send(reply)
            if step.close:
                self.metrics.dropped["permission_denied"].inc()
                await self._finish_writes_and_close(conn, 1008, "permission denied")
                return
            if step.op is not None:
                conn.settled = trio.Event()
                try:
                    await self._perform(conn, step)
                except StoreFailed:
                    conn.send(error_frame("internal server error", step.orig))
                    self.metrics.dropped["database"].inc()
                    await self._finish_writes_and_close(conn, 1011, "database unavailable")
                    return
                finally:
                    conn.settled.set()
        self.metrics.dropped["too_slow"].inc()
        await conn.ws.aclose(1008, "too slow to read")

    async def _finish_writes_and_close(self, conn: Connection, code: int, reason: str) -> None:
        conn.settled.set()  # the writer must not hold back the last frames
        conn.outbound.close()
        with trio.move_on_after(2):
            await conn.drained.wait()
        await conn.ws.aclose(code, reason)

    async def _perform(self, conn: Connection, step: Step) -> None:
        op = step.op
        session = conn.session
        assert op is not None
        if isinstance(op, ListNameplates) and not self.settings.allow_list:
            replies = session.complete(op, [], step.orig)
        elif isinstance(op, Open):
            key = (op.app, op.mailbox)
            subscriber = Subscriber(lambda m: conn.send(m.frame()))
            self.hub.subscribe(key, subscriber)
            try:
                result = await self.batcher.submit(op)
            except BaseException:
                self.hub.unsubscribe(key, subscriber)
                raise
            replies = session.complete(op, result, step.orig)
            if isinstance(result, Refused):
                self.hub.unsubscribe(key, subscriber)
            else:
                conn.subscription = (key, subscriber)
                for reply in replies:
                    conn.send(reply)
                replies = []
                messages = result if isinstance(result, list) else []
                subscriber.replayed(m.seq for m in messages if isinstance(m, Message))
        else:
            if isinstance(op, Close):
                self._unsubscribe(conn)
            result = await self.batcher.submit(op)
            replies = session.complete(op, result, step.orig)
        for reply in replies:
            conn.send(reply)

    def _unsubscribe(self, conn: Connection) -> None:
        if conn.subscription is not None:
            self.hub.unsubscribe(*conn.subscription)
            conn.subscription = None

    def _publish(self, op: Add, message: Message) -> None:
        self.metrics.messages.inc()
        self.hub.publish((op.app, op.mailbox), message)

    # -- other processes' messages ---------------------------------------------------------------

    async def _listen_loop(self, task_status: trio.TaskStatus[None]) -> None:
        """Deliver messages other processes stored to this process's subscribers.

        After every (re)connection the subscribed mailboxes are read again, so a message
        announced while the listening connection was down is still delivered.
        """
        started = False
        while True:
            try:
                async with Listener(self.db.url, NOTIFY_CHANNEL) as listener:
                    if not started:
                        task_status.started()
                        started = True
                    await self._catch_up()
                    async for batch in listener.batches():
                        await self._deliver_remote(batch)
            except DatabaseUnavailable as exc:
                log.warning("message notifications interrupted (%s); reconnecting", exc)
            except Exception:
                log.exception("message notifications failed; reconnecting")
            if not started:
                task_status.started()  # serve anyway: delivery within this process works
                started = True
            await trio.sleep(1)

    async def _deliver_remote(self, batch: list[Any]) -> None:
        seqs = []
        for note in batch:
            try:
                payload = json.loads(note.payload)
            except ValueError:
                continue
            if payload.get("o") == self.server_id:
                continue  # delivered by the batcher at commit
            key = (payload.get("a"), payload.get("m"))
            if key[0] is None or self.hub.is_subscribed(key):
                seqs.append(int(payload["s"]))
        if not seqs:
            return
        rows = await self.db.run(lambda conn: Store.messages_by_seq(conn, seqs))
        for app, mailbox, message in rows:
            self.hub.publish((app, mailbox), message)

    async def _catch_up(self) -> None:
        keys = self.hub.subscribed_mailboxes()
        if not keys:
            return

        def read(conn: Any) -> list[tuple[Key, list[Message]]]:
            return [(key, Store.messages(conn, *key)) for key in keys]

        for key, messages in await self.db.run(read):
            for message in messages:
                self.hub.publish(key, message)

    # -- pruning -------------------------------------------------------------------------------

    async def prune_once(self, now: float) -> Any:
        cutoff = now - self.settings.channel_expiry_seconds
        subscribed = self.hub.subscribed_mailboxes()
        count = self.hub.subscriber_count()

        def work(conn: Any) -> Any:
            report = self.store.prune(conn, now=now, cutoff=cutoff, subscribed=subscribed)
            self.store.write_current(
                conn, server_id=self.server_id, rebooted=self.rebooted, now=now,
                blur_seconds=self.settings.blur_usage_seconds, subscribed_connections=count,
            )
            return report

        try:
            report = await self.db.run(work)
        except Exception:
            self.metrics.prune_runs["failed"].inc()
            raise
        self.metrics.prune_runs["ran" if report.ran else "skipped"].inc()
        self.metrics.pruned["nameplates"].inc(report.nameplates)
        self.metrics.pruned["mailboxes"].inc(report.mailboxes)
        self.metrics.usage(report.records)
        if report.mailboxes or report.nameplates:
            log.info("pruned %d mailboxes, %d nameplates", report.mailboxes, report.nameplates)
        return report

    async def _prune_loop(self) -> None:
        while True:
            try:
                await self.prune_once(time.time())
            except Exception:
                log.exception("pruning failed; will retry")
            await trio.sleep(self.settings.prune_interval_seconds)
