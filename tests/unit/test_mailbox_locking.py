"""Which keys a batch locks up front (the order itself is the SQL function's job)."""

from __future__ import annotations

from wormhole_mailbox.core.locking import LOCK_SQL, lock_keys
from wormhole_mailbox.core.ops import (
    Add,
    Allocate,
    Bind,
    Claim,
    Close,
    ListNameplates,
    Open,
    Release,
)


def test_each_op_locks_what_it_writes() -> None:
    keys = lock_keys([
        Bind("app", "s", None, None, 1.0),
        ListNameplates("app"),
        Allocate("app", "s", 1.0),
        Claim("app", "s", "7", 1.0),
        Release("app", "s", "8", 1.0),
        Open("app", "s", "mb1", 1.0),
        Add("app", "s", "mb2", "p", "b", 1.0, 1),
        Close("app", "s", "mb3", None, 1.0, implicit_open=False),
    ])
    assert keys.query() == (LOCK_SQL, (
        ["app"], ["app", "app"], ["7", "8"],
        ["app", "app", "app"], ["mb1", "mb2", "mb3"], ["app"], ["mb3"],
    ))


def test_reads_lock_nothing() -> None:
    assert not lock_keys([Bind("app", "s", None, None, 1.0), ListNameplates("app")])


def test_values_that_cannot_be_sent_are_left_out() -> None:
    """Their op fails in the client; the shared lock statement must not fail with it."""
    keys = lock_keys([
        Claim("app\x00", "s", "7", 1.0),
        Open("app", "s", "mb\ud800", 1.0),
        Add("app", "s", "ok", "p", "b", 1.0, 1),
    ])
    assert keys.nameplates == [] and keys.mailboxes == [("app", "ok")]
