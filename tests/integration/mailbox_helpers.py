"""Shared pieces for the mailbox integration tests: a time-boxed server and table queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import psycopg
import trio
from wormhole_mailbox.server import MailboxServer

from tests.support.mailbox import Client, running_mailbox

TEST_TIMEOUT = 20  # absolute bound on one test's I/O; a hang fails instead of stalling the run

STATE_TABLES = ("nameplates", "nameplate_sides", "mailboxes", "mailbox_sides", "messages")


@asynccontextmanager
async def serving(database_url: str, **overrides: Any) -> AsyncIterator[MailboxServer]:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_mailbox(database_url, **overrides) as server:
            yield server


def _query(database_url: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()


async def query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return await trio.to_thread.run_sync(partial(_query, database_url, sql, params))


async def count(database_url: str, table: str) -> int:
    rows = await query(database_url, f"SELECT count(*) FROM {table}")
    return int(rows[0][0])


async def state_counts(database_url: str) -> dict[str, int]:
    return {table: await count(database_url, table) for table in STATE_TABLES}


async def all_state_gone(database_url: str) -> bool:
    """No nameplate, claim, mailbox, side or message is left."""
    return set((await state_counts(database_url)).values()) == {0}


async def mailbox_results(database_url: str) -> list[str]:
    rows = await query(database_url, "SELECT result FROM usage_mailboxes ORDER BY id")
    return [r[0] for r in rows]


async def nameplate_results(database_url: str) -> list[str]:
    rows = await query(database_url, "SELECT result FROM usage_nameplates ORDER BY id")
    return [r[0] for r in rows]


async def add(c: Client, phase: str, body: str, msg_id: Any = "0001") -> dict[str, Any]:
    """`add` and return the sender's own echo."""
    echo = await c.command(type="add", phase=phase, body=body, id=msg_id)
    assert echo["type"] == "message", echo
    return echo
