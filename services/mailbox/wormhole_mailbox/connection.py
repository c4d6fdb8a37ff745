"""One client's WebSocket: a reader and a writer executing the session's actions; keep-alive
pings for all connections come from one task (`ClientHandler.run`).

The reader takes frames in order: the actions of one command (its ack, the store op, the
result) are all executed before those of the next, and the frames they queue are held until
then, so an ack never leaves before its command is done (durable, for a store op). The one
overlap: `add`s that arrived together with the command in the store go to the store at once,
each depending on the one before (`Session.pipeline`, `Ticket`), and are then answered in
turn. The writer sends queued frames as text, stamped with `server_tx` just before writing.
Nothing here decides protocol: every frame, subscription, close and count comes from the
`Session`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio
from wormhole_common.database import DatabaseUnavailable
from wormhole_common.wsconnection import WRITE_TIMEOUT, Closed, Upgrade, WebSocket

from wormhole_mailbox.batcher import CommandTimedOut, StoreFailed, Ticket
from wormhole_mailbox.core import hashcash
from wormhole_mailbox.core.actions import (
    Action,
    CloseConnection,
    Count,
    Frame,
    Pause,
    Perform,
    Replayed,
    ReplayRest,
    Send,
    Subscribe,
    Unsubscribe,
)
from wormhole_mailbox.core.addresses import Network, PeerAddress, is_trusted_proxy, peer_address
from wormhole_mailbox.core.hub import Hub, Subscriber
from wormhole_mailbox.core.limits import Limits, LimitSettings
from wormhole_mailbox.core.ops import Key, Message, Op, Result, Skipped
from wormhole_mailbox.core.read_clock import DEFAULT_STALL_SECONDS
from wormhole_mailbox.core.session import (
    Session,
    SessionConfig,
    command_timed_out,
    ping_timeout,
    replay_failed,
    shutting_down,
    store_failed,
    too_slow,
)
from wormhole_mailbox.metrics import MailboxMetrics
from wormhole_mailbox.outbound import Outbound

log = logging.getLogger(__name__)

SERVER_HEADER = b"Magic Wormhole Mailbox (wormhole-stack)"
CLOSE_SECONDS = 2  # to write what is queued before a close, and again for the client's answer
MAX_PIPELINED = 8  # ops of one connection in the store at once: its share of the queue


@dataclass(frozen=True)
class Services:
    """What every connection of a server shares."""

    hub: Hub
    submit: Callable[[Op], Awaitable[Result]]  # run an op in the store (group commit)
    metrics: MailboxMetrics
    ping_interval: float
    ping_timeout: float
    command_timeout: float  # a store op past it: an error, then a 1011 close
    # the pages of a mailbox after a seq (`replay.pages`), for an `open` with more than a page
    replay: Callable[[Key, int], AsyncGenerator[list[Message], None]] | None = None
    read_stall: float = DEFAULT_STALL_SECONDS  # a replay's client reading nothing: too slow
    write_timeout: float = WRITE_TIMEOUT  # for the client to read anything we have for it
    # queue an op without waiting, after the ticket it depends on (None: the queue is full);
    # without it, commands are never pipelined
    start: Callable[[Op, Ticket | None], Ticket | None] | None = None


@dataclass
class _Pipelined:
    """A command taken while earlier ones of its connection were in the store."""

    raw: str | bytes  # the frame, handled again in turn if its op was skipped
    before: Sequence[Action]  # its count and ack, executed when its turn comes
    perform: Perform
    ticket: Ticket


class ClientConnection:
    """A client's WebSocket and its session, from the welcome to the close."""

    def __init__(self, ws: WebSocket, session: Session, services: Services,
                 tasks: trio.Nursery) -> None:
        self.ws = ws
        self.session = session
        self.services = services
        self.outbound = Outbound(ws, tasks, stall_seconds=services.read_stall)
        self._subscription: tuple[Key, Subscriber] | None = None
        self._finished = trio.Event()  # `run` has returned
        self._waiting = trio.CancelScope()  # the reader's wait for the next frame
        self._interruption: Sequence[Action] = ()  # for the reader, between commands
        self._unread: list[str | bytes] = []  # frames taken from the socket, not yet handled
        self.opened = trio.current_time()
        self.pinging = False

    async def run(self, welcome: Sequence[Action]) -> None:
        """Execute the welcome, then serve the client until either side closes."""
        try:
            if not await self.execute(welcome):
                await self._read()
        finally:
            self.outbound.stop()
            self._unsubscribe()
            self.session.end(time.time())
            self._finished.set()

    async def shut_down(self) -> None:
        """The server is stopping: close, and return once the connection has ended."""
        self._interrupt(shutting_down())
        await self._finished.wait()

    def _interrupt(self, actions: Sequence[Action]) -> None:
        """Have the reader execute `actions` (a close) before it takes another frame.

        Closing is the reader's: it reads the client's answer to our close frame.
        """
        if not self._interruption:
            self._interruption = actions
        self._waiting.cancel()

    async def execute(self, actions: Sequence[Action]) -> bool:
        """Do what the session asked, in order; True once the connection is closed."""
        for action in actions:
            match action:
                case Send(frame):
                    self.outbound.queue(frame)
                case Count():
                    self.services.metrics.count(action)
                case Subscribe(key):
                    self._subscribe(key)
                case Unsubscribe():
                    self._unsubscribe()
                case Replayed(seqs):
                    assert self._subscription is not None, "replay without a subscription"
                    self._subscription[1].replayed(seqs)
                case ReplayRest():
                    if rest := await self._replay_rest(action):
                        return await self.execute(rest)
                case Pause(seconds):
                    with trio.CancelScope() as self._waiting:  # an interruption ends it
                        await trio.sleep(seconds)
                case CloseConnection():
                    await self._close(action)
                    return True
                case Perform():
                    return await self._perform(action)
        return False

    async def _perform(self, perform: Perform) -> bool:
        """Run the op, and any `add`s the client sent right after it (`_pipeline`); then
        what the session says next for each, in order."""
        ticket = self.services.start(perform.op, None) if self.services.start else None
        if ticket is None:
            return await self._complete(perform, self._submitted(perform.op))
        pipelined = self._pipeline(ticket)
        if not pipelined:
            return await self._complete(perform, ticket.outcome())
        subscriber = self._subscription[1] if self._subscription is not None else None
        if subscriber is not None:
            subscriber.hold()  # each add's copy goes out after that add's ack
        try:
            if await self._complete(perform, ticket.outcome(), subscriber):
                return True
            for n, step in enumerate(pipelined):
                await step.ticket.done.wait()  # or its deadline passed (`Batcher.start`)
                if isinstance(step.ticket.result, Skipped):
                    # an op it depended on failed: these commands are handled again, in turn
                    self._unread[:0] = [p.raw for p in pipelined[n:]]
                    return False
                if await self.execute(step.before) or await self._complete(
                        step.perform, step.ticket.outcome(), subscriber):
                    return True
        finally:
            if subscriber is not None:
                subscriber.stop_holding()
        return False

    def _pipeline(self, first: Ticket) -> list[_Pipelined]:
        """Send to the store now the frames already received that the session lets go
        (`Session.pipeline`), each depending on the one before; the first it does not is
        kept for the reader."""
        pipelined: list[_Pipelined] = []
        while (not self._unread and len(pipelined) + 1 < MAX_PIPELINED
               and (raw := self.ws.receive_nowait()) is not None):
            pending = [first.op, *(p.perform.op for p in pipelined)]
            step = self._pipelined(raw, pending, pipelined[-1].ticket if pipelined else first)
            if step is None:
                self._unread.append(raw)
                break
            pipelined.append(step)
        return pipelined

    def _pipelined(self, raw: str | bytes, pending: list[Op], last: Ticket,
                   ) -> _Pipelined | None:
        assert self.services.start is not None
        actions = self.session.pipeline(raw, time.time(), pending)
        if actions is None:
            return None
        perform = actions[-1]
        assert isinstance(perform, Perform)
        ticket = self.services.start(perform.op, last)
        return None if ticket is None else _Pipelined(raw, actions[:-1], perform, ticket)

    async def _submitted(self, op: Op) -> Result:
        """`op` run through `Services.submit`, under the command's deadline."""
        with trio.move_on_after(self.services.command_timeout):
            return await self.services.submit(op)
        raise CommandTimedOut

    async def _complete(self, perform: Perform, outcome: Awaitable[Result],
                        subscriber: Subscriber | None = None) -> bool:
        """Wait for the op (a ticket is done at its deadline at the latest); then what the
        session says next. With `subscriber` held, an add's own copy is let go after its
        ack."""
        result: Result = None
        try:
            result = await outcome
        except StoreFailed:
            actions = store_failed(perform)
        except CommandTimedOut:
            actions = command_timed_out(perform)
        else:
            actions = self.session.complete(perform, result)
        closed = await self.execute(actions)
        if subscriber is not None and isinstance(result, Message) and not closed:
            subscriber.release_through(result.seq)
        return closed

    async def _execute_command(self, actions: Sequence[Action]) -> bool:
        """`execute`, holding the frames it queues until it is done."""
        self.outbound.hold()
        try:
            return await self.execute(actions)
        finally:
            self.outbound.release()

    def _subscribe(self, key: Key) -> None:
        self._unsubscribe()
        subscriber = Subscriber(lambda message: self.outbound.queue(message.frame()))
        self.services.hub.subscribe(key, subscriber)
        self._subscription = (key, subscriber)

    def _unsubscribe(self) -> None:
        if self._subscription is not None:
            self.services.hub.unsubscribe(*self._subscription)
            self._subscription = None

    async def _close(self, close: CloseConnection) -> None:
        self.outbound.release()
        if close.flush:
            self.outbound.close()
            with trio.move_on_after(CLOSE_SECONDS):
                await self.outbound.drained.wait()
        with trio.move_on_after(CLOSE_SECONDS):  # the client's answer; else the TCP closes
            await self.ws.close(close.code, close.reason)

    async def _read(self) -> None:
        while True:
            actions: Sequence[Action]
            if self.outbound.overflowed:
                actions = too_slow()
            elif self._interruption:
                actions = self._interruption
            elif self._unread:
                actions = self.session.receive(self._unread.pop(0), time.time())
            else:
                with trio.CancelScope() as self._waiting:
                    try:
                        raw = await self.ws.receive()
                    except Closed:
                        return
                if self._waiting.cancelled_caught:
                    continue
                log.debug("received %.200r", raw)
                actions = self.session.receive(raw, time.time())
            if await self._execute_command(actions):
                return

    async def _replay_rest(self, rest: ReplayRest) -> Sequence[Action]:
        """Stream the rest of the mailbox with back-pressure: the next page is read from the
        store only once the writer has sent the previous one (to the socket's buffer), so a
        replay holds one page whatever the mailbox's size. What to do instead if it cannot
        finish (else nothing)."""
        assert self._subscription is not None and self.services.replay is not None
        key, subscriber = self._subscription
        seqs = set(rest.seqs)
        self.outbound.release()  # the ack and the first page go out first
        try:
            if not await self._written([]):
                return self._stalled()
            async with contextlib.aclosing(self.services.replay(key, rest.after)) as pages:
                async for page in pages:
                    seqs.update(m.seq for m in page)
                    if not await self._written([m.frame() for m in page]):
                        return self._stalled()
        except DatabaseUnavailable:
            return replay_failed()
        subscriber.replayed(seqs)
        return ()

    def _stalled(self) -> Sequence[Action]:
        """Why a replay stopped: an interruption, the client gone (the reader finds out),
        or a client that stopped reading."""
        return self._interruption or (() if self.outbound.drained.is_set() else too_slow())

    async def _written(self, frames: list[Frame]) -> bool:
        """`frames` are sent: False if the client reads nothing for `read_stall` seconds, or
        is gone, or an interruption (a shutdown, a ping timeout) came first."""
        with trio.CancelScope() as self._waiting:
            return await self.outbound.written(frames)
        return False

    async def ping(self) -> None:
        """One keep-alive ping (`ClientHandler.run`); no pong in time: a close."""
        self.pinging = True
        try:
            with trio.move_on_after(self.services.ping_timeout) as scope:
                await self.ws.ping()
        except Closed:
            return
        finally:
            self.pinging = False
        if scope.cancelled_caught:
            self._interrupt(ping_timeout())


class ClientHandler:
    """Accepts upgraded requests on /v1 and keeps the set of open client connections."""

    def __init__(
        self, services: Services, config: SessionConfig,
        trusted_proxies: Sequence[Network] = (), limits: Limits | None = None,
    ) -> None:
        self.services = services
        self.config = config
        self.trusted_proxies = trusted_proxies
        self.limits = limits if limits is not None else Limits(LimitSettings())
        self.spent = hashcash.SpentStamps()  # shared: a stamp is spent for every connection
        self.connections: set[ClientConnection] = set()
        self._tasks: trio.Nursery | None = None  # `run`'s: writers and keep-alive pings

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """The connections' shared tasks, until cancelled: their writers (each only while it
        has frames to send), and keep-alive pings for every connection open for
        `ping_interval`, once per interval, from one task (most connections live a second and
        are never pinged). Connections are served only while this runs."""
        interval = self.services.ping_interval
        async with trio.open_nursery() as self._tasks:
            task_status.started()
            while True:
                await trio.sleep(interval)
                due = trio.current_time() - interval
                for connection in list(self.connections):
                    if connection.opened <= due and not connection.pinging:
                        self._tasks.start_soon(connection.ping)

    async def __call__(
        self, request: Upgrade, peer: PeerAddress,
    ) -> WebSocket | None:
        """Serve the upgrade; the connection (closed by now) if it was accepted."""
        # a bug must be logged, and never cost the client more than its connection
        try:
            if request.path.rstrip("/") != "/v1":
                await request.reject(404, body=b"Not Found\n")
                return None
            address = peer_address(peer.host, peer.port, request.headers,
                                   self.trusted_proxies)
            if not is_trusted_proxy(peer.host, self.trusted_proxies):  # admitted at accept
                return await self._serve_admitted(request, address)
            if refusal := self.limits.connections.admit(address.host):
                self.services.metrics.refusals[refusal.reason].inc()
                await request.reject(503, body=refusal.text.encode() + b"\n")
                return None
            try:
                return await self._serve_admitted(request, address)
            finally:
                self.limits.connections.leave(address.host)
        except Exception:
            log.exception("connection handler failed")
            return None

    async def _serve_admitted(
        self, request: Upgrade, address: PeerAddress,
    ) -> WebSocket:
        # the 101 goes out with the welcome, written at once by `connection.run`
        ws = await request.accept([(b"Server", SERVER_HEADER)], self.services.write_timeout,
                                  deferred=True)
        self.services.metrics.connections["websocket"].inc()
        session = Session(self.config, spent=self.spent, quota=self.limits.client(address.host))
        assert self._tasks is not None, "ClientHandler.run is not running"
        connection = ClientConnection(ws, session, self.services, self._tasks)
        self.connections.add(connection)
        try:
            await connection.run(session.start(address))
        finally:
            self.connections.discard(connection)
            await ws.aclose()
        return ws
