"""The decisions a session hands its shell: subscriptions, the replay boundary, closes, counts.

Plain values and an explicit `now`: no socket, no database, no clock.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from wormhole_mailbox.core.actions import (
    Action,
    CloseConnection,
    Count,
    Metric,
    Pause,
    Perform,
    Replayed,
    ReplayRest,
    Send,
    Subscribe,
    Unsubscribe,
)
from wormhole_mailbox.core.errors import ErrorKind
from wormhole_mailbox.core.limits import Limits, LimitSettings
from wormhole_mailbox.core.ops import (
    Allocate,
    Bind,
    Claim,
    Close,
    ListNameplates,
    Message,
    Open,
    Page,
    Refused,
)
from wormhole_mailbox.core.session import (
    Session,
    SessionConfig,
    ping_timeout,
    shutting_down,
    store_failed,
    too_slow,
)

NOW = 1_700_000_000.0


def send(session: Session, **msg: Any) -> list[Action]:
    return session.receive(json.dumps(msg), NOW)


def last_perform(actions: list[Action]) -> Perform:
    perform = actions[-1]
    assert isinstance(perform, Perform), actions
    return perform


def bound(config: SessionConfig | None = None) -> Session:
    session = Session(config or SessionConfig())
    perform = last_perform(send(session, type="bind", appid="app", side="s1"))
    assert session.complete(perform, None) == []
    return session


def opened(messages: list[Message] | None = None) -> Session:
    session = bound()
    session.complete(last_perform(send(session, type="open", mailbox="mb")),
                     Page(messages or []))
    return session


def errors_of(actions: list[Action]) -> list[tuple[str, str]]:
    """(text, counted kind) of each error frame, checking every error is counted once."""
    texts = [a.frame["error"] for a in actions
             if isinstance(a, Send) and a.frame["type"] == "error"]
    kinds = [a.label for a in actions if isinstance(a, Count) and a.metric is Metric.ERRORS]
    assert len(texts) == len(kinds), actions
    return list(zip(texts, kinds, strict=True))


def test_a_command_is_counted_then_acked_then_performed() -> None:
    actions = send(Session(SessionConfig()), type="bind", appid="a", side="s", id=7)
    assert actions == [
        Count(Metric.COMMANDS, "bind"),
        Send({"type": "ack", "id": 7}),
        Perform(Bind("a", "s", None, None, NOW), {"type": "bind", "appid": "a", "side": "s",
                                                  "id": 7}),
    ]


@pytest.mark.parametrize(("raw", "text"), [
    ("{nope", "message is not valid JSON"),
    ("[1]", "message must be a JSON object"),
    ('{"id": 1}', "missing 'type'"),
])
def test_what_is_not_a_command_is_counted_invalid_and_not_acked(raw: str, text: str) -> None:
    actions = Session(SessionConfig()).receive(raw, NOW)
    assert actions[0] == Count(Metric.COMMANDS, "invalid")
    assert not any(isinstance(a, Send) and a.frame["type"] == "ack" for a in actions)
    assert errors_of(actions) == [(text, "malformed")]


def test_open_subscribes_before_the_store_opens() -> None:
    session = bound()
    actions = send(session, type="open", mailbox="mb")
    assert actions[-2:] == [Subscribe(("app", "mb")), Perform(Open("app", "s1", "mb", NOW),
                                                               {"type": "open", "mailbox": "mb"})]


def test_open_replays_then_marks_the_boundary() -> None:
    session = bound()
    perform = last_perform(send(session, type="open", mailbox="mb"))
    stored = [Message(4, "s2", "pake", "b1", 1.0, None), Message(9, "s1", "pake", "b2", 2.0, 1)]
    actions = session.complete(perform, Page(stored))
    assert actions == [Send(stored[0].frame()), Send(stored[1].frame()), Replayed((4, 9))]
    assert session.mailbox == "mb"


def test_an_empty_replay_still_marks_the_boundary() -> None:
    session = bound()
    assert session.complete(last_perform(send(session, type="open", mailbox="mb")),
                            Page([])) == [Replayed(())]


def test_refused_open_unsubscribes_and_counts_the_kind() -> None:
    session = bound()
    perform = last_perform(send(session, type="open", mailbox="mb"))
    actions = session.complete(perform, Refused("crowded", ErrorKind.CROWDED))
    assert actions[0] == Unsubscribe()
    assert errors_of(actions) == [("crowded", "crowded")]
    assert session.mailbox is None


def test_close_counts_the_mood_and_unsubscribes_before_the_store_closes() -> None:
    actions = send(opened(), type="close", mood="happy")
    assert actions[-3:] == [
        Count(Metric.MOODS, "happy"), Unsubscribe(),
        Perform(Close("app", "s1", "mb", "happy", NOW, implicit_open=False),
                {"type": "close", "mood": "happy"}),
    ]


@pytest.mark.parametrize(("mood", "label"), [(None, "none"), ("lonely", "lonely"),
                                             ("side-1234", "other")])
def test_moods_are_counted_in_a_closed_set(mood: str | None, label: str) -> None:
    msg: dict[str, Any] = {"type": "close"} if mood is None else {"type": "close", "mood": mood}
    assert Count(Metric.MOODS, label) in send(opened(), **msg)


def test_listing_goes_to_the_store_when_allowed() -> None:
    assert last_perform(send(bound(), type="list")).op == ListNameplates("app")


def test_listing_policy_answers_empty_without_the_store() -> None:
    actions = send(bound(SessionConfig(allow_list=False)), type="list")
    assert not any(isinstance(a, Perform) for a in actions)
    assert actions[-1] == Send({"type": "nameplates", "nameplates": []})


@pytest.mark.parametrize("kind", ["bind", "list", "open", "add"])
def test_a_failed_store_op_reports_and_closes_1011(kind: str) -> None:
    session = {"bind": Session(SessionConfig()), "add": opened()}.get(kind) or bound()
    msg = {"type": kind, "appid": "a", "side": "s", "mailbox": "mb", "phase": "p", "body": "b"}
    perform = last_perform(session.receive(json.dumps(msg), NOW))
    actions = store_failed(perform)
    assert errors_of(actions) == [("internal server error", "internal")]
    assert (Unsubscribe() in actions) == (kind == "open")
    assert actions[-2:] == [Count(Metric.DROPPED, "database"),
                            CloseConnection(1011, "database unavailable", flush=True)]
    assert Send({"type": "error", "error": "internal server error", "orig": msg}) in actions


def test_bind_without_permission_flushes_and_closes_1008() -> None:
    actions = send(Session(SessionConfig(hashcash_bits=8)), type="bind", appid="a", side="s")
    assert errors_of(actions) == [("permission denied", "permission_denied")]
    assert actions[-2:] == [Count(Metric.DROPPED, "permission_denied"),
                            CloseConnection(1008, "permission denied", flush=True)]


def test_connection_troubles_close_without_flushing() -> None:
    assert too_slow() == [Count(Metric.DROPPED, "too_slow"),
                          CloseConnection(1008, "too slow to read", flush=False)]
    assert ping_timeout() == [Count(Metric.DROPPED, "ping_timeout"),
                              CloseConnection(1001, "ping timeout", flush=False)]
    assert shutting_down() == [CloseConnection(1001, "server shutting down", flush=False)]


# Each error is counted under the kind chosen where it is raised (no text matching).
@pytest.mark.parametrize(("setup", "msg", "text", "kind"), [
    ("new", {"type": "allocate"}, "must bind first", "unbound"),
    ("new", {"type": "ping"}, "ping requires 'ping'", "malformed"),
    ("new", {"type": "bind", "side": "s"}, "bind requires 'appid'", "malformed"),
    ("new", {"type": "bind", "appid": 1, "side": "s"}, "'appid' must be a string", "malformed"),
    ("new", {"type": "bind", "appid": "a", "side": "s", "client_version": "x"},
     "'client_version' must be a list of [implementation, version]", "malformed"),
    ("new", {"type": "bind", "appid": "a\u0000", "side": "s"},
     "'appid' must not contain control characters", "bad_characters"),
    ("new", {"type": "bind", "appid": "a" * 257, "side": "s"},
     "'appid' is too long (at most 256 characters)", "too_long"),
    ("bound", {"type": "claim", "nameplate": "1" * 41}, "invalid nameplate", "invalid_nameplate"),
    ("bound", {"type": "bind", "appid": "a", "side": "s"}, "already bound", "sequence"),
    ("bound", {"type": "nonsense"}, "unknown type", "unknown_type"),
    ("bound", {"type": "claim", "nameplate": "x"}, "invalid nameplate", "invalid_nameplate"),
    ("bound", {"type": "release"}, "release without nameplate must follow claim", "sequence"),
    ("bound", {"type": "add", "phase": "p", "body": "b"}, "must open mailbox before adding",
     "sequence"),
    ("bound", {"type": "close"}, "close without mailbox must follow open", "sequence"),
    ("opened", {"type": "open", "mailbox": "m2"}, "only one open per connection", "sequence"),
    ("opened", {"type": "add", "body": "b"}, "missing 'phase'", "malformed"),
    ("opened", {"type": "close", "mailbox": "other"}, "open and close must use same mailbox",
     "sequence"),
])
def test_error_kinds_are_chosen_where_raised(
    setup: str, msg: dict[str, Any], text: str, kind: str,
) -> None:
    session = {"new": lambda: Session(SessionConfig()), "bound": bound, "opened": opened}[setup]()
    assert errors_of(session.receive(json.dumps(msg), NOW)) == [(text, kind)]


@pytest.mark.parametrize(("refusal", "kind"), [
    (Refused.of(ErrorKind.CROWDED), "crowded"),
    (Refused.of(ErrorKind.RECLAIMED), "reclaimed"),
    (Refused.of(ErrorKind.EXHAUSTED), "exhausted"),
    (Refused.of(ErrorKind.GONE), "gone"),
    (Refused.of(ErrorKind.FULL), "full"),
])
def test_store_refusals_keep_their_text_and_kind(refusal: Refused, kind: str) -> None:
    session = bound()
    perform = last_perform(send(session, type="claim", nameplate="4"))
    assert errors_of(session.complete(perform, refusal)) == [(refusal.error, kind)]


def test_stamp_refusals_are_permission_denied() -> None:
    session = Session(SessionConfig(hashcash_bits=8), resource="r")
    actions = send(session, type="submit-permissions", method="hashcash", stamp="garbage")
    ((text, kind),) = errors_of(actions)
    assert text.startswith("permission denied: ") and kind == "permission_denied"
    assert not any(isinstance(a, CloseConnection) for a in actions)


@pytest.mark.parametrize(("raw", "text", "kind"), [
    ('{"type": "ping", "ping": 1e400}', "'ping' contains a number out of range", "out_of_range"),
    ('{"type": "ping", "ping": NaN}', "message is not valid JSON", "malformed"),
    ('{"type": "ping", "id": ' + "[" * 40 + "]" * 40 + "}",
     "message is nested too deeply (at most 32 levels)", "too_deep"),
    ('{"type": "ping", "ping": ' + "9" * 5000 + "}", "'ping' contains a number out of range",
     "out_of_range"),
])
def test_numbers_and_nesting_json_cannot_carry_are_refused_without_an_ack(
    raw: str, text: str, kind: str,
) -> None:
    actions = bound().receive(raw, NOW)
    assert errors_of(actions) == [(text, kind)]
    assert Count(Metric.COMMANDS, "invalid") in actions
    assert not [a for a in actions if isinstance(a, Send) and a.frame["type"] == "ack"]


def test_an_add_with_a_long_id_is_refused_naming_the_field() -> None:
    actions = send(opened(), type="add", phase="p", body="b", id="x" * 300)
    assert errors_of(actions) == [
        ("'id' is too long (at most 256 characters as JSON)", "too_long")]
    assert not [a for a in actions if isinstance(a, Perform)]


def quota_sessions(count: int, **limits: Any) -> list[Session]:
    """Bound sessions of one address sharing `Limits(LimitSettings(**limits))`."""
    shared = Limits(LimitSettings(**limits))
    sessions = []
    for i in range(count):
        session = Session(SessionConfig(), quota=shared.client("192.0.2.7"))
        session.complete(last_perform(send(session, type="bind", appid="app", side=f"s{i}")),
                         None)
        sessions.append(session)
    return sessions


def test_allocations_past_the_rate_are_refused_and_counted_until_the_bucket_refills() -> None:
    first, second = quota_sessions(2, allocations_per_minute=1)
    first.complete(last_perform(send(first, type="allocate")), "4")
    actions = send(second, type="allocate")
    text = "too many allocations from your address; try again in a minute"
    assert errors_of(actions) == [(text, "refused_limit")]
    assert Count(Metric.REFUSALS, "allocations_rate") in actions
    assert not [a for a in actions if isinstance(a, Perform)]
    later = second.receive(json.dumps({"type": "allocate"}), NOW + 60)
    assert isinstance(last_perform(later).op, Allocate)


def test_a_claim_past_the_nameplates_held_is_refused_and_may_be_tried_again() -> None:
    first, second = quota_sessions(2, nameplates_per_address=1)
    first.complete(last_perform(send(first, type="claim", nameplate="1")), "mb1")
    actions = send(second, type="claim", nameplate="2")
    text = "too many nameplates held by your address; release some or try again later"
    assert errors_of(actions) == [(text, "refused_limit")]
    assert Count(Metric.REFUSALS, "nameplates_held") in actions
    first.complete(last_perform(send(first, type="release")), None)
    assert last_perform(send(second, type="claim", nameplate="2")).op == Claim(
        "app", "s1", "2", NOW)


def test_nameplates_of_an_ended_connection_count_until_they_would_expire() -> None:
    first, second = quota_sessions(2, nameplates_per_address=1, nameplate_linger_seconds=600)
    first.complete(last_perform(send(first, type="allocate")), "4")
    first.end(NOW)
    assert errors_of(send(second, type="claim", nameplate="2"))[0][1] == "refused_limit"
    later = second.receive(json.dumps({"type": "claim", "nameplate": "2"}), NOW + 700)
    assert isinstance(last_perform(later).op, Claim)


def test_opening_mailboxes_past_the_rate_is_refused_without_a_subscription() -> None:
    first, second = quota_sessions(2, mailboxes_per_minute=1)
    assert isinstance(last_perform(send(first, type="open", mailbox="m1")).op, Open)
    actions = send(second, type="open", mailbox="m2")
    text = "too many new mailboxes from your address; try again in a minute"
    assert errors_of(actions) == [(text, "refused_limit")]
    assert not [a for a in actions if isinstance(a, Subscribe | Perform)]
    assert second.mailbox is None


def test_an_open_whose_first_page_has_more_after_it_asks_for_the_rest() -> None:
    messages = [Message(seq, "s2", "p", "b", 1.0, None) for seq in (4, 9)]
    session = bound()
    perform = last_perform(send(session, type="open", mailbox="mb"))
    assert session.complete(perform, Page(messages, more=True))[-1] == ReplayRest(9, (4, 9))
    last = bound()
    perform = last_perform(send(last, type="open", mailbox="mb"))
    assert last.complete(perform, Page(messages))[-1] == Replayed((4, 9))


def test_an_open_whose_share_of_its_batch_held_no_message_replays_from_the_start() -> None:
    session = bound()
    perform = last_perform(send(session, type="open", mailbox="mb"))
    assert session.complete(perform, Page([], more=True)) == [ReplayRest(0, ())]


def test_a_client_that_keeps_causing_errors_is_paced() -> None:
    session = bound()
    pauses = [[a for a in session.receive("{not json", NOW) if isinstance(a, Pause)]
              for _ in range(22)]
    assert pauses[:20] == [[]] * 20  # a burst of 20 errors is free
    assert pauses[20:] == [[Pause(0.2)], [Pause(0.4)]]
    later = session.receive("{not json", NOW + 10)  # the budget has refilled meanwhile
    assert not [a for a in later if isinstance(a, Pause)]
    assert not [a for a in send(session, type="ping", ping=1) if isinstance(a, Pause)]
