"""The per-connection rules (docs/mailbox-protocol.md §3-§5), driven without sockets, database or
clock."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pytest
from wormhole_mailbox.core import hashcash
from wormhole_mailbox.core.actions import Action, CloseConnection, Perform, Send
from wormhole_mailbox.core.addresses import PeerAddress
from wormhole_mailbox.core.errors import ErrorKind
from wormhole_mailbox.core.ops import (
    Add,
    Allocate,
    Bind,
    Claim,
    Close,
    ListNameplates,
    Message,
    Open,
    Page,
    Refused,
    Release,
)
from wormhole_mailbox.core.session import PERMISSION_DENIED, Session, SessionConfig

from tests.support.stamps import mint_stamp

NOW = 1_700_000_000.0
ADDRESS = PeerAddress("192.0.2.7", 5555)


@dataclass
class Step:
    """The actions of one inbound frame, seen as frames sent, the op to perform and a close."""

    actions: list[Action]

    @property
    def replies(self) -> list[dict[str, Any]]:
        return frames(self.actions)

    @property
    def perform(self) -> Perform | None:
        performs = [a for a in self.actions if isinstance(a, Perform)]
        assert len(performs) <= 1 and (not performs or self.actions[-1] is performs[0])
        return performs[0] if performs else None

    @property
    def op(self) -> Any:
        return self.perform.op if self.perform else None

    @property
    def close(self) -> bool:
        return any(isinstance(a, CloseConnection) for a in self.actions)


def frames(actions: list[Action]) -> list[dict[str, Any]]:
    return [a.frame for a in actions if isinstance(a, Send)]


def receive(session: Session, raw: str | bytes, now: float = NOW) -> Step:
    return Step(session.receive(raw, now))


def complete(session: Session, step: Step, result: Any) -> list[dict[str, Any]]:
    """The frames sent once the store answered `step`'s op with `result`."""
    assert step.perform is not None
    return frames(session.complete(step.perform, result))


def welcome_of(session: Session, address: PeerAddress) -> dict[str, Any]:
    (frame,) = frames(session.start(address))
    return frame


def send(session: Session, now: float = NOW, **msg: Any) -> Step:
    return receive(session, json.dumps(msg), now)


def send_dict(session: Session, msg: dict[str, Any]) -> Step:
    return receive(session, json.dumps(msg))


def errors(step: Step) -> list[str]:
    return [r["error"] for r in step.replies if r["type"] == "error"]


def the_error(step: Step) -> str:
    """The step is an ack followed by exactly one error, and no op."""
    assert step.replies[0]["type"] == "ack", step.replies
    assert len(step.replies) == 2, step.replies
    assert step.op is None
    (text,) = errors(step)
    return text


def bound(side: str = "side1", app: str = "app1", config: SessionConfig | None = None) -> Session:
    session = Session(config or SessionConfig())
    step = send(session, type="bind", appid=app, side=side)
    assert isinstance(step.op, Bind)
    assert complete(session, step, None) == []
    return session


def run(session: Session, result: Any, now: float = NOW, **msg: Any) -> list[dict[str, Any]]:
    """Send a command that yields an op, complete it with `result`, return all replies."""
    step = send(session, now, **msg)
    assert step.op is not None, step.replies
    return step.replies + complete(session, step, result)


def opened(mailbox: str = "mb1") -> Session:
    session = bound()
    run(session, Page([]), type="open", mailbox=mailbox)
    return session


# -- envelope ----------------------------------------------------------------------------------


def test_missing_type_gets_error_and_no_ack() -> None:
    session = Session(SessionConfig())
    step = send(session, id="a9c5", ping=1)
    assert step.replies == [
        {"type": "error", "error": "missing 'type'", "orig": {"id": "a9c5", "ping": 1}}
    ]
    assert step.op is None


@pytest.mark.parametrize("msg_id", ["a9c5", 7, 1.5, None, {"nested": [1]}, [], "", 0])
def test_ack_echoes_id_verbatim(msg_id: Any) -> None:
    step = send(Session(SessionConfig()), type="ping", ping=1, id=msg_id)
    assert step.replies == [{"type": "ack", "id": msg_id}, {"type": "pong", "pong": 1}]


def test_ack_without_id_is_null() -> None:
    step = send(Session(SessionConfig()), type="ping", ping="x")
    assert step.replies[0] == {"type": "ack", "id": None}


def test_ack_comes_first_even_when_the_command_fails() -> None:
    step = send(Session(SessionConfig()), type="allocate", id="beef")
    assert step.replies == [
        {"type": "ack", "id": "beef"},
        {"type": "error", "error": "must bind first", "orig": {"type": "allocate", "id": "beef"}},
    ]


@pytest.mark.parametrize("ping", [1, "text", None, [1, 2], {"a": "b"}])
def test_ping_before_bind_pongs_any_json(ping: Any) -> None:
    step = send(Session(SessionConfig()), type="ping", ping=ping)
    assert step.replies[1:] == [{"type": "pong", "pong": ping}]
    assert step.op is None


def test_ping_requires_ping() -> None:
    assert the_error(send(Session(SessionConfig()), type="ping")) == "ping requires 'ping'"


@pytest.mark.parametrize(
    "kind", ["list", "allocate", "claim", "release", "open", "add", "close", "nonsense",
             "submit-permissions"],
)
def test_everything_but_ping_and_bind_needs_bind_first(kind: str) -> None:
    msg = {"type": kind, "nameplate": "1", "mailbox": "m", "phase": "p", "body": "b"}
    assert the_error(send_dict(Session(SessionConfig()), msg)) == "must bind first"


def test_unknown_type_after_bind() -> None:
    assert the_error(send(bound(), type="nonsense")) == "unknown type"
    # Without a permission step configured, submit-permissions is just unknown.
    assert the_error(send(bound(), type="submit-permissions")) == "unknown type"


def test_unknown_keys_are_ignored() -> None:
    step = send(bound(), type="list", colour="blue")
    assert step.op == ListNameplates("app1")


def test_error_orig_is_the_whole_command() -> None:
    msg = {"type": "add", "id": 3, "phase": "pake", "extra": [1]}
    step = send_dict(bound(), msg)
    assert step.replies[1] == {"type": "error", "error": "must open mailbox before adding",
                               "orig": msg}


def test_invalid_json_gets_error() -> None:
    step = receive(Session(SessionConfig()), "{not json", NOW)
    assert len(step.replies) == 1 and step.replies[0]["type"] == "error"
    assert step.replies[0]["orig"] == "{not json"
    assert step.op is None


def test_invalid_utf8_gets_error() -> None:
    step = receive(Session(SessionConfig()), b'{"type": "\xff"}', NOW)
    assert [r["type"] for r in step.replies] == ["error"]


@pytest.mark.parametrize("raw", ["[1, 2]", '"type"', "3", "null"])
def test_non_object_gets_error(raw: str) -> None:
    step = receive(Session(SessionConfig()), raw, NOW)
    assert [r["type"] for r in step.replies] == ["error"]
    assert step.replies[0]["orig"] == json.loads(raw)


def test_binary_frames_are_treated_like_text() -> None:
    step = receive(Session(SessionConfig()), b'{"type": "ping", "ping": 5, "id": "x"}', NOW)
    assert step.replies == [{"type": "ack", "id": "x"}, {"type": "pong", "pong": 5}]


def test_session_stays_usable_after_errors() -> None:
    session = Session(SessionConfig())
    receive(session, "garbage")
    send(session, type="nonsense")
    step = send(session, type="bind", appid="a", side="s")
    assert isinstance(step.op, Bind)


# -- welcome -----------------------------------------------------------------------------------


def test_empty_welcome_has_only_your_address() -> None:
    welcome = welcome_of(Session(SessionConfig()), ADDRESS)
    assert welcome == {"type": "welcome",
                       "welcome": {"your-address": {"port": 5555, "ipv4": "192.0.2.7"}}}


def test_welcome_carries_configured_fields() -> None:
    config = SessionConfig(motd="hello", advertise_version="0.24.0", signal_error="go away")
    welcome = welcome_of(Session(config), PeerAddress("2001:db8::1", 9))
    assert welcome["welcome"] == {
        "motd": "hello",
        "current_cli_version": "0.24.0",
        "error": "go away",
        "your-address": {"port": 9, "ipv6": "2001:db8::1"},
    }


# -- bind --------------------------------------------------------------------------------------


def test_bind_yields_op_with_client_version() -> None:
    step = send(Session(SessionConfig()), NOW, type="bind", appid="a", side="s",
                client_version=["python", "0.24.0", "extra"])
    assert step.replies == [{"type": "ack", "id": None}]
    assert step.op == Bind("a", "s", "python", "0.24.0", NOW)


def test_bind_without_client_version() -> None:
    step = send(Session(SessionConfig()), type="bind", appid="a", side="s")
    assert step.op == Bind("a", "s", None, None, NOW)


def test_bind_coerces_version_elements_to_strings() -> None:
    step = send(Session(SessionConfig()), type="bind", appid="a", side="s",
                client_version=["rust", 3])
    assert step.op == Bind("a", "s", "rust", "3", NOW)


def test_bind_errors_in_order() -> None:
    session = Session(SessionConfig())
    assert the_error(send(session, type="bind")) == "bind requires 'appid'"
    assert the_error(send(session, type="bind", side="s")) == "bind requires 'appid'"
    assert the_error(send(session, type="bind", appid="a")) == "bind requires 'side'"
    session = bound()
    # Already bound is checked before the missing fields.
    assert the_error(send(session, type="bind")) == "already bound"
    assert the_error(send(session, type="bind", appid="a", side="s")) == "already bound"


@pytest.mark.parametrize(
    "fields",
    [
        {"appid": 5, "side": "s"},
        {"appid": "a", "side": None},
        {"appid": "a", "side": ["s"]},
        {"appid": "a", "side": "s", "client_version": ["x"]},
        {"appid": "a", "side": "s", "client_version": "python"},
    ],
)
def test_bind_with_wrong_types_is_an_error_not_a_crash(fields: dict[str, Any]) -> None:
    session = Session(SessionConfig())
    the_error(send(session, type="bind", **fields))
    assert session.app is None
    assert isinstance(send(session, type="bind", appid="a", side="s").op, Bind)


# -- list / allocate ---------------------------------------------------------------------------


def test_list() -> None:
    replies = run(bound(), ["1", "23"], type="list")
    assert replies[1:] == [{"type": "nameplates", "nameplates": [{"id": "1"}, {"id": "23"}]}]


def test_allocate_once_per_connection() -> None:
    session = bound()
    step = send(session, type="allocate")
    assert step.op == Allocate("app1", "side1", NOW)
    assert complete(session, step, "4") == [{"type": "allocated", "nameplate": "4"}]
    assert the_error(send(session, type="allocate")) == "you already allocated one, don't be greedy"


def test_allocate_does_not_set_the_claim() -> None:
    session = bound()
    run(session, "4", type="allocate")
    assert the_error(send(session, type="release")) == (
        "release without nameplate must follow claim"
    )
    assert isinstance(send(session, type="claim", nameplate="4").op, Claim)


def test_refused_allocate_can_be_retried() -> None:
    session = bound()
    replies = run(session, Refused("no free nameplate", ErrorKind.EXHAUSTED), type="allocate")
    assert replies[1]["error"] == "no free nameplate"
    assert isinstance(send(session, type="allocate").op, Allocate)


# -- claim -------------------------------------------------------------------------------------


def test_claim() -> None:
    session = bound()
    step = send(session, type="claim", nameplate="07")
    assert step.op == Claim("app1", "side1", "07", NOW)
    assert complete(session, step, "mbox") == [{"type": "claimed", "mailbox": "mbox"}]


def test_claim_errors_in_order() -> None:
    session = bound()
    assert the_error(send(session, type="claim")) == "claim requires 'nameplate'"
    run(session, "m", type="claim", nameplate="5")
    assert the_error(send(session, type="claim")) == "claim requires 'nameplate'"
    assert the_error(send(session, type="claim", nameplate="5")) == "only one claim per connection"


@pytest.mark.parametrize(
    "name",
    ["", "abc", "1-2", "-1", " 1", "1 ", "1\n", "\u0663", "1\u0663", "\uff11", "1" * 41, "1.5"],
)
def test_invalid_nameplates_are_refused(name: str) -> None:
    assert the_error(send(bound(), type="claim", nameplate=name)) == "invalid nameplate"


@pytest.mark.parametrize("name", ["0", "07", "1" * 40, "999999"])
def test_valid_nameplates(name: str) -> None:
    assert send(bound(), type="claim", nameplate=name).op == Claim("app1", "side1", name, NOW)


def test_an_invalid_claim_changes_nothing() -> None:
    session = bound()
    assert the_error(send(session, type="claim", nameplate="x")) == "invalid nameplate"
    assert (session.did_claim, session.claimed) == (False, None)
    assert the_error(send(session, type="release")) == (
        "release without nameplate must follow claim"
    )
    assert send(session, type="claim", nameplate="7").op == Claim("app1", "side1", "7", NOW)


def test_refused_claim_still_uses_up_the_claim() -> None:
    session = bound()
    replies = run(session, Refused("crowded", ErrorKind.CROWDED), type="claim", nameplate="7")
    assert replies == [
        {"type": "ack", "id": None},
        {"type": "error", "error": "crowded", "orig": {"type": "claim", "nameplate": "7"}},
    ]
    assert the_error(send(session, type="claim", nameplate="7")) == "only one claim per connection"
    # ...and the refused name is the connection's claim for a bare release
    # (docs/mailbox-protocol.md §5.1).
    assert send(session, type="release").op == Release("app1", "side1", "7", NOW)


def test_claim_with_wrong_type_is_an_error() -> None:
    assert "nameplate" in the_error(send(bound(), type="claim", nameplate=7))


# -- release -----------------------------------------------------------------------------------


def test_release_uses_the_claim() -> None:
    session = bound()
    run(session, "m", type="claim", nameplate="12")
    step = send(session, type="release")
    assert step.op == Release("app1", "side1", "12", NOW)
    assert complete(session, step, None) == [{"type": "released"}]


def test_release_with_nameplate_without_claim() -> None:
    step = send(bound(), type="release", nameplate="3")
    assert step.op == Release("app1", "side1", "3", NOW)


def test_release_errors_in_order() -> None:
    session = bound()
    assert the_error(send(session, type="release")) == (
        "release without nameplate must follow claim"
    )
    run(session, "m", type="claim", nameplate="12")
    assert the_error(send(session, type="release", nameplate="13")) == (
        "release and claim must use same nameplate"
    )
    run(session, None, type="release", nameplate="12")
    # Already released is checked before the nameplate comparison.
    assert the_error(send(session, type="release", nameplate="13")) == (
        "only one release per connection"
    )
    assert the_error(send(session, type="release")) == "only one release per connection"


# -- open / add --------------------------------------------------------------------------------


def test_open_replays_messages() -> None:
    session = bound()
    step = send(session, type="open", mailbox="mb")
    assert step.op == Open("app1", "side1", "mb", NOW)
    stored = [Message(1, "s1", "pake", "aa", 1.5, "0001"), Message(2, "s2", "pake", "bb", 2.5, 9)]
    assert complete(session, step, Page(stored)) == [
        {"type": "message", "side": "s1", "phase": "pake", "body": "aa", "server_rx": 1.5,
         "id": "0001"},
        {"type": "message", "side": "s2", "phase": "pake", "body": "bb", "server_rx": 2.5,
         "id": 9},
    ]


def test_open_errors_in_order() -> None:
    session = bound()
    assert the_error(send(session, type="open")) == "open requires 'mailbox'"
    run(session, Page([]), type="open", mailbox="mb")
    assert the_error(send(session, type="open")) == "only one open per connection"
    assert the_error(send(session, type="open", mailbox="mb")) == "only one open per connection"


def test_crowded_open_leaves_the_connection_unopened() -> None:
    session = bound()
    replies = run(session, Refused("crowded", ErrorKind.CROWDED), type="open", mailbox="mb")
    assert replies[1]["error"] == "crowded"
    assert the_error(send(session, type="add", phase="p", body="b")) == (
        "must open mailbox before adding"
    )


def test_add() -> None:
    session = opened("mb")
    step = send(session, NOW + 1, type="add", phase="pake", body="abcd", id="0002", side="liar")
    assert step.op == Add("app1", "side1", "mb", "pake", "abcd", NOW + 1, "0002")
    assert step.replies == [{"type": "ack", "id": "0002"}]


def test_add_without_id_stores_null() -> None:
    step = send(opened(), type="add", phase="p", body="")
    assert isinstance(step.op, Add) and step.op.msg_id is None


def test_add_errors_in_order() -> None:
    session = bound()
    assert the_error(send(session, type="add")) == "must open mailbox before adding"
    session = opened()
    assert the_error(send(session, type="add")) == "missing 'phase'"
    assert the_error(send(session, type="add", body="b")) == "missing 'phase'"
    assert the_error(send(session, type="add", phase="p")) == "missing 'body'"


@pytest.mark.parametrize("fields", [{"phase": 1, "body": "b"}, {"phase": "p", "body": {"x": 1}}])
def test_add_with_wrong_types_is_an_error(fields: dict[str, Any]) -> None:
    the_error(send(opened(), type="add", **fields))


# -- close -------------------------------------------------------------------------------------


def test_close_uses_the_open_mailbox() -> None:
    session = opened("mb")
    step = send(session, type="close", mood="happy")
    assert step.op == Close("app1", "side1", "mb", "happy", NOW, implicit_open=False)
    assert complete(session, step, None) == [{"type": "closed"}]


def test_close_by_id_without_open_is_implicit() -> None:
    step = send(bound(), type="close", mailbox="other", mood="lonely")
    assert step.op == Close("app1", "side1", "other", "lonely", NOW, implicit_open=True)


def test_close_with_explicit_same_mailbox_is_not_implicit() -> None:
    step = send(opened("mb"), type="close", mailbox="mb")
    assert step.op == Close("app1", "side1", "mb", None, NOW, implicit_open=False)


def test_go_errory_close_of_empty_mailbox() -> None:
    step = send(bound(), type="close", mailbox="", mood="errory")
    assert step.op == Close("app1", "side1", "", "errory", NOW, implicit_open=True)


def test_close_errors_in_order() -> None:
    session = bound()
    assert the_error(send(session, type="close")) == "close without mailbox must follow open"
    session = opened("mb")
    assert the_error(send(session, type="close", mailbox="other")) == (
        "open and close must use same mailbox"
    )
    run(session, None, type="close", mailbox="mb")
    assert the_error(send(session, type="close", mailbox="other")) == (
        "only one close per connection"
    )
    assert the_error(send(session, type="close")) == "only one close per connection"


def test_refused_close_is_not_counted() -> None:
    session = bound()
    replies = run(session, Refused("crowded", ErrorKind.CROWDED), type="close", mailbox="mb")
    assert replies[1]["error"] == "crowded"
    assert isinstance(send(session, type="close", mailbox="mb").op, Close)


def test_open_again_after_close() -> None:
    session = opened("mb")
    run(session, None, type="close")
    assert the_error(send(session, type="add", phase="p", body="b")) == (
        "must open mailbox before adding"
    )
    assert send(session, type="open", mailbox="mb2").op == Open("app1", "side1", "mb2", NOW)


def test_close_with_wrong_types_is_an_error() -> None:
    the_error(send(opened(), type="close", mood=5))
    the_error(send(bound(), type="close", mailbox=["x"]))


# -- permissions (hashcash) --------------------------------------------------------------------

BITS = 8
RESOURCE = "r3s0urce"


def guarded(spent: hashcash.SpentStamps | None = None) -> Session:
    return Session(SessionConfig(hashcash_bits=BITS), resource=RESOURCE, spent=spent)


def test_welcome_requires_hashcash_with_exactly_bits_and_resource() -> None:
    welcome = welcome_of(guarded(), ADDRESS)["welcome"]
    assert welcome["permission-required"] == {"hashcash": {"bits": BITS, "resource": RESOURCE}}


def test_each_session_gets_its_own_random_resource() -> None:
    config = SessionConfig(hashcash_bits=BITS)
    a, b = Session(config), Session(config)
    assert a.resource and b.resource and a.resource != b.resource
    assert ":" not in a.resource


def test_no_permission_required_without_hashcash() -> None:
    assert "permission-required" not in welcome_of(Session(SessionConfig()), ADDRESS)["welcome"]


def test_bind_without_stamp_is_denied_and_closes() -> None:
    session = guarded()
    step = send(session, type="bind", appid="a", side="s")
    assert step.replies[0] == {"type": "ack", "id": None}
    assert errors(step) == [PERMISSION_DENIED]
    assert step.close
    assert step.op is None
    assert session.app is None


def test_ping_is_allowed_before_permission() -> None:
    step = send(guarded(), type="ping", ping=1)
    assert step.replies[1] == {"type": "pong", "pong": 1} and not step.close


@pytest.mark.parametrize("kind", ["submit-permissions", "submit-permission"])
def test_minted_stamp_grants_bind(kind: str) -> None:
    session = guarded()
    stamp = mint_stamp(RESOURCE, BITS, NOW)
    step = send(session, type=kind, method="hashcash", stamp=stamp, id="p1")
    assert step.replies == [{"type": "ack", "id": "p1"}]
    assert step.op is None and not step.close
    step = send(session, type="bind", appid="a", side="s")
    assert step.op == Bind("a", "s", None, None, NOW)
    assert not step.close


def test_stronger_stamp_than_required_is_accepted() -> None:
    session = guarded()
    send(session, type="submit-permissions", method="hashcash",
         stamp=mint_stamp(RESOURCE, BITS + 2, NOW))
    assert isinstance(send(session, type="bind", appid="a", side="s").op, Bind)


def _refused_stamp(session: Session, stamp: Any, method: Any = "hashcash") -> str:
    step = send(session, type="submit-permissions", method=method, stamp=stamp)
    text = the_error(step)
    assert text.startswith(PERMISSION_DENIED)
    assert not step.close
    # The submission did not grant anything: bind is still denied and closes.
    bind = send(session, type="bind", appid="a", side="s")
    assert errors(bind) == [PERMISSION_DENIED] and bind.close
    return text


def _bad_work_stamp(resource: str, bits: int) -> str:
    """A stamp claiming `bits` whose hash does not have them."""
    for counter in range(10_000):
        stamp = f"1:{bits}:231114:{resource}::abcdef:{counter:x}"
        if hashcash.leading_zero_bits(hashlib.sha1(stamp.encode()).digest()) < bits:
            return stamp
    raise AssertionError("unreachable")


def test_stamp_without_the_work_is_refused() -> None:
    assert "work" in _refused_stamp(guarded(), _bad_work_stamp(RESOURCE, BITS))


def test_under_strength_stamp_is_refused() -> None:
    weak = mint_stamp(RESOURCE, BITS - 4, NOW)
    assert "bits" in _refused_stamp(guarded(), weak)


def test_stamp_for_another_resource_is_refused() -> None:
    other = mint_stamp("elsewhere", BITS, NOW)
    assert "resource" in _refused_stamp(guarded(), other)


def test_stale_stamp_is_refused() -> None:
    old = mint_stamp(RESOURCE, BITS, NOW - 10 * 86400)
    assert "stale" in _refused_stamp(guarded(), old)


def test_reused_stamp_is_refused() -> None:
    spent = hashcash.SpentStamps()
    stamp = mint_stamp(RESOURCE, BITS, NOW)
    first = guarded(spent)
    send(first, type="submit-permissions", method="hashcash", stamp=stamp)
    assert isinstance(send(first, type="bind", appid="a", side="s").op, Bind)
    assert "used" in _refused_stamp(guarded(spent), stamp)


@pytest.mark.parametrize("stamp", ["", "garbage", "1:x:d:r3s0urce::r:0", "2:8:d:r3s0urce::r:0", 5])
def test_malformed_stamps_are_refused(stamp: Any) -> None:
    _refused_stamp(guarded(), stamp)


def test_unknown_method_is_refused() -> None:
    _refused_stamp(guarded(), mint_stamp(RESOURCE, BITS, NOW), method="none")


def test_submit_after_bind_is_refused() -> None:
    session = guarded()
    send(session, type="submit-permissions", method="hashcash",
         stamp=mint_stamp(RESOURCE, BITS, NOW))
    run(session, None, type="bind", appid="a", side="s")
    again = mint_stamp(RESOURCE, BITS, NOW)
    assert the_error(send(session, type="submit-permissions", method="hashcash",
                          stamp=again)) == "already bound"


# -- values PostgreSQL cannot store --------------------------------------------------------------
# A NUL in a text column, a lone surrogate, or NaN in a jsonb id made the store fail, which the
# shell reports as "internal server error" and closes the connection (and the whole batch of
# other connections' commands had to be retried one by one). They are protocol errors instead.


@pytest.mark.parametrize("raw", ['{"type": "ping", "ping": NaN}', '{"type": "ping", "ping": 1,'
                                 ' "id": Infinity}', '{"type": "ping", "ping": -Infinity}'])
def test_non_standard_json_constants_are_invalid_json(raw: str) -> None:
    step = receive(Session(SessionConfig()), raw, NOW)
    assert [r["type"] for r in step.replies] == ["error"]


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "bind", "appid": "a\u0000", "side": "s"},
        {"type": "bind", "appid": "a", "side": "\ud800"},
        {"type": "bind", "appid": "a", "side": "s", "client_version": ["py\u0000", "1"]},
        {"type": "bind", "appid": "a", "side": "s", "client_version": ["py", "\udfff"]},
    ],
)
def test_unstorable_bind_is_an_error(msg: dict[str, Any]) -> None:
    session = Session(SessionConfig())
    the_error(send_dict(session, msg))
    assert session.app is None


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "open", "mailbox": "m\u0000"},
        {"type": "close", "mailbox": "m", "mood": "\u0000"},
        {"type": "close", "mailbox": "\ud83d"},
    ],
)
def test_unstorable_strings_after_bind_are_errors(msg: dict[str, Any]) -> None:
    the_error(send_dict(bound(), msg))


@pytest.mark.parametrize(
    "fields",
    [
        {"phase": "p\u0000", "body": "b"},
        {"phase": "p", "body": "\u0000"},
        {"phase": "p", "body": "b\ud800"},
        {"phase": "p", "body": "b", "id": "\u0000"},
        {"phase": "p", "body": "b", "id": ["ok", {"k": "\udc00"}]},
        {"phase": "p", "body": "b", "id": {"\u0000": 1}},
    ],
)
def test_unstorable_add_is_an_error(fields: dict[str, Any]) -> None:
    the_error(send_dict(opened(), {"type": "add", **fields}))


def test_ordinary_unicode_is_fine() -> None:
    step = send(opened(), type="add", phase="p\u00e9", body="\U0001f600", id={"k": ["\u4e2d"]})
    assert isinstance(step.op, Add)
