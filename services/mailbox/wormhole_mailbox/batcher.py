"""Group commit: the commands of many connections share one statement, one transaction and one
commit.

The reference's throughput limit is one durable commit per command. Here one writer task
takes the ops that are waiting (at most `MAX_BATCH`), runs them as one statement that is a
transaction of its own (`Store.execute`, on a connection trio drives without a thread); each
caller gets its own result only after that commit, so nothing is delivered before it is
durable. Committed messages are handed to `on_message` in storage order before any caller
wakes.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable

import trio
from psycopg import errors
from wormhole_common.channels import receive_batch
from wormhole_common.core.failures import FailureLog
from wormhole_common.database import Database

from wormhole_mailbox.core.ops import (
    SKIPPED,
    UNSTORABLE,
    Add,
    Message,
    Op,
    Refused,
    Result,
    Skipped,
)
from wormhole_mailbox.core.sqlbatch import Failed
from wormhole_mailbox.core.usage import Records
from wormhole_mailbox.store import Store

log = logging.getLogger(__name__)

# Each op of a batch runs in a subtransaction; past 64 subtransaction ids in one transaction
# (PostgreSQL's PGPROC_MAX_CACHED_SUBXIDS) every snapshot taken meanwhile, by any backend,
# must consult pg_subtrans. So a batch holds at most 64 ops.
MAX_BATCH = 64


class StoreFailed(Exception):
    """The database could not execute the op; the caller reports a server error. (An op the
    database refused for a value it carried is not this: its result is `UNSTORABLE`.)"""


class CommandTimedOut(Exception):
    """The op was not committed within the command's deadline (it may still be, later)."""


class Ticket:
    """An op on its way through the batcher, and its outcome once its batch committed.

    `after`: an earlier ticket of the same connection this op depends on (a command sent
    before the previous one was answered, docs/mailbox-protocol.md §3.3): the op runs only if
    that one succeeded, and is `SKIPPED` otherwise.
    """

    __slots__ = ("after", "deadline", "done", "failure", "op", "result", "timed_out")

    def __init__(self, op: Op, after: Ticket | None = None, deadline: float = math.inf,
                 ) -> None:
        self.op = op
        self.after = after
        self.deadline = deadline  # trio time: past it, the ticket is done, `timed_out`
        self.done = trio.Event()
        self.result: Result = None
        self.failure: str | None = None
        self.timed_out = False

    @property
    def succeeded(self) -> bool:
        """It ran, and took effect (committed, not refused)."""
        return (self.done.is_set() and self.failure is None and not self.timed_out
                and not isinstance(self.result, Refused | Skipped))

    async def outcome(self) -> Result:
        """The op's result once committed; `StoreFailed` if the database could not run it,
        `CommandTimedOut` past the deadline."""
        if not self.done.is_set():  # else no scheduler pass: a pipelined op is often done
            await self.done.wait()
        if self.timed_out:
            raise CommandTimedOut
        if self.failure is not None:
            raise StoreFailed(self.failure)
        return self.result

    def settle(self, result: Result, failure: str | None) -> None:
        """The batch is over: its outcome, unless the deadline has already given one."""
        if not self.done.is_set():
            self.result, self.failure = result, failure
            self.done.set()


class Batcher:
    def __init__(
        self, db: Database, store: Store, *, on_message: Callable[[Add, Message], None],
        max_batch: int = MAX_BATCH, queue_size: int = 10_000,
        on_usage: Callable[[Records], None] | None = None,
        command_timeout: float | None = None,
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} ops")
        self.db = db
        self.store = store
        self.on_message = on_message
        self.on_usage = on_usage  # told the usage records of each committed transaction
        self.max_batch = max_batch
        # an outage fails every op alike: one line per kind and a summary, not one per op
        self.failures = FailureLog(log, "database write")
        self.rejected = FailureLog(log, "op rejected by the database")  # never "recovers"
        self._send, self._receive = trio.open_memory_channel[Ticket](queue_size)
        # Tickets from `start` with a deadline, oldest first: one task expires them, instead
        # of a cancel scope (a deadline in trio's heap) around every op's wait.
        self.command_timeout = command_timeout
        self._watched: deque[Ticket] = deque()

    async def submit(self, op: Op) -> Result:
        """Run `op` in the next batch; its result once committed."""
        ticket = Ticket(op)
        try:  # without the yield of `send` (a scheduler pass per op) unless the queue is full
            self._send.send_nowait(ticket)
        except trio.WouldBlock:
            await self._send.send(ticket)
        return await ticket.outcome()

    def start(self, op: Op, after: Ticket | None = None) -> Ticket | None:
        """Queue `op` without waiting (None if the queue is full): its ticket, done at the
        latest `command_timeout` seconds from now (`timed_out`)."""
        timeout = self.command_timeout
        ticket = Ticket(op, after, math.inf if timeout is None else trio.current_time() + timeout)
        try:
            self._send.send_nowait(ticket)
        except trio.WouldBlock:
            return None
        if timeout is not None:
            self._watched.append(ticket)
        return ticket

    async def run(self) -> None:
        """The writer loop, and the expiry of tickets; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            if self.command_timeout is not None:
                nursery.start_soon(self._expire, min(0.5, self.command_timeout / 4))
            while True:
                await self._execute(await receive_batch(self._receive, self.max_batch))

    async def _expire(self, every: float) -> None:
        """End the tickets past their deadline, looking `every` seconds (a quarter of the
        timeout, at most half a second). Deadlines follow the order of `_watched`."""
        while True:
            await trio.sleep(every)
            now = trio.current_time()
            watched = self._watched
            while watched and (watched[0].done.is_set() or watched[0].deadline <= now):
                ticket = watched.popleft()
                if not ticket.done.is_set():
                    ticket.timed_out = True
                    ticket.done.set()

    async def _execute(self, batch: list[Ticket]) -> None:
        run, after = _dependencies(batch)
        outcomes: dict[int, tuple[Result, str | None]]  # by id(ticket), for those run
        try:
            results, records = await self.store.execute(self.db, [t.op for t in run], after)
        except Exception as exc:
            reason = str(exc).strip() or type(exc).__name__
            self.failures.failed(type(exc).__name__, f"{reason} (a batch of {len(batch)})")
            outcomes = {id(t): (None, reason) for t in run}
        else:
            if self.on_usage is not None and records:
                self.on_usage(records)
            outcomes = {id(t): self._outcome(t, result)
                        for t, result in zip(run, results, strict=True)}
            self.failures.succeeded()
        # stored messages are delivered even if their command timed out meanwhile
        for ticket in batch:
            result, _failure = outcomes.get(id(ticket), (SKIPPED, None))
            if isinstance(ticket.op, Add) and isinstance(result, Message):
                self.on_message(ticket.op, result)
        for ticket in batch:
            ticket.settle(*outcomes.get(id(ticket), (SKIPPED, None)))

    def _outcome(self, ticket: Ticket, result: Result | Failed) -> tuple[Result, str | None]:
        if isinstance(result, Failed):
            return self._failed(ticket, result)
        return result, None

    def _failed(self, pending: Ticket, failed: Failed) -> tuple[Result, str | None]:
        """One op failed alone: the client's error if it carried a value PostgreSQL refused,
        else a server error for that op."""
        kind = "here" if failed.sqlstate is None else _name(failed.sqlstate)
        self.rejected.failed(kind, f"{type(pending.op).__name__}: {failed.reason}")
        if failed.value_refused:
            return UNSTORABLE, None
        return None, failed.reason


def _dependencies(batch: list[Ticket]) -> tuple[list[Ticket], list[int | None]]:
    """The tickets to run, and for each the index (among them) of the one it depends on.

    A ticket whose dependency is in an earlier batch runs unconditionally if that one
    succeeded and is `SKIPPED` here if not; one whose dependency is in this batch leaves it
    to the statement (`Statement`). A ticket is always queued after its dependency.
    """
    run: list[Ticket] = []
    after: list[int | None] = []
    position: dict[int, int] = {}
    for ticket in batch:
        depends = ticket.after
        index = position.get(id(depends)) if depends is not None else None
        if depends is not None and index is None and not depends.succeeded:
            continue  # SKIPPED
        position[id(ticket)] = len(run)
        run.append(ticket)
        after.append(index)
    return run, after


def _name(sqlstate: str) -> str:
    """The condition's name for logs (`ProgramLimitExceeded`), from its SQLSTATE."""
    try:
        return errors.lookup(sqlstate).__name__
    except KeyError:
        return sqlstate
