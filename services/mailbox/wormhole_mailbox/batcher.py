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
from dataclasses import dataclass, field

import trio
from psycopg import errors
from wormhole_common.channels import receive_batch
from wormhole_common.core.failures import FailureLog
from wormhole_common.database import Database

from wormhole_mailbox.core.ops import UNSTORABLE, Add, Message, Op, Result
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


@dataclass
class _Pending:
    op: Op
    done: trio.Event = field(default_factory=trio.Event)
    result: Result = None
    failure: str | None = None


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
        self._send, self._receive = trio.open_memory_channel[_Pending](queue_size)

    async def submit(self, op: Op) -> Result:
        pending = _Pending(op)
        try:  # without the yield of `send` (a scheduler pass per op) unless the queue is full
            self._send.send_nowait(pending)
        except trio.WouldBlock:
            await self._send.send(pending)
        await pending.done.wait()
        if pending.failure is not None:
            raise StoreFailed(pending.failure)
        return pending.result

    async def run(self) -> None:
        """The writer loop; runs until cancelled."""
        while True:
            await self._execute(await receive_batch(self._receive, self.max_batch))

    async def _execute(self, batch: list[_Pending]) -> None:
        try:
            results, records = await self.store.execute(self.db, [p.op for p in batch])
        except Exception as exc:
            reason = str(exc).strip() or type(exc).__name__
            self.failures.failed(type(exc).__name__, f"{reason} (a batch of {len(batch)})")
            for pending in batch:
                pending.failure = reason
        else:
            if self.on_usage is not None and records:
                self.on_usage(records)
            for pending, result in zip(batch, results, strict=True):
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

    def _failed(self, pending: _Pending, failed: Failed) -> None:
        """One op failed alone: the client's error if it carried a value PostgreSQL refused,
        else a server error for that op."""
        kind = "here" if failed.sqlstate is None else _name(failed.sqlstate)
        self.rejected.failed(kind, f"{type(pending.op).__name__}: {failed.reason}")
        if failed.value_refused:
            pending.result = UNSTORABLE
        else:
            pending.failure = failed.reason


def _name(sqlstate: str) -> str:
    """The condition's name for logs (`ProgramLimitExceeded`), from its SQLSTATE."""
    try:
        return errors.lookup(sqlstate).__name__
    except KeyError:
        return sqlstate
