"""Usage records off the hot path: a bounded queue drained in batches by one writer task.

Relaying never waits for the database. When it is down the writer keeps its batch and
retries with back-off while new records wait in the queue; only when the queue is full are
records dropped, counted and logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psycopg
import trio
from wormhole_common.channels import take_queued
from wormhole_common.database import Database
from wormhole_common.migrations import migrate

from wormhole_transit.core.usage import Usage

log = logging.getLogger(__name__)

MAX_BATCH = 500
# After a record arrives, wait this long for more: in a burst of pairs one COPY then carries
# many rows instead of each transaction carrying a few (records are off the hot path anyway).
GATHER_SECONDS = 0.05


@dataclass(frozen=True)
class Current:
    """The `current` snapshot: halves in pairs, tokens waiting, bytes of unfinished pairs."""

    rebooted: float
    updated: float
    connected: int
    waiting: int
    incomplete_bytes: int


def insert_usage(conn: psycopg.Connection, records: list[Usage]) -> None:
    """One COPY per batch: far less work for both sides than one INSERT per record."""
    with conn.cursor() as cur, cur.copy(
        "COPY transit_usage (started, total_time, waiting_time, total_bytes, result)"
        " FROM STDIN"
    ) as copy:
        for r in records:
            copy.write_row((r.started, r.total_time, r.waiting_time, r.total_bytes,
                            str(r.mood)))


def write_current(conn: psycopg.Connection, server_id: str, current: Current) -> None:
    conn.execute(
        "INSERT INTO transit_current"
        " (server_id, rebooted, updated, connected, waiting, incomplete_bytes)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (server_id) DO UPDATE SET rebooted = EXCLUDED.rebooted,"
        " updated = EXCLUDED.updated, connected = EXCLUDED.connected,"
        " waiting = EXCLUDED.waiting, incomplete_bytes = EXCLUDED.incomplete_bytes",
        (server_id, current.rebooted, current.updated, current.connected, current.waiting,
         current.incomplete_bytes),
    )


class UsageRecorder:
    """Takes records synchronously (from `finally` blocks too) and writes them in batches."""

    def __init__(
        self, db: Database | None, *, queue_size: int, log_json: bool = True,
        retry_max_seconds: float = 10.0,
    ) -> None:
        self.db = db
        self.ready = trio.Event()  # the schema is in place
        self.log_json = log_json
        self.retry_max_seconds = retry_max_seconds
        self._send, self._receive = trio.open_memory_channel[Usage](queue_size)
        self.queued = 0
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self._idle = trio.Event()
        self._idle.set()

    def record(self, usage: Usage) -> None:
        if self.log_json:
            log.info("%s", json.dumps(usage.as_json_fields()))
        if self.db is None:
            return
        try:
            self._send.send_nowait(usage)
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("usage queue full: %d records dropped so far", self.dropped)
            return
        self.queued += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    async def wait_idle(self) -> None:
        """Until every queued record has been written (tests and shutdown)."""
        while self.written < self.queued:
            await self._idle.wait()

    async def run(self) -> None:
        """The writer loop; runs until cancelled. Without a database it only idles."""
        if self.db is None:
            await trio.sleep_forever()
        await self._retrying("apply migrations",
                             lambda: migrate(self._db, "transit", "wormhole_transit"))
        self.ready.set()
        while True:
            first = await self._receive.receive()
            await trio.sleep(GATHER_SECONDS)
            await self._write([first, *take_queued(self._receive, MAX_BATCH - 1)])

    @property
    def _db(self) -> Database:
        assert self.db is not None
        return self.db

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[object]]) -> None:
        """Until `attempt` succeeds: the database may be down for a while, the relay is not."""
        delay = 0.1
        while True:
            try:
                await attempt()
            except Exception as exc:
                self.failures += 1
                log.warning("could not %s (%s); retrying in %.1fs", what, exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
                continue
            return

    async def _write(self, batch: list[Usage]) -> None:
        await self._retrying(f"write {len(batch)} usage records",
                             lambda: self._db.run(lambda conn: insert_usage(conn, batch)))
        self.written += len(batch)
        if self.written >= self.queued:
            self._idle.set()

    async def flush(self, seconds: float) -> None:
        """At shutdown: write what is queued, giving up after `seconds`."""
        if self.db is None:
            return
        with trio.move_on_after(seconds):
            await self.wait_idle()
        pending = self.queued - self.written
        if pending:
            log.warning("shutting down with %d usage records unwritten", pending)

    async def write_current(self, server_id: str, current: Current) -> None:
        """Replace this process's snapshot, in its own committed transaction."""
        if self.db is None or not self.ready.is_set():
            return
        await self.db.run(lambda conn: write_current(conn, server_id, current))

