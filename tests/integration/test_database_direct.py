"""`Database.statement`: one statement per transaction on a connection trio drives without a
thread. Its answer comes after the commit; a refused statement leaves the connection usable;
a lost connection or a cancelled caller costs that statement only, and the next connects
afresh; a cancelled statement is cancelled in the server too."""

from __future__ import annotations

import psycopg
import pytest
import trio
from wormhole_common.database import Database, DatabaseUnavailable

from tests.integration.mailbox_helpers import TEST_TIMEOUT, query

PID = b"SELECT pg_backend_pid()"


async def test_the_answer_comes_after_the_commit(database_url: str) -> None:
    failed: list[bool] = []
    db = Database(database_url, size=2, observer=lambda _seconds, error: failed.append(error))
    try:
        with trio.fail_after(TEST_TIMEOUT):
            await db.run(lambda conn: conn.execute("CREATE TABLE t (x int)"))
            assert await db.statement(b"INSERT INTO t VALUES ($1) RETURNING x", [b"7"]) == b"7"
            # another connection sees the row as soon as the answer is in
            assert await query(database_url, "SELECT x FROM t") == [(7,)]
            assert await db.statement(b"SELECT NULL", []) is None
            assert await db.statement(b"SELECT 1 WHERE false", []) is None
    finally:
        db.close()
    assert failed == [False] * 4  # the run, then the statements


async def test_a_refused_statement_leaves_the_connection_usable(database_url: str) -> None:
    failed: list[bool] = []
    db = Database(database_url, size=2, observer=lambda _seconds, error: failed.append(error))
    try:
        with trio.fail_after(TEST_TIMEOUT):
            pid = await db.statement(PID, [])
            with pytest.raises(psycopg.errors.InvalidTextRepresentation):
                await db.statement(b"SELECT $1::integer", [b"not a number"])
            with pytest.raises(psycopg.errors.UndefinedTable):
                await db.statement(b"SELECT * FROM nowhere", [])
            assert await db.statement(PID, []) == pid
    finally:
        db.close()
    assert failed == [False, False, True, False]  # a refused value is not a database failure


async def test_a_lost_connection_fails_one_statement_then_reconnects(database_url: str) -> None:
    db = Database(database_url, size=2)
    try:
        with trio.fail_after(TEST_TIMEOUT):
            pid = await db.statement(PID, [])
            await query(database_url, "SELECT pg_terminate_backend(%s)", int(pid or b"0"))
            with pytest.raises(DatabaseUnavailable):
                await db.statement(PID, [])
            assert await db.statement(PID, []) not in (None, pid)
    finally:
        db.close()


async def test_a_cancelled_statement_is_cancelled_in_the_server(database_url: str) -> None:
    db = Database(database_url, size=2)
    try:
        with trio.fail_after(TEST_TIMEOUT):
            pid = await db.statement(PID, [])
            with trio.move_on_after(0.2):
                await db.statement(b"SELECT pg_sleep(60)", [])
            while True:  # until the server has cancelled it
                if not await query(database_url, "SELECT 1 FROM pg_stat_activity"
                                   " WHERE pid = %s AND state = 'active'", int(pid or b"0")):
                    break
                await trio.sleep(0.05)
            assert await db.statement(PID, []) not in (None, pid)  # never reused
    finally:
        db.close()


async def test_a_late_statement_fails_at_the_deadline(database_url: str) -> None:
    db = Database(database_url, size=2)
    try:
        with trio.fail_after(TEST_TIMEOUT):
            await db.statement(PID, [])  # connected
            with pytest.raises(DatabaseUnavailable) as failed:
                await db.statement(b"SELECT pg_sleep(60)", [], deadline=0.2)
            assert str(failed.value) == "the database did not answer within 0.2 s"
            assert await db.statement(b"SELECT 1", []) == b"1"
    finally:
        db.close()
