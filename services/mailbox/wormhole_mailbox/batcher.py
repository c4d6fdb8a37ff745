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


class Ticket:
    """An op on its way through the batcher, and its outcome once its batch committed.

    `after`: an earlier ticket of the same connection this op depends on (a command sent
    before the previous one was answered, docs/mailbox-protocol.md §3.3): the op runs only if
    that one succeeded, and is `SKIPPED` otherwise.
    """

    __slots__ = ("after", "done", "failure", "op", "result")

    def __init__(self, op: Op, after: Ticket | None = None) -> None:
        self.op = op
        self.after = after
        self.done = trio.Event()
        self.result: Result = None
        self.failure: str | None = None

    @property
    def succeeded(self) -> bool:
        """It ran, and took effect (committed, not refused)."""
        return (self.done.is_set() and self.failure is None
                and not isinstance(self.result, Refused | Skipped))

    async def outcome(self) -> Result:
        """The op's result once committed; `StoreFailed` if the database could not run it."""
        if not self.done.is_set():  # else no scheduler pass: a pipelined op is often done
            await self.done.wait()
        if self.failure is not None:
            raise StoreFailed(self.failure)
        return self.result


class Batcher:
    def __init__(
        self, db: Database, store: Store, *, on_message: Callable[[Add, Message], None],
        max_batch: int = MAX_BATCH, queue_size: int = 10_000,
        on_usage: Callable[[Records], None] | None = None,
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

    async def submit(self, op: Op) -> Result:
        """Run `op` in the next batch; its result once committed."""
        ticket = Ticket(op)
        try:  # without the yield of `send` (a scheduler pass per op) unless the queue is full
            self._send.send_nowait(ticket)
        except trio.WouldBlock:
            await self._send.send(ticket)
        return await ticket.outcome()

    def start(self, op: Op, after: Ticket | None = None) -> Ticket | None:
        """Queue `op` without waiting (None if the queue is full): its ticket."""
        ticket = Ticket(op, after)
        try:
            self._send.send_nowait(ticket)
        except trio.WouldBlock:
            return None
        return ticket

    async def run(self) -> None:
        """The writer loop; runs until cancelled."""
        while True:
            await self._execute(await receive_batch(self._receive, self.max_batch))

    async def _execute(self, batch: list[Ticket]) -> None:
        run, after = _dependencies(batch)
        try:
            results, records = await self.store.execute(self.db, [t.op for t in run], after)
        except Exception as exc:
            reason = str(exc).strip() or type(exc).__name__
            self.failures.failed(type(exc).__name__, f"{reason} (a batch of {len(batch)})")
            for pending in run:
                pending.failure = reason
        else:
            if self.on_usage is not None and records:
                self.on_usage(records)
            for pending, result in zip(run, results, strict=True):
                if isinstance(result, Failed):
                    self._failed(pending, result)
                else:
                    pending.result = result
            self.failures.succeeded()
        for pending in batch:
            if isinstance(pending.op, Add) and isinstance(pending.result, Message):
                self.on_message(pending.op, pending.result)
        for pending in batch:
            pending.done.set()

    def _failed(self, pending: Ticket, failed: Failed) -> None:
        """One op failed alone: the client's error if it carried a value PostgreSQL refused,
        else a server error for that op."""
        kind = "here" if failed.sqlstate is None else _name(failed.sqlstate)
        self.rejected.failed(kind, f"{type(pending.op).__name__}: {failed.reason}")
        if failed.value_refused:
            pending.result = UNSTORABLE
        else:
            pending.failure = failed.reason


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
            ticket.result = SKIPPED
            continue
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
