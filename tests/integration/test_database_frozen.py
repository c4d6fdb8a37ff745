"""A frozen PostgreSQL (SIGSTOP) must not hang the adapter: runs and the batcher's statements
fail at their deadline and work again after SIGCONT. A cluster of its own, since freezing the
shared one would stall every other test."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from wormhole_common.database import Database, DatabaseUnavailable
from wormhole_common.migrations import migrate
from wormhole_mailbox.batcher import Batcher, StoreFailed
from wormhole_mailbox.core.ops import Add, Message, Open
from wormhole_mailbox.server import MailboxServer
from wormhole_mailbox.store import Store

from tests.support import postgres
from tests.support.mailbox import client, mailbox_settings


@pytest.fixture(scope="module")
def cluster() -> Iterator[postgres.TestCluster]:
    cluster = postgres.TestCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        thaw(cluster)
        cluster.stop()


def server_pids(cluster: postgres.TestCluster) -> list[int]:
    """The postmaster (first line of postmaster.pid) and every process it started."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(postmaster):
            children.append(int(status.parent.name))
    return [postmaster, *children]


def freeze(cluster: postgres.TestCluster) -> None:
    for pid in server_pids(cluster):
        os.kill(pid, signal.SIGSTOP)


def thaw(cluster: postgres.TestCluster) -> None:
    for pid in server_pids(cluster):
        os.kill(pid, signal.SIGCONT)


async def test_a_frozen_database_fails_runs_at_the_deadline_then_recovers(
    cluster: postgres.TestCluster,
) -> None:
    db = Database(cluster.url, size=2, deadline_seconds=1.0)
    try:
        with trio.fail_after(30):  # a hang guard, not a timing assertion
            await db.run(lambda conn: conn.execute("CREATE TABLE t (x int)"))
            freeze(cluster)
            try:
                for _ in range(3):  # more runs than connections: none may hang
                    with pytest.raises(DatabaseUnavailable) as failed:
                        await db.run(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
                    assert str(failed.value) == "the database did not answer within 1 s"
                with pytest.raises(DatabaseUnavailable) as failed:
                    await db.ping(deadline=0.5)  # a readiness check may want less
                assert str(failed.value) == "the database did not answer within 0.5 s"
            finally:
                thaw(cluster)
            await db.wait_until_available(patience=20)

            def count(conn: Any) -> Any:
                # waits for the abandoned inserts to end: they must have rolled back
                conn.execute("LOCK TABLE t IN SHARE MODE")
                return conn.execute("SELECT count(*) FROM t").fetchone()

            assert await db.run(count) == (0,)
    finally:
        db.close()


async def test_a_frozen_database_fails_a_batch_at_the_deadline_and_loses_no_acked_message(
    cluster: postgres.TestCluster,
) -> None:
    """The batcher's one statement on its own connection: while the server is frozen, each
    op's caller gets `StoreFailed` at the deadline; afterwards batches work again, and every
    message whose add was answered is stored."""
    db = Database(cluster.url, size=1, deadline_seconds=1.0)
    acked: list[str] = []
    failed: list[str] = []

    async def adds(batcher: Batcher, prefix: str, n: int) -> None:
        for i in range(n):
            body = f"{prefix}{i}"
            try:
                message = await batcher.submit(Add("app", "s", "mb", "p", body, 1.0, i))
            except StoreFailed:
                failed.append(body)
            else:
                assert isinstance(message, Message)
                acked.append(message.body)

    try:
        with trio.fail_after(60):  # a hang guard, not a timing assertion
            await migrate(db, "mailbox", "wormhole_mailbox")
            batcher = Batcher(db, Store(blur_seconds=None), on_message=lambda op, m: None)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(batcher.run)
                assert await batcher.submit(Open("app", "s", "mb", 1.0)) is not None
                await adds(batcher, "before", 3)
                freeze(cluster)
                try:
                    await adds(batcher, "frozen", 2)
                finally:
                    thaw(cluster)
                await db.wait_until_available(patience=20)
                await adds(batcher, "after", 3)
                nursery.cancel_scope.cancel()
            stored = await db.run(lambda conn: [row[0] for row in conn.execute(
                "SELECT body FROM messages ORDER BY seq").fetchall()])
    finally:
        db.close()
    assert failed == ["frozen0", "frozen1"]
    assert acked == ["before0", "before1", "before2", "after0", "after1", "after2"]
    assert set(acked) <= set(stored)


async def test_a_message_stored_after_its_caller_was_failed_still_reaches_a_local_peer(
    cluster: postgres.TestCluster,
) -> None:
    """A frozen server gets a batch, then the batcher gives up on it: the sender is told the
    command failed. When the server thaws it may still commit the batch (the cancel races
    the statement). If it does, the peer on the same process still gets the message: the
    process announces under a new name after a statement of unknown outcome, so that one's
    announcement counts as another process's."""
    settings = mailbox_settings(cluster.url, command_timeout_seconds=10)
    db = Database(settings.connection_string(), size=2, deadline_seconds=1.0)
    stop = trio.Event()
    try:
        with trio.fail_after(60):  # a hang guard, not a timing assertion
            await migrate(db, "mailbox", "wormhole_mailbox")
            async with trio.open_nursery() as nursery:
                server = await nursery.start(partial(MailboxServer(settings, db).serve, stop))
                async with client(server) as sender, client(server) as peer:
                    for c, side in ((sender, "a"), (peer, "b")):
                        await c.bind(side, "frozen-app")
                        await c.ack_only(type="open", mailbox="mb")
                    freeze(cluster)
                    try:
                        await sender.send(type="add", phase="p", body="late", id="1")
                        error = await sender.recv_type("error")
                    finally:
                        thaw(cluster)
                    assert error["error"] == "internal server error"
                    await db.wait_until_available(patience=20)
                    stored = await db.run(lambda conn: conn.execute(
                        "SELECT count(*) FROM messages WHERE body = 'late'").fetchone())
                    if stored == (1,):
                        message = await peer.recv_type("message")
                        assert message["body"] == "late"
                stop.set()
    finally:
        db.close()
