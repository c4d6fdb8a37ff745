"""Ops that depend on an earlier op of their connection (`Statement` `after`,
`migrations/0005_dependent_ops.sql`, `Batcher.start`): run only if that one took effect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
from wormhole_common.database import Database
from wormhole_common.migrations import migrate
from wormhole_mailbox.batcher import Batcher, Ticket
from wormhole_mailbox.core.errors import ErrorKind
from wormhole_mailbox.core.ops import SKIPPED, Add, Message, Open, Page, Refused
from wormhole_mailbox.core.sqlbatch import Failed
from wormhole_mailbox.store import Store

from tests.integration.mailbox_helpers import TEST_TIMEOUT, query

APP = "app"
CROWDED = Refused("crowded", ErrorKind.CROWDED)


@asynccontextmanager
async def database(url: str) -> AsyncIterator[Database]:
    db = Database(url, size=2)
    try:
        await migrate(db, "mailbox", "wormhole_mailbox")
        yield db
    finally:
        db.close()


def add(side: str, phase: str, mailbox: str = "mb", body: str = "aa") -> Add:
    return Add(APP, side, mailbox, phase, body, 2.0, phase)


def open_(side: str, mailbox: str = "mb") -> Open:
    return Open(APP, side, mailbox, 1.0)


@asynccontextmanager
async def two_sides_open(url: str) -> AsyncIterator[tuple[Database, Store]]:
    """A database whose mailbox "mb" s1 and s2 have opened: a third side is crowded."""
    with trio.fail_after(TEST_TIMEOUT):
        async with database(url) as db:
            store = Store(blur_seconds=None)
            await store.execute(db, [open_("s1"), open_("s2")])
            yield db, store


async def stored(url: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in await query(
        url, "SELECT side, phase FROM messages ORDER BY seq")]


async def test_adds_after_a_crowded_open_are_skipped_and_store_nothing(database_url: str) -> None:
    async with two_sides_open(database_url) as (db, store):
        results, _ = await store.execute(
            db, [open_("s3"), add("s3", "pake"), add("s3", "version"), add("s1", "x")],
            [None, 0, 1, None])
        assert results[0] == CROWDED
        assert results[1:3] == [SKIPPED, SKIPPED]
        assert isinstance(results[3], Message)  # another connection's add is unaffected
        assert await stored(database_url) == [("s1", "x")]


async def test_adds_after_an_open_run_in_the_same_statement_in_order(database_url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            results, _ = await store.execute(
                db, [open_("s1"), open_("s2", "mb2"), add("s2", "other", mailbox="mb2"),
                     add("s1", "pake"), add("s1", "version")], [None, None, 1, 0, 3])
            assert results[:2] == [Page([]), Page([])]
            assert [r.phase for r in results[2:] if isinstance(r, Message)] == [
                "other", "pake", "version"]
            assert store.round_trips == 1
            assert await stored(database_url) == [
                ("s2", "other"), ("s1", "pake"), ("s1", "version")]


async def test_dependencies_hold_when_a_poisoned_op_makes_the_batch_run_op_by_op(
    database_url: str,
) -> None:
    async with two_sides_open(database_url) as (db, store):
        results, _ = await store.execute(db, [
            open_("s3"), add("s3", "pake"),  # crowded: skipped
            add("s1", "bad", body="a\x00b"), add("s1", "after-bad"),  # failed: skipped
            add("s2", "fine"), add("s2", "fine-too"),
        ], [None, 0, None, 2, None, 4])
        assert results[0] == CROWDED
        assert results[1] == SKIPPED
        assert isinstance(results[2], Failed) and results[2].value_refused
        assert results[3] == SKIPPED
        assert [r.phase for r in results[4:] if isinstance(r, Message)] == [
            "fine", "fine-too"]
        assert await stored(database_url) == [("s2", "fine"), ("s2", "fine-too")]


async def test_an_op_whose_dependency_was_refused_in_an_earlier_batch_is_not_sent(
    database_url: str,
) -> None:
    async with two_sides_open(database_url) as (db, store):
        batcher = Batcher(db, store, on_message=lambda _add, _message: None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batcher.run)
            first = batcher.start(open_("s3"))
            assert first is not None
            assert await first.outcome() == CROWDED
            trips = store.round_trips
            late = batcher.start(add("s3", "pake"), first)
            ok = batcher.start(add("s1", "pake"), None)
            assert late is not None and ok is not None
            assert await late.outcome() == SKIPPED
            assert isinstance(await ok.outcome(), Message)
            chained = batcher.start(add("s1", "version"), ok)
            assert chained is not None
            assert isinstance(await chained.outcome(), Message)
            assert store.round_trips == trips + 2
            nursery.cancel_scope.cancel()
        assert await stored(database_url) == [("s1", "pake"), ("s1", "version")]


def test_a_ticket_succeeded_only_once_done_without_refusal() -> None:
    ticket = Ticket(open_("s1"))
    assert not ticket.succeeded
    ticket.result = Page([])
    ticket.done.set()
    assert ticket.succeeded
    refused = Ticket(open_("s3"))
    refused.result = CROWDED
    refused.done.set()
    assert not refused.succeeded
