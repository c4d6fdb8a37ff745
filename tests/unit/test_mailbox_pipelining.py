"""Commands taken while earlier ones of the connection are in the store
(docs/mailbox-protocol.md §3.3): which the session lets go at once, how a statement encodes
their dependency, and how live copies wait for their acks."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
import trio
import trio.testing
from wormhole_common.database import Database
from wormhole_mailbox.batcher import Batcher, CommandTimedOut
from wormhole_mailbox.core.actions import Count, Perform, Send
from wormhole_mailbox.core.hub import Subscriber
from wormhole_mailbox.core.ops import (
    SKIPPED,
    Add,
    Bind,
    ListNameplates,
    Message,
    Open,
    Page,
)
from wormhole_mailbox.core.paging import PageBounds
from wormhole_mailbox.core.session import Session, SessionConfig
from wormhole_mailbox.core.sqlbatch import BatchSettings, Statement
from wormhole_mailbox.store import Store

NOW = 1_700_000_000.0
OPEN = Open("app", "s1", "mb", NOW)
SETTINGS = BatchSettings(origin="o", max_messages=10, max_bytes=1000, pages=PageBounds(),
                         blur_seconds=None)


def raw(**msg: Any) -> str:
    return json.dumps(msg)


def bound() -> Session:
    session = Session(SessionConfig())
    (*_, perform) = session.receive(raw(type="bind", appid="app", side="s1"), NOW)
    assert isinstance(perform, Perform) and isinstance(perform.op, Bind)
    session.complete(perform, None)
    return session


ADD = raw(type="add", phase="pake", body="aa", id="p")


def test_an_add_after_a_pending_open_goes_to_its_mailbox() -> None:
    actions = bound().pipeline(ADD, NOW + 1, [OPEN])
    assert actions is not None
    count, ack, perform = actions
    assert isinstance(count, Count) and ack == Send({"type": "ack", "id": "p"})
    assert isinstance(perform, Perform)
    assert perform.op == Add("app", "s1", "mb", "pake", "aa", NOW + 1, "p")


def test_an_add_after_pending_adds_of_an_open_mailbox_goes_too() -> None:
    session = bound()
    (*_, perform) = session.receive(raw(type="open", mailbox="mb"), NOW)
    assert isinstance(perform, Perform)
    session.complete(perform, Page([]))
    first = Add("app", "s1", "mb", "pake", "aa", NOW, "p")
    actions = session.pipeline(raw(type="add", phase="version", body="bb"), NOW, [first])
    assert actions is not None and isinstance(actions[-1], Perform)


def test_anything_else_waits_for_the_pending_ops() -> None:
    session = bound()
    waits = [
        raw(type="ping", ping=1),  # not an add
        raw(type="add", phase="pake"),  # an error: it would be paced and counted
        raw(type="close", mailbox="mb"),
        "not json",
    ]
    for frame in waits:
        assert session.pipeline(frame, NOW, [OPEN]) is None
    assert session.pipeline(ADD, NOW, [ListNameplates("app")]) is None  # not open or add
    assert session.pipeline(ADD, NOW, [Add("app", "s1", "mb", "p", "b", NOW, None)]) is None
    assert Session(SessionConfig()).pipeline(ADD, NOW, [OPEN]) is None  # not bound


def test_a_statement_marks_each_dependent_op_with_the_line_it_depends_on() -> None:
    ops = [OPEN, Add("app", "s2", "other", "p", "b", NOW, None),
           Add("app", "s1", "mb", "pake", "aa", NOW, "p")]
    statement = Statement(ops, SETTINGS, [None, None, 0])
    first = statement.params[0]
    assert first is not None
    lines = first.decode().split("\n")
    assert json.loads(lines[2])[0] == 1 and json.loads(lines[2])[1][0] == "a"
    assert json.loads(lines[0])[0] == "o"


def test_an_op_depending_on_one_that_cannot_be_sent_is_skipped_here() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    unencodable = Add("app", "s1", "mb", "pake", "aa", NOW, deep)  # past the recursion limit
    ops = [unencodable, Add("app", "s1", "mb", "version", "bb", NOW, "v")]
    statement = Statement(ops, SETTINGS, [None, 0])
    results, _ = statement.decode(b"[]")
    assert results[1] is SKIPPED
    assert statement.sent == []


def test_a_skipped_answer_is_read_as_skipped() -> None:
    statement = Statement([OPEN, Add("app", "s1", "mb", "p", "b", NOW, None)], SETTINGS,
                          [None, 0])
    results, _ = statement.decode(b'[["crowded", null, null], ["skipped", null, null]]')
    assert results[1] is SKIPPED


def message(seq: int) -> Message:
    return Message(seq, "s", "p", "b", float(seq), None)


def test_held_copies_go_out_only_up_to_the_released_seq() -> None:
    got: list[int] = []
    subscriber = Subscriber(lambda m: got.append(m.seq))
    subscriber.hold()
    subscriber.offer(message(3))
    subscriber.offer(message(1))
    subscriber.replayed([])  # the open's replay is written: still held
    assert got == []
    subscriber.release_through(1)
    assert got == [1]
    subscriber.offer(message(2))
    subscriber.release_through(2)
    assert got == [1, 2]
    subscriber.stop_holding()
    assert got == [1, 2, 3]
    subscriber.offer(message(4))
    assert got == [1, 2, 3, 4]


def test_holding_does_not_end_a_replay() -> None:
    got: list[int] = []
    subscriber = Subscriber(lambda m: got.append(m.seq))
    subscriber.hold()
    subscriber.offer(message(2))
    subscriber.release_through(5)
    subscriber.stop_holding()
    assert got == []  # still replaying
    subscriber.replayed([2])
    assert got == []


class GatedStore:
    """Stands in for `Store.execute`: holds each batch until `gate` is set, then stores
    every add as a message."""

    def __init__(self) -> None:
        self.gate = trio.Event()

    async def execute(self, _db: Any, ops: list[Any], _after: Any = None,
                      ) -> tuple[list[Any], list[Any]]:
        await self.gate.wait()
        return [Message(n + 1, op.side, op.phase, op.body, op.server_rx, op.msg_id)
                for n, op in enumerate(ops)], []


async def test_a_ticket_past_its_deadline_times_out_and_its_message_still_goes_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = GatedStore()
    delivered: list[str] = []
    batcher = Batcher(cast(Database, None), cast(Store, store),
                      on_message=lambda _add, message: delivered.append(message.phase),
                      command_timeout=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        ticket = batcher.start(Add("app", "s1", "mb", "late", "b", NOW, None))
        assert ticket is not None
        started = trio.current_time()
        with pytest.raises(CommandTimedOut):
            await ticket.outcome()
        assert 10 <= trio.current_time() - started <= 10.5
        assert not ticket.succeeded
        store.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert delivered == ["late"]  # committed after all: subscribers get it
        with pytest.raises(CommandTimedOut):
            await ticket.outcome()
        nursery.cancel_scope.cancel()
