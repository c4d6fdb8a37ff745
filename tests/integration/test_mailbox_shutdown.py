"""Stopping: every client is closed with 1001 and the server returns as soon as they are
closed, not when the grace period runs out."""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionClosed
from wormhole_common.database import Database
from wormhole_common.migrations import migrate
from wormhole_mailbox.server import MailboxServer

from tests.support.mailbox import client, mailbox_settings

GRACE = 30  # far longer than the test may take


async def test_stop_closes_connections_1001_and_returns_without_waiting_for_grace(
    database_url: str,
) -> None:
    settings = mailbox_settings(database_url, shutdown_grace_seconds=GRACE)
    db = Database(settings.connection_string(), size=2)
    await migrate(db, "mailbox", "wormhole_mailbox")
    stop = trio.Event()
    returned = trio.Event()
    closes: list[tuple[int, str | None]] = []

    async def serve(task_status: trio.TaskStatus[MailboxServer]) -> None:
        await MailboxServer(settings, db).serve(stop, task_status=task_status)
        returned.set()

    async def connected(server: MailboxServer, side: str, opened: trio.Event) -> None:
        async with client(server) as c:
            await c.bind(side)
            await c.ack_only(type="open", mailbox="mb")
            opened.set()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await c.ws.get_message()
            closes.append((closed.value.reason.code, closed.value.reason.reason))

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                server: MailboxServer = await nursery.start(serve)
                for side in ("s1", "s2"):
                    opened = trio.Event()
                    nursery.start_soon(connected, server, side, opened)
                    await opened.wait()
                assert len(server.handler.connections) == 2
                stop.set()
                await returned.wait()
                assert server.handler.connections == set()
                assert server.hub.subscribed_mailboxes() == []
    finally:
        db.close()
    assert closes == [(1001, "server shutting down")] * 2
