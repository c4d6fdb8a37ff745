"""One statement at a time on a dedicated connection, driven by trio without a worker thread.

A hot path that is one statement per transaction (the mailbox's group commit) need not pay a
thread hop per round trip: libpq's non-blocking API (`psycopg.pq`, public) sends the
statement, trio waits on the connection's socket, and libpq reads the answer. The connection
is in autocommit, so the statement is its own transaction: PostgreSQL commits it before it
says it is ready for the next query (and with `synchronous_commit` on, the commit is durable
then), and `value` returns only after that, having read every result up to that point.

A caller that is cancelled or passes its deadline leaves the connection in an unknown state
(the statement may be running, or its answer half read): the query is cancelled and the
connection closed in a worker thread (a frozen server must not hold up trio), and the next
statement connects afresh. Whether the abandoned statement committed is unknown, as for any
transaction whose commit's answer is lost; it did not if the cancel reached the server first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import psycopg
import trio
from psycopg import pq

log = logging.getLogger(__name__)


class ConnectionLost(Exception):
    """The connection broke while a statement was on it: its outcome is unknown."""


def _abandon(conn: psycopg.Connection) -> None:
    """Cancel whatever `conn` runs, then close it (in a worker thread: either may wait)."""
    try:
        if conn.pgconn.status == pq.ConnStatus.OK:
            conn.cancel_safe(timeout=2.0)
    except psycopg.Error as exc:
        log.warning("could not cancel an abandoned statement: %s", exc)
    finally:
        conn.close()


class _Connecting:
    """A connection made in a worker thread, closed if its caller gave up waiting for it."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._abandoned = False

    def __call__(self) -> psycopg.Connection:
        conn = self._connect()
        with self._lock:
            self._conn = conn
            if self._abandoned:
                conn.close()
        return conn

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            if self._conn is not None:
                self._conn.close()


class DirectConnection:
    """A connection in autocommit whose statements trio drives through libpq directly.

    Each statement is prepared on its first use on a connection (the hot path sends the same
    one again and again), up to `MAX_PREPARED` of them; others are sent unprepared.
    """

    MAX_PREPARED = 16

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect  # blocking: run in a worker thread, autocommit on
        self._conn: psycopg.Connection | None = None
        self._prepared: dict[bytes, bytes] = {}  # statement -> its name, on `_conn`
        self._lock = trio.Lock()  # one statement at a time
        self.closed = False

    async def value(self, sql: bytes, params: Sequence[bytes | None]) -> bytes | None:
        """Run `sql` with text parameters in its own transaction; the first column of its
        first row as text (None for NULL or no row). A statement PostgreSQL refuses raises
        the psycopg error of its SQLSTATE; a broken connection `ConnectionLost` or
        `psycopg.OperationalError`. Cancellation abandons the statement (see above)."""
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller sends nothing
        try:  # not `async with`: an uncontended acquire would still wait a scheduler pass
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            return await self._value(sql, params)
        finally:
            self._lock.release()

    async def _value(self, sql: bytes, params: Sequence[bytes | None]) -> bytes | None:
        if self.closed:
            raise ConnectionLost("the connection is closed")
        if self._conn is None:
            self._conn = await self._connected()
            self._prepared = {}
        conn = self._conn
        try:
            value = await self._execute(conn.pgconn, sql, params)
        except BaseException as exc:
            if not _refused_cleanly(conn.pgconn, exc):
                self._conn = None
                trio.lowlevel.start_thread_soon(lambda: _abandon(conn),
                                                lambda _outcome: None)
            raise
        finally:
            if self._conn is not None and conn.pgconn.status != pq.ConnStatus.OK:
                self._conn = None
                conn.close()
        return value

    async def _execute(
        self, pgconn: pq.abc.PGconn, sql: bytes, params: Sequence[bytes | None],
    ) -> bytes | None:
        name = self._prepared.get(sql)
        if name is None and len(self._prepared) < self.MAX_PREPARED:
            new = f"direct_{len(self._prepared)}".encode()
            _value(await _exchange(pgconn, lambda: pgconn.send_prepare(new, sql)),
                   pq.ExecStatus.COMMAND_OK)
            self._prepared[sql] = name = new
        if name is None:
            results = await _exchange(pgconn, lambda: pgconn.send_query_params(sql, params))
        else:
            prepared = name
            results = await _exchange(
                pgconn, lambda: pgconn.send_query_prepared(prepared, params))
        return _value(results, pq.ExecStatus.TUPLES_OK)

    async def _connected(self) -> psycopg.Connection:
        connecting = _Connecting(self._connect)
        try:
            conn = await trio.to_thread.run_sync(connecting, abandon_on_cancel=True)
        except trio.Cancelled:
            connecting.abandon()
            raise
        conn.pgconn.nonblocking = 1
        return conn

    def close(self) -> None:
        self.closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def _exchange(pgconn: pq.abc.PGconn, send: Callable[[], None]) -> list[pq.abc.PGresult]:
    """Send one request, then read every result until the server is ready again."""
    send()
    while pgconn.flush():  # 1 while part of the request is still to be sent
        await trio.lowlevel.wait_writable(pgconn.socket)
    results: list[pq.abc.PGresult] = []
    while True:
        while pgconn.is_busy():
            await trio.lowlevel.wait_readable(pgconn.socket)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            return results
        results.append(result)


def _value(results: list[pq.abc.PGresult], expected: pq.ExecStatus) -> bytes | None:
    """The answer of a request's results: its error, if any (a failed commit comes after
    the rows), else its first value."""
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise _error(result)
    if not results:
        raise ConnectionLost("the server sent no result")
    first = results[0]
    if first.status != expected:
        raise ConnectionLost(f"unexpected result status {first.status}")
    return first.get_value(0, 0) if first.ntuples else None


def _refused_cleanly(pgconn: pq.abc.PGconn, exc: BaseException) -> bool:
    """The server refused the statement and is ready for the next one: nothing to clean up."""
    return (isinstance(exc, psycopg.Error) and exc.sqlstate is not None
            and pgconn.status == pq.ConnStatus.OK
            and pgconn.transaction_status == pq.TransactionStatus.IDLE)


def _error(result: pq.abc.PGresult) -> psycopg.Error:
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    message = (result.error_message or b"").decode("utf-8", "replace").strip()
    if sqlstate is None:
        return psycopg.OperationalError(message or "the statement failed")
    return psycopg.errors.lookup(sqlstate.decode("ascii"))(message)
