"""Group commit: the commands of many connections share one transaction and one commit.

The reference's throughput limit is one durable commit per command. Here one writer task
takes every op that is waiting, runs them in a single transaction and commits once; each
caller gets its own result only after that commit, so nothing is delivered before it is
durable. Committed messages are handed to `on_message` in storage order before any caller
wakes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import trio
from wormhole_common.channels import receive_batch
from wormhole_common.core.failures import FailureLog
from wormhole_common.database import Database, rejects_value

from wormhole_mailbox.core.ops import UNSTORABLE, Add, Message, Op, Result
from wormhole_mailbox.pipeline import OpFailed
from wormhole_mailbox.records import Records
from wormhole_mailbox.store import Store

log = logging.getLogger(__name__)


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
        max_batch: int = 512, queue_size: int = 10_000,
        on_usage: Callable[[Records], None] | None = None,
    ) -> None:
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
        records: Records = []
        ops = [p.op for p in batch]
        try:
            results = await self._results(ops, records)
        except Exception as exc:
            failure = OpFailed.of(exc)
            self.failures.failed(failure.kind, f"{failure.reason} (a batch of {len(batch)})")
            for pending in batch:
                pending.failure = failure.reason
        else:
            self._committed(records)
            for pending, result in zip(batch, results, strict=True):
                if isinstance(result, OpFailed):
                    self.rejected.failed(result.kind, f"{type(pending.op).__name__}: "
                                         f"{result.reason}")
                    if result.value_refused:  # the client's value: an error for it alone
                        pending.result = UNSTORABLE
                    else:
                        pending.failure = result.reason
                else:
                    pending.result = result
            self.failures.succeeded()
        for pending in batch:
            if isinstance(pending.op, Add) and isinstance(pending.result, Message):
                self.on_message(pending.op, pending.result)
        for pending in batch:
            pending.done.set()

    async def _results(self, ops: list[Op], records: Records) -> list[Result | OpFailed]:
        """The batch's results, committed. A value refused outside any op's own savepoint
        fails the whole transaction: then the batch runs again op by op, where that op
        fails alone and the others commit."""
        try:
            return await self.db.run(lambda conn: self._many(conn, ops, records))
        except Exception as exc:
            if not rejects_value(exc):
                raise
        return await self.db.run(lambda conn: self._many(conn, ops, records, one_by_one=True))

    def _many(
        self, conn: psycopg.Connection, ops: list[Op], records: Records, *,
        one_by_one: bool = False,
    ) -> list[Result | OpFailed]:
        records.clear()  # only the attempt that commits counts
        return self.store.execute_many(conn, ops, records, one_by_one=one_by_one)

    def _committed(self, records: Records) -> None:
        if self.on_usage is not None and records:
            self.on_usage(records)
