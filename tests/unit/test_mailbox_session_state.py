"""Session state changes only for valid commands: an invalid one answers an error and leaves
every field as it was, and no later command can carry a value PostgreSQL would refuse to the
store. Sans-IO: ops are completed here with plausible results, no database."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

import pytest
from wormhole_mailbox.core.actions import (
    Action,
    CloseConnection,
    Count,
    Metric,
    Perform,
    Send,
    Unsubscribe,
)
from wormhole_mailbox.core.ops import (
    UNSTORABLE,
    Add,
    Allocate,
    Bind,
    Claim,
    Close,
    ListNameplates,
    Message,
    Op,
    Open,
    Page,
    Release,
    Result,
)
from wormhole_mailbox.core.session import Session, SessionConfig

from tests.support.invalid_values import BAD_VALUES as SHARED_BAD_VALUES
from tests.support.invalid_values import FOLLOW_UPS, MISSING, SPOILED, spoiled

NOW = 1_700_000_000.0
# past the body's limit too (the WebSocket message limit binds first on a real connection)
BAD_VALUES = {**SHARED_BAD_VALUES, "huge": "1" * ((1 << 20) + 1)}

_NAMEPLATE = re.compile(r"[0-9]{1,40}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEY_BYTES = 2704  # PostgreSQL's B-tree row limit, for app + mailbox + side


def storable(value: Any, *, identifier: bool) -> bool:
    """What PostgreSQL text and jsonb take: no NUL, valid UTF-8 (checked here on its own,
    not with the validator under test); identifiers also without control characters."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return "\x00" not in value and not (identifier and _CONTROL.search(value))
    if isinstance(value, list):
        return all(storable(item, identifier=False) for item in value)
    if isinstance(value, dict):
        return all(storable(k, identifier=False) and storable(v, identifier=False)
                   for k, v in value.items())
    return True


def assert_storable(op: Op) -> None:
    assert is_dataclass(op)
    for field in fields(op):
        value = getattr(op, field.name)
        assert storable(value, identifier=field.name not in ("body", "msg_id")), (op, field)
    if isinstance(op, Claim | Release):
        assert _NAMEPLATE.fullmatch(op.nameplate), op
    if isinstance(op, Open | Add | Close):
        assert len((op.app + op.mailbox + op.side).encode()) < _KEY_BYTES, op


def result_for(op: Op) -> Result:
    """What the store answers a successful op."""
    match op:
        case Add():
            return Message(1, op.side, op.phase, op.body, op.server_rx, op.msg_id)
        case Allocate():
            return "9"
        case Claim():
            return "mbox"
        case ListNameplates():
            return []
        case Open():
            return Page([], more=False)
    return None


def drive(session: Session, msg: dict[str, Any]) -> list[Action]:
    """One command and, if it asks the store, the store's answer; every op is checked."""
    actions = session.receive(json.dumps(msg), NOW)
    for perform in [a for a in actions if isinstance(a, Perform)]:
        assert_storable(perform.op)
        actions += session.complete(perform, result_for(perform.op))
    return actions


def snapshot(session: Session) -> dict[str, Any]:
    """Every field of the session's protocol state, and the nameplates and mailboxes its
    quota counts as held."""
    state = {key: value for key, value in vars(session).items()
             if key not in ("config", "quota", "spent", "resource")}
    state["held"] = (frozenset(session.quota.names), frozenset(session.quota.mailboxes))
    return state


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [a.frame for a in actions if isinstance(a, Send)]


def error_kinds(actions: list[Action]) -> list[str]:
    return [a.label for a in actions if isinstance(a, Count) and a.metric is Metric.ERRORS]


def session_after(*commands: dict[str, Any]) -> Session:
    session = Session(SessionConfig())
    for msg in commands:
        drive(session, msg)
    return session


BIND = {"type": "bind", "appid": "app", "side": "side1"}
STAGES: dict[str, Callable[[], Session]] = {
    "new": session_after,
    "bound": lambda: session_after(BIND),
    "allocated": lambda: session_after(BIND, {"type": "allocate"}),
    "claimed": lambda: session_after(BIND, {"type": "claim", "nameplate": "5"}),
    "released": lambda: session_after(BIND, {"type": "claim", "nameplate": "5"},
                                      {"type": "release"}),
    "opened": lambda: session_after(BIND, {"type": "open", "mailbox": "mb"}),
    "closed": lambda: session_after(BIND, {"type": "open", "mailbox": "mb"}, {"type": "close"}),
}


def assert_clean(actions: list[Action]) -> None:
    """Nothing the shell would report as the server's failure, and no close."""
    assert not [a for a in actions if isinstance(a, CloseConnection)], actions
    assert not {"internal", "timeout"} & set(error_kinds(actions)), actions


@pytest.mark.parametrize(("kind", "key"), SPOILED)
@pytest.mark.parametrize("bad", BAD_VALUES)
def test_every_invalid_value_leaves_the_state_and_every_follow_up_stays_clean(
    kind: str, key: str, bad: str,
) -> None:
    for stage, start in STAGES.items():
        session = start()
        before = snapshot(session)
        actions = drive(session, spoiled(kind, key, BAD_VALUES[bad]))
        assert_clean(actions)
        if error_kinds(actions):
            assert snapshot(session) == before, (stage, actions)
        for follow_up in FOLLOW_UPS:
            assert_clean(drive(session, follow_up))


@pytest.mark.parametrize("bad", ["12\x00", "12\ud800", "x", "1" * 41, "\u0663"])
def test_an_invalid_claim_leaves_no_nameplate_for_a_release(bad: str) -> None:
    session = session_after(BIND)
    actions = drive(session, {"type": "claim", "nameplate": bad})
    assert [f["error"] for f in sent(actions) if f["type"] == "error"] == ["invalid nameplate"]
    assert (session.did_claim, session.claimed) == (False, None)
    actions = drive(session, {"type": "release"})
    assert sent(actions)[1]["error"] == "release without nameplate must follow claim"
    assert not [a for a in actions if isinstance(a, Perform)]


@pytest.mark.parametrize("name", ["12\x00", "12\ud800", "abc", "", "1" * 41, "1" * 100_000])
def test_a_release_of_a_nameplate_that_cannot_exist_is_answered_without_the_store(
    name: str,
) -> None:
    session = session_after(BIND)
    actions = drive(session, {"type": "release", "nameplate": name})
    assert sent(actions)[1:] == [{"type": "released"}]
    assert not [a for a in actions if isinstance(a, Perform)]
    assert session.did_release  # the connection's one release, as the store's answer would be
    assert sent(drive(session, {"type": "release"}))[1]["error"] == (
        "only one release per connection")


def test_a_release_of_another_invalid_name_than_the_claim_is_still_a_sequence_error() -> None:
    session = session_after(BIND, {"type": "claim", "nameplate": "5"})
    actions = drive(session, {"type": "release", "nameplate": "5\x00"})
    assert sent(actions)[1]["error"] == "release and claim must use same nameplate"
    assert not session.did_release


def test_a_release_with_a_nameplate_of_the_wrong_type_is_malformed() -> None:
    session = session_after(BIND)
    actions = drive(session, {"type": "release", "nameplate": 12})
    assert error_kinds(actions) == ["malformed"]
    assert not session.did_release


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_an_invalid_stamp_leaves_the_connection_unpermitted(bad: str) -> None:
    session = Session(SessionConfig(hashcash_bits=8))
    before = snapshot(session)
    msg = {"type": "submit-permissions", "method": "hashcash", "stamp": BAD_VALUES[bad]}
    if BAD_VALUES[bad] is MISSING:
        del msg["stamp"]
    actions = drive(session, msg)
    assert len(error_kinds(actions)) == 1, actions
    assert_clean(actions)
    assert snapshot(session) == before
    assert not session.permitted


# -- a value the database refused although the checks let it through -------------------------


def refused(session: Session, msg: dict[str, Any]) -> list[Action]:
    """`msg`, answered by the store with `UNSTORABLE`."""
    actions = session.receive(json.dumps(msg), NOW)
    perform = actions[-1]
    assert isinstance(perform, Perform), actions
    return actions + session.complete(perform, UNSTORABLE)


@pytest.mark.parametrize(
    ("stage", "msg"),
    [
        ("new", BIND),
        ("bound", {"type": "allocate"}),
        ("bound", {"type": "claim", "nameplate": "5"}),
        ("claimed", {"type": "release"}),
        ("bound", {"type": "open", "mailbox": "mb"}),
        ("opened", {"type": "add", "phase": "pake", "body": "aa"}),
        ("opened", {"type": "close", "mood": "happy"}),
        ("bound", {"type": "close", "mailbox": "mb"}),
    ],
)
def test_an_unstorable_refusal_is_a_client_error_that_changes_nothing(
    stage: str, msg: dict[str, Any],
) -> None:
    session = STAGES[stage]()
    before = snapshot(session)
    actions = refused(session, msg)
    assert_clean(actions)
    assert error_kinds(actions) == ["unstorable"]
    assert sent(actions)[-1] == {"type": "error", "error": UNSTORABLE.error, "orig": msg}
    after = snapshot(session)
    assert after == before
    if msg["type"] == "open":
        assert any(isinstance(a, Unsubscribe) for a in actions)


def test_after_an_unstorable_bind_the_connection_is_not_bound() -> None:
    session = Session(SessionConfig())
    refused(session, BIND)
    assert sent(drive(session, {"type": "list"}))[1]["error"] == "must bind first"
    assert isinstance(drive(session, BIND)[-1], Perform)


def test_after_an_unstorable_claim_another_claim_may_be_made() -> None:
    session = session_after(BIND)
    refused(session, {"type": "claim", "nameplate": "5"})
    assert sent(drive(session, {"type": "release"}))[1]["error"] == (
        "release without nameplate must follow claim")
    assert sent(drive(session, {"type": "claim", "nameplate": "6"}))[1:] == [
        {"type": "claimed", "mailbox": "mbox"}]


def test_the_ops_of_a_valid_exchange_are_what_the_driver_checks() -> None:
    """The sweep's checks accept an honest exchange (so they do not pass by refusing all)."""
    session = Session(SessionConfig())
    ops = []
    exchange: list[dict[str, Any]] = [
        BIND, {"type": "allocate"}, {"type": "claim", "nameplate": "9"},
        {"type": "open", "mailbox": "mbox"},
        {"type": "add", "phase": "pake", "body": "aa", "id": {"k": ["v"]}},
        {"type": "release"}, {"type": "close", "mood": "happy"},
    ]
    for msg in exchange:
        actions = drive(session, msg)
        assert_clean(actions)
        assert not error_kinds(actions), actions
        ops += [type(a.op) for a in actions if isinstance(a, Perform)]
    assert ops == [Bind, Allocate, Claim, Open, Add, Release, Close]
