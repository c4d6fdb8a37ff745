"""The mailbox's database work: a batch of ops as one statement, and the reads around it.

A batch goes to PostgreSQL as one statement (`sqlbatch`, `mb_batch`) on the adapter's
dedicated connection, with no worker thread; the reads (replay pages, messages announced by
other processes) and pruning run as units of work on its thread pool.
"""

from __future__ import annotations

from dataclasses import replace

import psycopg
from wormhole_common.database import Database

from wormhole_mailbox.core.limits import MAILBOX_MAX_BYTES, MAILBOX_MAX_MESSAGES
from wormhole_mailbox.core.ops import Message, Op, Page, Result
from wormhole_mailbox.core.paging import PageBounds
from wormhole_mailbox.core.sqlbatch import BATCH_SQL, BatchSettings, Failed, Statement, page
from wormhole_mailbox.core.usage import Records
from wormhole_mailbox.pruning import Pruner

PAGE_SQL = "SELECT mb_page(%s, %s, %s, %s, %s, %s)"


class Store:
    def __init__(
        self, *, blur_seconds: float | None, origin: str = "",
        max_messages: int = MAILBOX_MAX_MESSAGES, max_bytes: int = MAILBOX_MAX_BYTES,
        pages: PageBounds | None = None,
    ) -> None:
        self.blur_seconds = blur_seconds
        # `open` returns the first page of the mailbox; the shell reads the rest with
        # `replay.pages(after=<last seq>)`
        self.pages = pages or PageBounds()
        self.settings = BatchSettings(origin=origin, max_messages=max_messages,
                                      max_bytes=max_bytes, pages=self.pages,
                                      blur_seconds=blur_seconds)
        self.pruner = Pruner(blur_seconds=blur_seconds)
        self.round_trips = 0  # statements sent by `execute`, for tests and benchmarks
        self._process = origin
        self._unknown = 0  # statements whose outcome is unknown so far

    @property
    def origin(self) -> str:
        """This process's name in the announcements of the messages it stores now: a new one
        after each statement whose outcome is unknown (see `execute`)."""
        return self.settings.origin

    async def execute(
        self, db: Database, ops: list[Op], after: list[int | None] | None = None,
    ) -> tuple[list[Result | Failed], Records]:
        """Run the ops as one statement, in one transaction, committed when this returns:
        each op's result, or `Failed` (that op alone left nothing), and the usage records
        the batch wrote. `after`: which earlier op each depends on (`Statement`). Raises if
        the statement as a whole failed (nothing was done)."""
        statement = Statement(ops, self.settings, after)
        self.round_trips += 1
        try:
            answer = await db.statement(BATCH_SQL, statement.params)
        except psycopg.Error:
            raise  # the server refused the statement: nothing of it was done
        except BaseException:
            self._outcome_unknown()
            raise
        return statement.decode(answer)

    def _outcome_unknown(self) -> None:
        """A statement got no answer (a deadline, a lost connection, a cancellation): it may
        have committed all the same, and its messages' callers were told it failed, so they
        were not delivered here. From now on this process announces under another name, and
        the announcements of that statement, made under the old one, reach this process's
        subscribers through `RemoteDelivery` like another process's would (a message they
        got already is ignored by its seq)."""
        self._unknown += 1
        self.settings = replace(self.settings, origin=f"{self._process}/{self._unknown}")

    @staticmethod
    def messages_by_seq(
        conn: psycopg.Connection, seqs: list[int]
    ) -> list[tuple[str, str, Message]]:
        """(app, mailbox, message) for stored messages announced by other processes."""
        rows = conn.execute(
            "SELECT app_id, mailbox_id, seq, side, phase, body, server_rx, msg_id FROM messages"
            " WHERE seq = ANY(%s) ORDER BY seq",
            (seqs,),
        ).fetchall()
        return [(row[0], row[1], Message(*row[2:])) for row in rows]

    @staticmethod
    def messages(conn: psycopg.Connection, app: str, mailbox: str) -> list[Message]:
        """All of the mailbox's messages, in order."""
        rows = conn.execute(
            "SELECT seq, side, phase, body, server_rx, msg_id FROM messages"
            " WHERE app_id = %s AND mailbox_id = %s ORDER BY seq", (app, mailbox)).fetchall()
        return [Message(*row) for row in rows]

    @staticmethod
    def page(
        conn: psycopg.Connection, app: str, mailbox: str, after: int = 0,
        bounds: PageBounds | None = None,
    ) -> Page:
        """A page of the mailbox's messages after seq `after`, in order: at least one message
        if there is any, so a replay always moves on."""
        bounds = bounds or PageBounds()
        row = conn.execute(PAGE_SQL, (app, mailbox, after, bounds.octets, bounds.messages,
                                      True)).fetchone()
        assert row is not None
        return page(row[0])

    @staticmethod
    def write_current(
        conn: psycopg.Connection, *, server_id: str, rebooted: float, now: float,
        blur_seconds: float | None, subscribed_connections: int,
    ) -> None:
        conn.execute(
            "INSERT INTO usage_current"
            " (server_id, rebooted, updated, blur_time, connections_websocket)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (server_id) DO UPDATE SET"
            " rebooted = EXCLUDED.rebooted, updated = EXCLUDED.updated,"
            " blur_time = EXCLUDED.blur_time,"
            " connections_websocket = EXCLUDED.connections_websocket",
            (server_id, rebooted, now, blur_seconds, subscribed_connections),
        )
