"""Every command has a deadline: a store op that PostgreSQL does not finish in time (here a
table another session keeps locked) gets an error and a clean 1011 close, and other clients
are served once the database is back."""

from __future__ import annotations

import psycopg
import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.integration.mailbox_helpers import add, serving
from tests.support.mailbox import client


async def test_a_command_past_its_deadline_gets_an_error_and_a_1011_close(
    database_url: str,
) -> None:
    async with serving(database_url, command_timeout_seconds=1) as server:
        async with client(server) as c:
            await c.bind("side")
            await c.ack_only(type="open", mailbox="mb")
            blocker = await trio.to_thread.run_sync(psycopg.connect, database_url)
            try:
                await trio.to_thread.run_sync(
                    blocker.execute, "LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
                await c.send(type="add", phase="p", body="b", id="late")
                assert await c.recv() == {"type": "ack", "id": "late"}
                assert await c.recv() == {
                    "type": "error", "error": "command timed out",
                    "orig": {"type": "add", "phase": "p", "body": "b", "id": "late"}}
                with pytest.raises(ConnectionClosed) as closed:
                    await c.recv()
                assert closed.value.reason is not None
                assert (closed.value.reason.code, closed.value.reason.reason) == (
                    1011, "command timed out")
            finally:
                await trio.to_thread.run_sync(blocker.close)  # rolls back: the lock goes
        async with client(server) as again:
            await again.bind("side")
            await again.ack_only(type="open", mailbox="mb")
            # The late op went ahead once the table was free: a timeout says nothing of that.
            late = await again.recv()
            assert (late["type"], late["id"], late["body"]) == ("message", "late", "b")
            assert (await add(again, "p2", "b2"))["body"] == "b2"
        timeouts = server.metrics.registry.get_sample_value(
            "wormhole_mailbox_connections_dropped_total", {"reason": "command_timeout"})
        assert timeouts == 1
