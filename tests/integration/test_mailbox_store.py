"""The mailbox database layer on its own: group commit, isolation of bad ops in the one
statement, limits, paging."""

from __future__ import annotations

import json
import logging
import random
import string
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import trio
import trio.testing
from wormhole_common.database import Database
from wormhole_common.migrations import migrate
from wormhole_mailbox import replay
from wormhole_mailbox.batcher import Batcher, StoreFailed
from wormhole_mailbox.core.errors import ErrorKind
from wormhole_mailbox.core.ops import (
    UNSTORABLE,
    Add,
    Claim,
    Close,
    Message,
    Op,
    Open,
    Page,
    Refused,
    Release,
    Result,
)
from wormhole_mailbox.core.paging import PageBounds, page_length
from wormhole_mailbox.core.sqlbatch import Failed
from wormhole_mailbox.pruning import (
    DEFAULT_BATCH_SIZE,
    PRUNE_LOCK_KEY,
    PruneReport,
    prune_in_batches,
)
from wormhole_mailbox.store import Store

from tests.integration.mailbox_helpers import TEST_TIMEOUT, count, query

FULL = Refused("mailbox is full", ErrorKind.FULL)

APP = "app"


@asynccontextmanager
async def database(url: str, size: int = 2) -> AsyncIterator[Database]:
    db = Database(url, size=size)
    try:
        await migrate(db, "mailbox", "wormhole_mailbox")
        yield db
    finally:
        db.close()


async def run_ops(db: Database, store: Store, ops: list[Op]) -> list[Result | Failed]:
    results, _records = await store.execute(db, ops)
    return results


def add(body: str, msg_id: Any = "id", mailbox: str = "mb", app: str = APP) -> Add:
    return Add(app, "side", mailbox, "phase", body, 1.0, msg_id)


def incompressible(length: int) -> str:
    rng = random.Random(length)
    return "".join(rng.choice(string.ascii_letters) for _ in range(length))


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# Each is refused by PostgreSQL, or cannot be encoded to be sent; the core will refuse them too,
# but the store must never let one of them hurt the ops it shares a statement with.
POISON: dict[str, Op] = {
    "index row too big": Claim(incompressible(9000), "side", "1", 1.0),
    "infinite id": add("b", float("inf")),
    "deeply nested id": add("b", nested(5000)),
    "NUL in body": add("b\x00"),
}


@pytest.mark.parametrize("poison", POISON)
async def test_one_bad_op_fails_alone_and_the_rest_commit(database_url: str, poison: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            await run_ops(db, store, [Open(APP, "side", "mb", 1.0)])
            ops = [add("a0"), add("a1"), POISON[poison], add("a2"), add("a3")]
            before = store.round_trips
            results = await run_ops(db, store, ops)
            assert isinstance(results[2], Failed), results[2]
            bodies = [r.body for r in results if isinstance(r, Message)]
            assert bodies == ["a0", "a1", "a2", "a3"]
            assert store.round_trips - before == 1  # the bad op failed inside the statement
            assert await count(database_url, "messages") == 4


async def test_a_poisoned_batch_announces_each_stored_message_once(database_url: str) -> None:
    """The batch that met a failing op ran again op by op inside its statement; what the
    first attempt did, announcements included, was rolled back."""
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            await run_ops(db, store, [Open(APP, "side", "mb", 1.0)])
            with psycopg.connect(database_url, autocommit=True) as listener:
                listener.execute("LISTEN wormhole_mailbox_messages")
                results = await run_ops(db, store, [add("a0"), add("a1"), POISON["NUL in body"],
                                                    add("a2")])
                assert [type(r) for r in results] == [Message, Message, Failed, Message]
                seqs = {r.seq for r in results if isinstance(r, Message)}
                # everything that committed has been sent before the answer came back
                heard = await trio.to_thread.run_sync(
                    lambda: list(listener.notifies(timeout=1.0, stop_after=4)))
            assert sorted(json.loads(n.payload)["s"] for n in heard) == sorted(seqs)


async def test_a_clean_batch_costs_one_round_trip(database_url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            await run_ops(db, store, [Open(APP, "side", "mb", 1.0)])
            before = store.round_trips
            results = await run_ops(db, store, [add(f"m{i}") for i in range(50)])
            assert all(isinstance(r, Message) for r in results)
            assert store.round_trips - before == 1


async def test_several_bad_ops_in_one_batch(database_url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            await run_ops(db, store, [Open(APP, "side", "mb", 1.0)])
            ops: list[Op] = []
            for i in range(20):
                ops.append(add(f"m{i}"))
                if i % 5 == 4:
                    ops.append(add("bad", float("inf")))
            results = await run_ops(db, store, ops)
            failed = [i for i, r in enumerate(results) if isinstance(r, Failed)]
            assert failed == [5, 11, 17, 23]
            assert all(isinstance(r, Failed) and r.value_refused for r in results[5::6])
            assert await count(database_url, "messages") == 20


# The store's own failures, not a client's value: the op fails alone with `StoreFailed`.
NOT_A_VALUE = ("index row too big", "deeply nested id")


@pytest.mark.parametrize("poison", NOT_A_VALUE)
async def test_batcher_fails_the_bad_op_alone_in_one_commit(
    database_url: str, poison: str,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            published: list[str] = []
            batcher = Batcher(db, store, on_message=lambda op, m: published.append(m.body))
            await batcher_ops(batcher, [Open(APP, "side", "mb", 1.0)])
            ops: list[Op] = [add(f"h{i}") for i in range(10)]
            ops.insert(4, POISON[poison])
            outcomes = await batcher_ops(batcher, ops)
            assert isinstance(outcomes[4], StoreFailed)
            assert [o.body for o in outcomes if isinstance(o, Message)] == [
                f"h{i}" for i in range(10)]
            assert published == [f"h{i}" for i in range(10)]


# Values PostgreSQL refuses with a data exception (SQLSTATE class 22, in the server) or psycopg
# refuses to send; the core refuses them all first, these reach the store directly.
REFUSED_VALUES: dict[str, Op] = {
    "Infinity in a jsonb id (22P02)": add("b", float("inf")),
    "NUL in a jsonb id (22P05)": add("b", {"k": "\x00"}),
    "lone surrogate in a jsonb id (22P02)": add("b", ["\ud800"]),
    "NUL in a text column": add("b\x00"),
    "lone surrogate in a text column": Claim(APP, "side\udfff", "1", 1.0),
}


@pytest.mark.parametrize("poison", REFUSED_VALUES)
async def test_a_refused_value_is_the_client_s_error_and_not_a_database_failure(
    database_url: str, poison: str,
) -> None:
    failed: list[bool] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            db.observer = lambda _seconds, error: failed.append(error)
            published: list[str] = []
            batcher = Batcher(db, Store(blur_seconds=None),
                              on_message=lambda op, m: published.append(m.body))
            await batcher_ops(batcher, [Open(APP, "side", "mb", 1.0)])
            ops: list[Op] = [add(f"h{i}") for i in range(10)]
            ops.insert(4, REFUSED_VALUES[poison])
            outcomes = await batcher_ops(batcher, ops)
            assert outcomes[4] == UNSTORABLE
            assert published == [f"h{i}" for i in range(10)]
            assert await count(database_url, "messages") == 10
    assert failed and not any(failed)


# Values that cannot be a lock key: the op that carries one fails alone when its own line is
# parsed; taking the batch's locks first never fails because of it.
UNLOCKABLE: list[Op] = [
    add("b", mailbox="mb\x00"),
    Claim(APP, "side", "\ud800", 1.0),
    Close(APP, "side", "mb\udfff", "happy", 1.0, implicit_open=True),
]


async def test_a_key_postgresql_cannot_hold_fails_its_op_alone(database_url: str) -> None:
    failed: list[bool] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            db.observer = lambda _seconds, error: failed.append(error)
            published: list[str] = []
            batcher = Batcher(db, Store(blur_seconds=None),
                              on_message=lambda op, m: published.append(m.body))
            await batcher_ops(batcher, [Open(APP, "side", "mb", 1.0)])
            ops: list[Op] = [add(f"h{i}") for i in range(5)]
            ops[1:1] = UNLOCKABLE
            outcomes = await batcher_ops(batcher, ops)
            assert outcomes[1:4] == [UNSTORABLE] * 3
            assert published == [f"h{i}" for i in range(5)]
            assert await count(database_url, "messages") == 5
    assert failed and not any(failed)


async def test_keys_with_any_character_are_locked_and_work(database_url: str) -> None:
    """Lock keys go to PostgreSQL as array literals: quotes, backslashes, braces, commas,
    spaces and non-ASCII text are keys like any other."""
    mailbox = 'a"b\\c{d},e f\u00e9\U0001f600'
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            results = await run_ops(db, store, [Open(mailbox, "side", mailbox, 1.0),
                                                add("b", mailbox=mailbox, app=mailbox),
                                                Claim(mailbox, "side", "7", 1.0)])
            assert [type(r) for r in results] == [Page, Message, str]
            assert await query(database_url, "SELECT app_id, mailbox_id FROM messages") == [
                (mailbox, mailbox)]


async def batcher_ops(batcher: Batcher, ops: list[Op]) -> list[Result | Exception]:
    """Queue every op before the writer starts, so they all go in one batch."""
    outcomes: list[Result | Exception] = [None] * len(ops)

    async def submit(i: int) -> None:
        try:
            outcomes[i] = await batcher.submit(ops[i])
        except StoreFailed as exc:
            outcomes[i] = exc

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as submitters:
            for i in range(len(ops)):
                submitters.start_soon(submit, i)
                await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(batcher.run)
        nursery.cancel_scope.cancel()
    return outcomes


# -- pruning -----------------------------------------------------------------------------------


async def test_pruning_runs_in_batches_and_commands_go_between_them(database_url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            ops: list[Op] = [Open(APP, "side", f"m{i:02d}", 1.0) for i in range(25)]
            ops += [Claim(APP, "side", "5", 1.0)]  # a nameplate and its mailbox: 26 in all
            await run_ops(db, store, ops)
            reports: list[PruneReport] = []

            async def between(report: PruneReport) -> None:
                reports.append(report)
                if len(reports) == 1:
                    # a command on a mailbox the pruner has not reached yet goes through now,
                    # and keeps that mailbox alive
                    await run_ops(db, store, [Add(APP, "side", "m24", "p", "b", 150.0, 1)])

            total = await prune_in_batches(
                db, store.pruner, now=200.0, cutoff=100.0, subscribed=[(APP, "m00")],
                batch_size=10, on_batch=between)
            assert [r.candidates for r in reports] == [10, 10, 4]
            assert [r.mailboxes for r in reports] == [10, 10, 4]
            assert (total.touched, total.mailboxes, total.nameplates) == (1, 24, 1)
            assert sorted(r.result for r in total.records) == ["pruney"] * 25
            assert await count(database_url, "usage_mailboxes") == 24
            assert await count(database_url, "usage_nameplates") == 1
            assert await query(database_url, "SELECT id FROM mailboxes ORDER BY id") == [
                ("m00",), ("m24",)]


async def test_a_pruner_without_the_lock_retires_nothing(database_url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            await run_ops(db, store, [Open(APP, "side", "old", 1.0)])

            def blocked(conn: Any) -> PruneReport:
                conn.execute("SELECT pg_advisory_lock(%s)", (PRUNE_LOCK_KEY,))
                try:
                    with psycopg.connect(database_url) as other, other.transaction():
                        return store.pruner.retire(other, now=200.0, cutoff=100.0, limit=10)
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (PRUNE_LOCK_KEY,))

            report = await db.run(blocked)
            assert (report.ran, report.mailboxes) == (False, 0)
            assert await count(database_url, "mailboxes") == 1


# -- size limits -------------------------------------------------------------------------------


async def test_an_add_past_the_message_limit_is_refused_and_not_stored(database_url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None, max_messages=3)
            await run_ops(db, store, [Open(APP, "side", "mb", 1.0)])
            results = await run_ops(db, store, [add(f"m{i}") for i in range(5)])
            assert [r.body for r in results[:3] if isinstance(r, Message)] == ["m0", "m1", "m2"]
            assert results[3:] == [FULL] * 2
            assert await count(database_url, "messages") == 3
            # other mailboxes are not affected
            await run_ops(db, store, [Open(APP, "side", "other", 1.0)])
            other = await run_ops(db, store, [add("x", mailbox="other")])
            assert isinstance(other[0], Message)


async def test_an_add_past_the_byte_limit_is_refused_and_not_stored(database_url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None, max_bytes=10)
            await run_ops(db, store, [Open(APP, "side", "mb", 1.0)])
            # octets, not characters: "é" takes two
            bodies = ["12345", "123456", "123é", "1", "1"]
            results = await run_ops(db, store, [add(b) for b in bodies])
            assert [r.body if isinstance(r, Message) else r for r in results] == [
                "12345", FULL, "123é", FULL,
                FULL]
            rows = await query(database_url, "SELECT body FROM messages ORDER BY seq")
            assert rows == [("12345",), ("123é",)]


async def test_an_add_to_a_missing_mailbox_is_gone_not_full(database_url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None, max_messages=0)
            assert await run_ops(db, store, [add("b", mailbox="nowhere")]) == [
                Refused("mailbox is gone", ErrorKind.GONE)]


# -- paged replay ------------------------------------------------------------------------------


async def test_a_replay_reads_pages_on_demand_and_sees_later_messages(database_url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            bounds = PageBounds(messages=4)
            store = Store(blur_seconds=None, pages=bounds)
            opened = await run_ops(db, store, [Open(APP, "side", "mb", 1.0)])
            assert opened == [Page([])]
            await run_ops(db, store, [add(f"m{i:02d}") for i in range(10)])
            # open gives the first page only
            [first] = await run_ops(db, store, [Open(APP, "side", "mb", 1.0)])
            assert isinstance(first, Page) and first.more
            assert [m.body for m in first.messages] == ["m00", "m01", "m02", "m03"]
            pages: list[list[str]] = []
            after = first.messages[-1].seq
            async for page in replay.pages(db, APP, "mb", after=after, bounds=bounds):
                pages.append([m.body for m in page])
                if len(pages) == 1:  # stored while the replay is under way: still replayed
                    await run_ops(db, store, [add("late")])
            assert pages == [["m04", "m05", "m06", "m07"], ["m08", "m09", "late"]]


async def test_a_replay_of_an_exact_multiple_ends_without_an_empty_page(
    database_url: str,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            await run_ops(db, store, [Open(APP, "side", "mb", 1.0)])
            await run_ops(db, store, [add(f"m{i}") for i in range(4)])
            two = PageBounds(messages=2)
            sizes = [len(page) async for page in replay.pages(db, APP, "mb", bounds=two)]
            assert sizes == [2, 2]
            other = [page async for page in replay.pages(db, "other-app", "mb", bounds=two)]
            assert other == [[]]


# A message's cost in `mb_page`: the octets of its body, side ("side"), phase ("phase") and id
# ("id", as JSON text); bodies of "é" take two octets a character.
OVERHEAD = len("side") + len("phase") + len('"id"')


@pytest.mark.parametrize(("bodies", "octets", "messages"), [
    (["a" * 400, "a" * 400, "a" * 400, "a" * 2000, "a" * 10, "a" * 10], 1000, 100),
    (["é" * 300] * 3, 1300, 100),
    ([""] * 7, 1000, 3),
    (["a" * 5000, "a"], 1000, 100),
])
async def test_pages_in_the_database_follow_the_rule(
    database_url: str, bodies: list[str], octets: int, messages: int,
) -> None:
    """`mb_page` makes the pages that `paging.page_length` says, for explicit sizes: a
    replay's (at least one message) and an open's first (none if its first is bigger)."""
    costs = [len(body.encode()) + OVERHEAD for body in bodies]
    expected, start = [], 0
    while start < len(costs):
        n = page_length(costs[start:], octets=octets, messages=messages, at_least_one=True)
        expected.append(n)
        start += n
    first = page_length(costs, octets=octets, messages=messages, at_least_one=False)
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            bounds = PageBounds(octets=octets, messages=messages)
            store = Store(blur_seconds=None, pages=bounds)
            await run_ops(db, store, [Open(APP, "side", "mb", 1.0)])
            await run_ops(db, store, [add(body) for body in bodies])
            sizes = [len(page) async for page in replay.pages(db, APP, "mb", bounds=bounds)]
            assert sizes == expected
            [opened] = await run_ops(db, store, [Open(APP, "side", "mb", 2.0)])
            assert isinstance(opened, Page)
            assert [m.body for m in opened.messages] == bodies[:first]
            assert opened.more == (first < len(bodies))


async def test_the_opens_of_one_batch_share_what_its_answer_may_hold(database_url: str) -> None:
    """Three opens in a batch bounded to 1500 octets get 500 each (with a poisoned op beside
    them too); what does not fit is left for their replays. Alone, an open gets a whole
    page."""
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None, pages=PageBounds(octets=1000, batch_octets=1500))
            opens = [Open(APP, "side", mailbox, 1.0) for mailbox in ("a", "b", "c")]
            await run_ops(db, store, opens)
            await run_ops(db, store, [
                add("a" * (300 - OVERHEAD), mailbox="a"), add("a" * (300 - OVERHEAD), mailbox="a"),
                add("b" * (600 - OVERHEAD), mailbox="b"), add("c" * (100 - OVERHEAD), mailbox="c")])
            clean = await run_ops(db, store, opens)
            shapes = [(len(p.messages), p.more) for p in clean if isinstance(p, Page)]
            assert shapes == [(1, True), (0, True), (1, False)]
            poisoned = await run_ops(db, store, [*opens, POISON["NUL in body"]])
            assert poisoned[:3] == clean
            [alone] = await run_ops(db, store, opens[:1])
            assert isinstance(alone, Page) and (len(alone.messages), alone.more) == (2, False)


async def test_an_outage_logs_one_line_not_one_per_op(
    database_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            batcher = Batcher(db, Store(blur_seconds=None), on_message=lambda op, m: None)
            db.close()  # every batch now fails as in an outage
            with caplog.at_level(logging.WARNING, logger="wormhole_mailbox.batcher"):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(batcher.run)
                    for i in range(5):
                        with pytest.raises(StoreFailed) as failed:
                            await batcher.submit(add(f"m{i}"))
                        assert str(failed.value) == "database adapter is closed"
                    nursery.cancel_scope.cancel()
            assert [r.getMessage() for r in caplog.records] == [
                "database write failed (DatabaseUnavailable): database adapter is closed"
                " (a batch of 1)"]


async def test_rejections_never_break_later_batches(database_url: str) -> None:
    """Many batches, a poisoned op in some of them: each fails alone, and the batches keep
    going on the same connection (a failed op leaves it as clean as a committed one)."""
    rng = random.Random(7)
    with trio.fail_after(60):
        async with database(database_url, size=1) as db:
            store = Store(blur_seconds=None)
            await run_ops(db, store, [Open(APP, "side", f"mb{i}", 1.0) for i in range(5)])
            pids = set()
            for _ in range(150):
                ops: list[Op] = [add("b", mailbox=f"mb{rng.randrange(5)}")
                                 for _ in range(rng.randint(1, 6))]
                poisoned = rng.random() < 0.3
                if poisoned:
                    ops.insert(rng.randrange(len(ops) + 1), add("bad", float("inf")))
                if rng.random() < 0.3:
                    ops.insert(rng.randrange(len(ops) + 1), Open(APP, "side", "mb1", 1.0))
                results = await run_ops(db, store, ops)
                failed = [op for op, r in zip(ops, results, strict=True)
                          if isinstance(r, Failed)]
                assert failed == ([add("bad", float("inf"))] if poisoned else []), results
                pids.add(await db.statement(b"SELECT pg_backend_pid()", []))
            assert len(pids) == 1


async def test_one_prune_call_retires_at_most_its_limit(database_url: str) -> None:
    """The lock table is shared: one transaction must not lock a whole backlog."""
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            await run_ops(db, store, [Open(APP, "side", f"m{i}", 1.0) for i in range(510)])
            report = await db.run(lambda conn: store.pruner.retire(
                conn, now=200.0, cutoff=100.0, limit=DEFAULT_BATCH_SIZE, subscribed=[(APP, "m0")]))
            assert (report.mailboxes, report.touched) == (500, 1)
            assert await count(database_url, "mailboxes") == 10


async def test_touching_skips_a_row_in_use_instead_of_waiting(database_url: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            await run_ops(db, store, [Open(APP, "side", m, 1.0) for m in ("busy", "free")])

            def touch_while_held(conn: Any) -> int:
                conn.execute("SELECT 1 FROM mailboxes WHERE id = 'busy' FOR UPDATE")
                with psycopg.connect(database_url) as other, other.transaction():
                    return store.pruner.touch(
                        other, subscribed=[(APP, "busy"), (APP, "free")], now=50.0)

            assert await db.run(touch_while_held) == 1
            rows = await query(database_url, "SELECT id, updated FROM mailboxes ORDER BY id")
            assert rows == [("busy", 1.0), ("free", 50.0)]


async def test_a_close_marks_its_mailbox_used(database_url: str) -> None:
    """So a touch skipped while a close held the row loses nothing."""
    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            await run_ops(db, store, [Open(APP, "a", "mb", 1.0), Open(APP, "b", "mb", 1.0)])
            await run_ops(db, store, [Close(APP, "a", "mb", "happy", 70.0, implicit_open=False)])
            assert await query(database_url, "SELECT updated FROM mailboxes") == [(70.0,)]


def _shape(result: Result | Failed) -> object:
    """A result without what differs by chance between two runs (random mailbox ids, seqs)."""
    if isinstance(result, Message):
        return ("message", result.side, result.phase, result.body)
    if isinstance(result, str):
        return "a mailbox id" if len(result) == 13 else result
    if isinstance(result, list):
        return [_shape(item) for item in result]
    if isinstance(result, Page):
        return ("page", [_shape(m) for m in result.messages], result.more)
    return result


async def test_a_poisoned_op_changes_nothing_for_the_others(database_url: str) -> None:
    """A lifecycle alone, and the same lifecycle behind a poisoned op in the same statement,
    give the same results and the same usage rows; each costs one statement."""
    def lifecycle(app: str) -> list[Op]:
        return [Claim(app, "a", "4", 1.0), Claim(app, "b", "4", 2.0),
                Claim(app, "c", "4", 2.5),  # crowded
                Open(app, "a", "mb", 3.0), Add(app, "a", "mb", "pake", "x", 4.0, 7),
                Add(app, "a", "nowhere", "pake", "x", 4.0, 8),  # gone
                Release(app, "a", "4", 5.0), Release(app, "b", "4", 6.0),
                Close(app, "a", "mb", "happy", 7.0, implicit_open=False),
                Close(app, "b", "mb", "happy", 8.0, implicit_open=True)]

    with trio.fail_after(TEST_TIMEOUT):
        async with database(database_url) as db:
            store = Store(blur_seconds=None)
            clean, clean_records = await store.execute(db, lifecycle("clean"))
            poisoned, poisoned_records = await store.execute(
                db, [POISON["NUL in body"], *lifecycle("poisoned")])
            assert store.round_trips == 2
            assert isinstance(poisoned[0], Failed) and poisoned[0].value_refused
            assert [_shape(r) for r in poisoned[1:]] == [_shape(r) for r in clean]
            assert isinstance(clean[2], Refused) and clean[2].kind is ErrorKind.CROWDED
            assert clean[5] == Refused("mailbox is gone", ErrorKind.GONE)
            usage = await query(database_url, "SELECT app_id, result FROM usage_nameplates"
                                " UNION ALL SELECT app_id, result FROM usage_mailboxes"
                                " ORDER BY 1, 2")
            by_app = {app: [r for a, r in usage if a == app] for app in ("clean", "poisoned")}
            assert by_app["clean"] == by_app["poisoned"] == ["crowded", "lonely", "lonely"]
            assert sorted(r.result for r in clean_records) == by_app["clean"]
            assert len(poisoned_records) == len(clean_records)
