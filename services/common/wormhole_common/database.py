"""The one adapter between trio and blocking psycopg.

psycopg's async API needs asyncio, so each unit of work (one transaction) runs in a worker
thread on a pooled connection. A `CapacityLimiter` sized to the pool bounds the threads; a
cancelled caller really cancels its query (`cancel_safe`), and `statement_timeout` is the
backstop for anything that slips past. A hot path that is one statement per transaction uses
`statement` instead: a dedicated connection that trio drives without a thread (`direct.py`).

A frozen server (SIGSTOP, a hung host) answers nothing, and `statement_timeout` is enforced by
that server: so every run also has a deadline on the trio side. Past it the caller gets
`DatabaseUnavailable`, the thread is abandoned (it still holds its connection and limiter
token until the server answers or TCP gives up) and its transaction rolls back instead of
committing (a `statement` past it is cancelled; it may have committed if it had finished).
TCP keepalives and `tcp_user_timeout` let a thread on a dead host's connection give up too.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import TypeVar

import psycopg
import trio
from psycopg.conninfo import make_conninfo

from wormhole_common.direct import ConnectionLost, DirectConnection
from wormhole_common.startup import failure_reason

log = logging.getLogger(__name__)
T = TypeVar("T")

Work = Callable[[psycopg.Connection], T]
# Told each unit of work's duration in seconds and whether it failed with a database error
# other than a refused value (called in the worker thread; prometheus_client metrics are
# thread-safe).
Observer = Callable[[float, bool], None]


# Pooled connections to close after their current transaction instead of reusing them.
_retiring: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


def retire(conn: psycopg.Connection) -> None:
    """Have the pool close `conn` once the current unit of work is over (its state on the
    client side can no longer be trusted, e.g. its prepared statements)."""
    _retiring.add(conn)


# A dead host or a cut network is noticed in about 10 s even on an idle connection (the
# server's kernel answers probes while PostgreSQL is merely frozen: that is the deadline's job).
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
              "keepalives_count": 3}


class DatabaseUnavailable(Exception):
    """The database could not be reached or failed while running a unit of work."""


# SQLSTATE class 22, "data exception": a value the statement carries is wrong (invalid text
# for its type, an untranslatable character, a string too long for its column...).
DATA_EXCEPTION = "22"


def rejects_value(exc: BaseException) -> bool:
    """`exc` blames a value a statement carried, not the database: SQLSTATE class 22 from the
    server, or one psycopg refused to send (a NUL in text is a `DataError` without a
    SQLSTATE; a lone surrogate cannot be encoded at all)."""
    if isinstance(exc, psycopg.Error) and exc.sqlstate is not None:
        return exc.sqlstate.startswith(DATA_EXCEPTION)
    return isinstance(exc, (psycopg.DataError, UnicodeEncodeError))


class _Running:
    """The connection a worker thread is using, so a cancelled caller can interrupt it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self.abandoned = False  # the caller gave up: roll back, never commit

    def set(self, conn: psycopg.Connection | None) -> None:
        with self._lock:
            self._conn = conn

    def cancel(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.cancel_safe(timeout=2.0)
                except psycopg.Error as exc:
                    log.warning("could not cancel a running query: %s", exc)


class Database:
    """A small pool of psycopg connections driven from trio."""

    def __init__(
        self,
        url: str,
        *,
        size: int,
        statement_timeout_ms: int = 10_000,
        connect_timeout_s: int = 5,
        deadline_seconds: float = 10.0,
        application_name: str = "wormhole-stack",
        observer: Observer | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.url = url
        self.size = size
        self._options = f"-c statement_timeout={statement_timeout_ms}"
        self._connect_timeout = connect_timeout_s
        self.deadline = deadline_seconds  # for one run: waiting for a thread, connecting, work
        self._application_name = application_name
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(size)
        self._closed = False
        self.observer = observer
        self._direct = DirectConnection(partial(self._connect, autocommit=True))

    def _connect(self, *, autocommit: bool = False) -> psycopg.Connection:
        return psycopg.connect(
            make_conninfo(self.url, **KEEPALIVES),
            autocommit=autocommit,
            client_encoding="UTF8",  # `statement` sends its parameters as UTF-8
            connect_timeout=self._connect_timeout,
            options=self._options,
            application_name=self._application_name,
            tcp_user_timeout=int(max(self.deadline, 1) * 1000),
        )

    def _checkout(self) -> psycopg.Connection:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        return self._connect()

    def _checkin(self, conn: psycopg.Connection) -> None:
        idle = psycopg.pq.TransactionStatus.IDLE
        healthy = (not conn.closed and conn.info.transaction_status == idle
                   and conn not in _retiring)
        with self._lock:
            if healthy and not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _run_in_thread(self, work: Work[T], running: _Running) -> T:
        if self.observer is None:
            return self._run_connected(work, running)
        started = time.perf_counter()
        failed = False
        try:
            return self._run_connected(work, running)
        except psycopg.Error as exc:
            failed = not rejects_value(exc)  # a client's value, not a database failure
            raise
        finally:
            self.observer(time.perf_counter() - started, failed)

    def _run_connected(self, work: Work[T], running: _Running) -> T:
        conn = self._checkout()
        running.set(conn)
        try:
            with conn.transaction():
                result = work(conn)
                if running.abandoned:
                    raise DatabaseUnavailable("abandoned by its caller: rolled back")
                return result
        except psycopg.OperationalError:
            conn.close()
            raise
        finally:
            running.set(None)
            self._checkin(conn)

    async def run(self, work: Work[T], *, deadline: float | None = None) -> T:
        """Run `work(conn)` inside one transaction in a worker thread; commit if it returns.

        A cancelled caller, or one past the deadline, abandons the thread and interrupts its
        query; the thread then rolls back and returns its connection to the pool by itself.
        """
        if self._closed:
            raise DatabaseUnavailable("database adapter is closed")
        running = _Running()
        limit = self.deadline if deadline is None else deadline
        with trio.move_on_after(limit) as scope:
            try:
                return await trio.to_thread.run_sync(
                    self._run_in_thread, work, running, abandon_on_cancel=True,
                    limiter=self._limiter,
                )
            except trio.Cancelled:
                running.abandoned = True
                # cancel_safe may itself wait for a frozen server: never on the caller's time
                trio.lowlevel.start_thread_soon(running.cancel, lambda _outcome: None)
                raise
            except psycopg.OperationalError as exc:
                raise DatabaseUnavailable(failure_reason(exc)) from exc
        assert scope.cancelled_caught
        raise DatabaseUnavailable(f"the database did not answer within {limit:g} s")

    async def statement(
        self, sql: bytes, params: Sequence[bytes | None], *, deadline: float | None = None,
    ) -> bytes | None:
        """Run one statement (text parameters) in a transaction of its own, committed when
        this returns, on the dedicated connection: the first value of its answer, as text.
        Deadline, `DatabaseUnavailable` and the observer as for `run`; a statement the
        server refuses raises the psycopg error of its SQLSTATE."""
        if self._closed:
            raise DatabaseUnavailable("database adapter is closed")
        limit = self.deadline if deadline is None else deadline
        started = time.perf_counter()
        failed = True
        try:
            with trio.move_on_after(limit):
                try:
                    value = await self._direct.value(sql, params)
                except (psycopg.OperationalError, ConnectionLost) as exc:
                    raise DatabaseUnavailable(failure_reason(exc)) from exc
                except psycopg.Error as exc:
                    failed = not rejects_value(exc)
                    raise
                except trio.Cancelled:
                    failed = False  # the caller gave up; unless it was the deadline, below
                    raise
                failed = False
                return value
            failed = True
            raise DatabaseUnavailable(f"the database did not answer within {limit:g} s")
        finally:
            if self.observer is not None:
                self.observer(time.perf_counter() - started, failed)

    async def wait_until_available(self, patience: float) -> None:
        """At start a database in the same deployment may still be starting: retry a while."""
        with trio.move_on_after(patience):
            while True:
                try:
                    await self.ping()
                    return
                except DatabaseUnavailable as exc:
                    log.warning("database not available yet: %s", exc)
                await trio.sleep(1)
        await self.ping()

    async def ping(self, *, deadline: float | None = None) -> None:
        """Raise `DatabaseUnavailable` unless a trivial query succeeds."""
        await self.run(lambda conn: conn.execute("SELECT 1").fetchone(), deadline=deadline)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        self._direct.close()


class Listener:
    """A dedicated connection for LISTEN, awaited with `wait_readable` (no thread needed).

    If the connection drops, `batches` raises `DatabaseUnavailable`; the caller reconnects
    and catches up from the tables, since notifications sent meanwhile are gone.
    """

    def __init__(self, url: str, channel: str) -> None:
        if not channel.isidentifier():
            raise ValueError(f"bad channel name {channel!r}")
        self.url = url
        self.channel = channel
        self._conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(make_conninfo(self.url, **KEEPALIVES), autocommit=True,
                               connect_timeout=5)
        conn.execute(f"LISTEN {self.channel}")
        return conn

    async def __aenter__(self) -> Listener:
        try:
            self._conn = await trio.to_thread.run_sync(self._connect)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(failure_reason(exc)) from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def batches(self) -> AsyncIterator[list[psycopg.Notify]]:
        """Every notification, as they come, a socket read's worth at a time."""
        assert self._conn is not None, "use `async with`"
        conn = self._conn
        while True:
            await trio.lowlevel.wait_readable(conn.fileno())
            try:
                batch = list(conn.notifies(timeout=0))
            except psycopg.OperationalError as exc:
                raise DatabaseUnavailable(failure_reason(exc)) from exc
            if conn.closed or conn.broken:
                raise DatabaseUnavailable("listening connection lost")
            if batch:
                yield batch
