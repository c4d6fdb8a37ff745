"""Every message type and error over a real WebSocket against real PostgreSQL
(docs/mailbox-protocol.md §3-§5, §9)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from tests.integration.mailbox_helpers import (
    add,
    all_state_gone,
    count,
    mailbox_results,
    query,
    serving,
)
from tests.support.mailbox import Client, client, url


async def pair(a: Client, b: Client, app: str = "app") -> tuple[str, str]:
    """A allocates and claims, B claims the same nameplate; both open. Returns (name, mailbox)."""
    await a.bind("aaaa", app)
    name = (await a.command(type="allocate"))["nameplate"]
    mailbox = (await a.command(type="claim", nameplate=name))["mailbox"]
    await a.ack_only(type="open", mailbox=mailbox)
    await b.bind("bbbb", app)
    assert (await b.command(type="claim", nameplate=name)) == {"type": "claimed",
                                                               "mailbox": mailbox}
    await b.ack_only(type="open", mailbox=mailbox)
    return name, mailbox


# -- welcome, ping, errors before bind ---------------------------------------------------------


async def test_welcome_is_the_first_frame_with_configured_fields(database_url: str) -> None:
    async with serving(database_url, motd="hello there", advertise_version="0.24.0",
                       signal_error="down for maintenance") as server, client(server) as c:
        assert c.received[0] == {
            "type": "welcome",
            "welcome": {
                "motd": "hello there",
                "current_cli_version": "0.24.0",
                "error": "down for maintenance",
                "your-address": {"port": c.received[0]["welcome"]["your-address"]["port"],
                                 "ipv4": "127.0.0.1"},
            },
        }
        port = c.received[0]["welcome"]["your-address"]["port"]
        assert isinstance(port, int) and port > 0
        # signal_error does not stop the server from serving the connection
        await c.bind("side")
        assert (await c.command(type="list"))["type"] == "nameplates"


async def test_default_welcome_has_only_your_address(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as c:
        assert list(c.received[0]["welcome"]) == ["your-address"]


async def test_welcome_without_speaking_first(database_url: str) -> None:
    async with serving(database_url) as server, open_websocket_url(url(server)) as ws:
        with trio.fail_after(5):
            first = json.loads(await ws.get_message())
        assert first["type"] == "welcome"
        assert isinstance(first["server_tx"], float)


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [("127.0.0.1/32", {"port": 4444, "ipv4": "203.0.113.9"}),
     ("10.0.0.0/8", None)],
)
async def test_your_address_from_a_trusted_proxy_only(
    database_url: str, trusted: str, expected: dict[str, Any] | None,
) -> None:
    headers = [(b"X-Real-IP", b"203.0.113.9"), (b"X-Real-Port", b"4444")]
    async with serving(database_url, trusted_proxies=trusted) as server, \
            open_websocket_url(url(server), extra_headers=headers) as ws:
        with trio.fail_after(5):
            welcome = json.loads(await ws.get_message())
        address = welcome["welcome"]["your-address"]
        if expected is None:  # the socket peer, headers ignored
            assert address["ipv4"] == "127.0.0.1" and address["port"] != 4444
        else:
            assert address == expected


async def test_pipelined_commands_are_answered_in_order(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as c:
        pipelined: list[dict[str, Any]] = [
            {"type": "bind", "appid": "app", "side": "s", "id": "01"},
            {"type": "list", "id": "02"},
            {"type": "ping", "ping": 3, "id": "03"},
            {"type": "open", "mailbox": "mb", "id": "04"},
            {"type": "add", "phase": "p", "body": "aa", "id": "05"},
            {"type": "claim", "nameplate": "6", "id": "06"},
            {"type": "close", "mood": "happy", "id": "07"},
        ]
        for msg in pipelined:
            await c.send(**msg)
        got = [await c.recv() for _ in range(12)]
        assert [(m["type"], m.get("id")) for m in got] == [
            ("ack", "01"),
            ("ack", "02"), ("nameplates", None),
            ("ack", "03"), ("pong", None),
            ("ack", "04"),
            ("ack", "05"), ("message", "05"),
            ("ack", "06"), ("claimed", None),
            ("ack", "07"), ("closed", None),
        ]
        await c.barrier()


async def test_ping_pong_before_and_after_bind(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as c:
        assert await c.command(type="ping", ping=42, id=7) == {"type": "pong", "pong": 42}
        await c.bind("side")
        assert await c.command(type="ping", ping={"x": [1]}, id=None) == {
            "type": "pong", "pong": {"x": [1]}}


async def test_missing_type_gets_error_without_ack(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as c:
        await c.send(id="beef", hello=1)
        assert await c.recv() == {"type": "error", "error": "missing 'type'",
                                  "orig": {"id": "beef", "hello": 1}}
        assert await c.command(type="ping", ping=1) == {"type": "pong", "pong": 1}


async def test_errors_echo_the_command_and_keep_the_connection(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as c:
        expected: list[tuple[dict[str, Any], str]] = [
            ({"type": "list", "id": 1}, "must bind first"),
            ({"type": "frobnicate", "id": 2}, "must bind first"),
            ({"type": "ping", "id": 3}, "ping requires 'ping'"),
            ({"type": "bind", "id": 4}, "bind requires 'appid'"),
            ({"type": "bind", "appid": "app", "id": 5}, "bind requires 'side'"),
        ]
        for msg, error in expected:
            assert await c.command(**msg) == {"type": "error", "error": error, "orig": msg}
        await c.bind("side")
        expected = [
            ({"type": "frobnicate"}, "unknown type"),
            ({"type": "bind", "appid": "a", "side": "s"}, "already bound"),
            ({"type": "claim"}, "claim requires 'nameplate'"),
            ({"type": "release"}, "release without nameplate must follow claim"),
            ({"type": "open"}, "open requires 'mailbox'"),
            ({"type": "add", "phase": "p", "body": "b"}, "must open mailbox before adding"),
            ({"type": "close"}, "close without mailbox must follow open"),
        ]
        for msg, error in expected:
            msg["id"] = "c0de"
            assert await c.command(**msg) == {"type": "error", "error": error, "orig": msg}
        await c.ack_only(type="open", mailbox="mb")
        for msg, error in [
            ({"type": "add", "body": "b"}, "missing 'phase'"),
            ({"type": "add", "phase": "p"}, "missing 'body'"),
            ({"type": "open", "mailbox": "mb"}, "only one open per connection"),
            ({"type": "close", "mailbox": "other"}, "open and close must use same mailbox"),
        ]:
            msg["id"] = "c0de"
            assert await c.command(**msg) == {"type": "error", "error": error, "orig": msg}
        assert await c.command(type="close", mood="happy") == {"type": "closed"}
        msg = {"type": "close", "id": "c0de"}
        assert await c.command(**msg) == {"type": "error", "orig": msg,
                                          "error": "only one close per connection"}


async def test_ack_ids_are_echoed_verbatim(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as c:
        for msg_id in ["a9c5", 17, 2.5, None, ["x"], {"k": "v"}]:
            await c.send(type="ping", ping=0, id=msg_id)
            assert await c.recv() == {"type": "ack", "id": msg_id}
            assert await c.recv() == {"type": "pong", "pong": 0}
        await c.send(type="ping", ping=0)
        assert await c.recv() == {"type": "ack", "id": None}


# -- malformed frames --------------------------------------------------------------------------


async def test_malformed_frames_get_errors_and_the_connection_stays(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as c:
        not_json = "message is not valid JSON"
        not_object = "message must be a JSON object"
        for raw, text in [("{not json", not_json), ("[1, 2]", not_object),
                          ('"just a string"', not_object), ("42", not_object),
                          ("null", not_object)]:
            await c.send_raw(raw)
            assert await c.recv() == {"type": "error", "error": text,
                                      "orig": raw if text == not_json else json.loads(raw)}
        await c.send_raw(b"\xff\xfe not utf-8")
        assert (await c.recv())["error"] == not_json
        # A binary frame carrying JSON is treated like text.
        await c.send_raw(b'{"type": "ping", "ping": "bin", "id": "b1"}')
        assert await c.recv() == {"type": "ack", "id": "b1"}
        assert await c.recv() == {"type": "pong", "pong": "bin"}
        # Wrong field types: an error, never a dropped connection.
        bad_bind: list[tuple[dict[str, Any], str]] = [
            ({"type": "bind", "appid": 5, "side": "s"}, "'appid' must be a string"),
            ({"type": "bind", "appid": "app", "side": ["s"]}, "'side' must be a string"),
            ({"type": "bind", "appid": "app", "side": "s", "client_version": ["x"]},
             "'client_version' must be a list of [implementation, version]"),
        ]
        bad_bound: list[tuple[dict[str, Any], str]] = [
            ({"type": "claim", "nameplate": 7}, "'nameplate' must be a string"),
            ({"type": "release", "nameplate": 7}, "'nameplate' must be a string"),
            ({"type": "open", "mailbox": {"id": "x"}}, "'mailbox' must be a string"),
        ]
        bad_open: list[tuple[dict[str, Any], str]] = [
            ({"type": "add", "phase": 1, "body": "b"}, "'phase' must be a string"),
            ({"type": "add", "phase": "p", "body": {"x": 1}}, "'body' must be a string"),
            ({"type": "close", "mood": ["happy"]}, "'mood' must be a string"),
        ]
        for msg, text in bad_bind:
            assert await c.command(**msg) == {"type": "error", "error": text,
                                              "orig": {**msg, "id": "c0de"}}
        await c.bind("side")
        for msg, text in bad_bound:
            assert await c.command(**msg) == {"type": "error", "error": text,
                                              "orig": {**msg, "id": "c0de"}}
        await c.ack_only(type="open", mailbox="mb")
        for msg, text in bad_open:
            assert await c.command(**msg) == {"type": "error", "error": text,
                                              "orig": {**msg, "id": "c0de"}}
        echo = await add(c, "p", "beef")
        assert echo["body"] == "beef"
        assert await c.command(type="close", mood="happy") == {"type": "closed"}


async def test_values_postgresql_cannot_store_are_errors_not_dropped_connections(
    database_url: str,
) -> None:
    async with serving(database_url) as server, client(server) as c:
        await c.send_raw('{"type": "bind", "appid": "app\\u0000", "side": "s", "id": 1}')
        assert await c.recv() == {"type": "ack", "id": 1}
        assert (await c.recv())["error"] == "'appid' must not contain control characters"
        await c.send_raw('{"type": "ping", "ping": NaN}')
        assert (await c.recv())["error"] == "message is not valid JSON"
        # Numbers JSON cannot represent are refused, never echoed as Infinity (strict JSON:
        # `Client.recv` parses what it gets with json.loads, which would accept Infinity).
        await c.send_raw('{"type": "ping", "ping": 1e400, "id": 2}')
        assert await c.recv() == {"type": "error",
                                  "error": "'ping' contains a number out of range",
                                  "orig": '{"type": "ping", "ping": 1e400, "id": 2}'}
        deep = '{"type": "ping", "ping": ' + "[" * 950 + "]" * 950 + "}"
        await c.send_raw(deep)
        assert (await c.recv())["error"] == "message is nested too deeply (at most 32 levels)"
        for field in ("appid", "side"):
            await c.send_raw(json.dumps({"type": "bind", "appid": "a", "side": "s",
                                         field: "x" * 5000, "id": 3}))
            assert await c.recv() == {"type": "ack", "id": 3}
            limit = {"appid": 256, "side": 128}[field]
            assert (await c.recv())["error"] == (
                f"'{field}' is too long (at most {limit} characters)")
        await c.bind("side")
        await c.ack_only(type="open", mailbox="mb")
        for raw, text in [
            ('{"type": "add", "phase": "p", "body": "\\u0000"}',
             "'body' must not contain NUL characters"),
            ('{"type": "add", "phase": "p", "body": "\\ud800"}', "'body' must be valid Unicode"),
            ('{"type": "add", "phase": "p", "body": "b", "id": "\\u0000"}',
             "'id' must not contain NUL characters"),
            ('{"type": "add", "phase": "p", "body": "b", "id": NaN}',
             "message is not valid JSON"),
            ('{"type": "add", "phase": "p", "body": "b", "id": 1e400}',
             "'id' contains a number out of range"),
            ('{"type": "add", "phase": "p", "body": "b", "id": "' + "i" * 300 + '"}',
             "'id' is too long (at most 256 characters as JSON)"),
        ]:
            await c.send_raw(raw)
            reply = await c.recv()
            if reply["type"] == "ack":
                reply = await c.recv()
            assert (reply["type"], reply["error"]) == ("error", text), raw
        assert (await add(c, "p", "ok"))["body"] == "ok"
        assert await count(database_url, "messages") == 1


# -- list, allocate, claim, release ------------------------------------------------------------


async def test_list_shows_existing_nameplates_sorted_as_strings(database_url: str) -> None:
    async with serving(database_url) as server:
        for name in ["9", "10", "07"]:
            async with client(server) as c:
                await c.bind("side" + name)
                await c.command(type="claim", nameplate=name)
        async with client(server) as c:
            await c.bind("lister")
            assert await c.command(type="list") == {
                "type": "nameplates", "nameplates": [{"id": "07"}, {"id": "10"}, {"id": "9"}]}
        async with client(server) as c:
            await c.bind("lister", "other-app")
            assert await c.command(type="list") == {"type": "nameplates", "nameplates": []}


async def test_list_disallowed_is_always_empty(database_url: str) -> None:
    async with serving(database_url, allow_list=False) as server, client(server) as c:
        await c.bind("side")
        name = (await c.command(type="allocate"))["nameplate"]
        assert await c.command(type="list") == {"type": "nameplates", "nameplates": []}
        assert await query(database_url, "SELECT name FROM nameplates") == [(name,)]


async def test_allocate_fresh_app_gets_one_digit_then_two(database_url: str) -> None:
    async with serving(database_url) as server:
        names = []
        for i in range(10):
            async with client(server) as c:
                await c.bind(f"side{i}")
                reply = await c.command(type="allocate")
                assert reply["type"] == "allocated"
                names.append(reply["nameplate"])
                greedy = await c.command(type="allocate")
                assert greedy["error"] == "you already allocated one, don't be greedy"
        assert sorted(names[:9], key=int) == [str(n) for n in range(1, 10)]
        assert 10 <= int(names[9]) <= 99
        # Allocation claims for the side: the nameplate has a mailbox and the side's claim.
        rows = await query(database_url, "SELECT count(*) FROM nameplate_sides WHERE claimed")
        assert rows == [(10,)]
        assert await count(database_url, "mailboxes") == 10


async def test_allocate_then_claim_is_the_same_mailbox(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as c:
        await c.bind("side")
        name = (await c.command(type="allocate"))["nameplate"]
        mailbox = (await c.command(type="claim", nameplate=name))["mailbox"]
        assert len(mailbox) == 13 and mailbox == mailbox.lower()
        assert await query(database_url, "SELECT mailbox_id FROM nameplates") == [(mailbox,)]


async def test_claim_is_idempotent_per_side_across_connections(database_url: str) -> None:
    async with serving(database_url) as server:
        async with client(server) as a1:
            await a1.bind("aaaa")
            mailbox = (await a1.command(type="claim", nameplate="5"))["mailbox"]
            again = await a1.command(type="claim", nameplate="5")
            assert again["error"] == "only one claim per connection"
        async with client(server) as a2:
            await a2.bind("aaaa")
            assert (await a2.command(type="claim", nameplate="5"))["mailbox"] == mailbox
        async with client(server) as b:
            await b.bind("bbbb")
            assert (await b.command(type="claim", nameplate="5"))["mailbox"] == mailbox
        rows = await query(database_url, "SELECT side FROM nameplate_sides ORDER BY side")
        assert rows == [("aaaa",), ("bbbb",)]


async def test_claim_in_another_app_is_unrelated(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as a, client(server) as b:
        await a.bind("side", "app1")
        await b.bind("side", "app2")
        m1 = (await a.command(type="claim", nameplate="5"))["mailbox"]
        m2 = (await b.command(type="claim", nameplate="5"))["mailbox"]
        assert m1 != m2


@pytest.mark.parametrize("name", ["\u0663", "1" * 41, "abc", ""])
async def test_invalid_nameplate_is_an_error(database_url: str, name: str) -> None:
    async with serving(database_url) as server, client(server) as c:
        await c.bind("side")
        reply = await c.command(type="claim", nameplate=name)
        assert reply["type"] == "error" and reply["orig"]["nameplate"] == name
        assert await count(database_url, "nameplates") == 0
        # an invalid claim changes nothing: the connection's one claim is still to come
        assert (await c.command(type="release"))["error"] == (
            "release without nameplate must follow claim")
        assert (await c.command(type="claim", nameplate="5"))["type"] == "claimed"


async def test_reclaimed_after_release(database_url: str) -> None:
    async with serving(database_url) as server:
        async with client(server) as a, client(server) as b:
            await a.bind("aaaa")
            await a.command(type="claim", nameplate="8")
            await b.bind("bbbb")
            await b.command(type="claim", nameplate="8")
            assert await a.command(type="release") == {"type": "released"}
        async with client(server) as a2:
            await a2.bind("aaaa")
            reply = await a2.command(type="claim", nameplate="8")
            assert reply == {"type": "error", "error": "reclaimed",
                             "orig": {"type": "claim", "nameplate": "8", "id": "c0de"}}


async def test_claim_after_nameplate_is_gone_makes_a_new_one(database_url: str) -> None:
    async with serving(database_url) as server:
        async with client(server) as a:
            await a.bind("aaaa")
            first = (await a.command(type="claim", nameplate="3"))["mailbox"]
            await a.command(type="release")
        async with client(server) as a2:
            await a2.bind("aaaa")
            second = (await a2.command(type="claim", nameplate="3"))["mailbox"]
            assert second != first


async def test_release_is_idempotent_including_unknown_nameplates(database_url: str) -> None:
    async with serving(database_url) as server:
        async with client(server) as c:
            await c.bind("side")
            assert await c.command(type="release", nameplate="77") == {"type": "released"}
            again = await c.command(type="release", nameplate="77")
            assert again["error"] == "only one release per connection"
        async with client(server) as a, client(server) as b:
            await a.bind("aaaa")
            await a.command(type="claim", nameplate="4")
            await b.bind("bbbb")
            await b.command(type="claim", nameplate="4")
            assert await a.command(type="release", nameplate="4") == {"type": "released"}
        async with client(server) as a2:
            await a2.bind("aaaa")
            assert await a2.command(type="release", nameplate="4") == {"type": "released"}
            # Someone else's claim: releasing is harmless.
        async with client(server) as c2:
            await c2.bind("stranger")
            assert await c2.command(type="release", nameplate="4") == {"type": "released"}
        rows = await query(database_url, "SELECT side, claimed FROM nameplate_sides ORDER BY side")
        assert rows == [("aaaa", False), ("bbbb", True)]
        async with client(server) as b2:
            await b2.bind("bbbb")
            assert await b2.command(type="release", nameplate="4") == {"type": "released"}
        assert await count(database_url, "nameplates") == 0
        assert await count(database_url, "nameplate_sides") == 0


async def test_release_mismatch(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as c:
        await c.bind("side")
        await c.command(type="claim", nameplate="4")
        reply = await c.command(type="release", nameplate="5")
        assert reply["error"] == "release and claim must use same nameplate"
        assert await c.command(type="release", nameplate="4") == {"type": "released"}


# -- crowding ----------------------------------------------------------------------------------


async def test_crowded_claim_does_not_lock_out_the_pair(database_url: str) -> None:
    async with serving(database_url) as server:
        async with client(server) as a, client(server) as b:
            name, mailbox = await pair(a, b)
            async with client(server) as c:
                await c.bind("cccc")
                reply = await c.command(type="claim", nameplate=name)
                assert reply["error"] == "crowded"
                reply = await c.command(type="open", mailbox=mailbox)
                assert reply["error"] == "crowded"
                reply = await c.command(type="close", mailbox=mailbox, mood="happy")
                assert reply["error"] == "crowded"
            # Already-open sides keep talking.
            echo = await add(a, "pake", "aa")
            assert await b.recv() == echo
        rows = await query(database_url, "SELECT side FROM mailbox_sides ORDER BY side")
        assert rows == [("aaaa",), ("bbbb",)]
        # The rightful pair reconnects, re-claims, re-opens (replay), releases and closes.
        for side in ("aaaa", "bbbb"):
            async with client(server) as again:
                await again.bind(side)
                claimed = await again.command(type="claim", nameplate=name)
                assert claimed == {"type": "claimed", "mailbox": mailbox}
                await again.ack_only(type="open", mailbox=mailbox)
                assert (await again.recv())["body"] == "aa"
                assert await again.command(type="release") == {"type": "released"}
                assert await again.command(type="close", mood="happy") == {"type": "closed"}
        assert await all_state_gone(database_url)
        assert await mailbox_results(database_url) == ["crowded"]
        rows = await query(database_url, "SELECT result FROM usage_nameplates")
        assert rows == [("crowded",)]


async def test_crowded_open_of_standalone_mailbox(database_url: str) -> None:
    async with serving(database_url) as server:
        async with client(server) as a, client(server) as b, client(server) as c:
            await a.bind("aaaa")
            await b.bind("bbbb")
            await c.bind("cccc")
            await a.ack_only(type="open", mailbox="standalone")
            await b.ack_only(type="open", mailbox="standalone")
            assert (await c.command(type="open", mailbox="standalone"))["error"] == "crowded"
            # The refused connection did not open anything.
            reply = await c.command(type="add", phase="p", body="b")
            assert reply["error"] == "must open mailbox before adding"
            echo = await add(b, "p", "bb")
            assert await a.recv() == echo
            await c.barrier()
            assert await a.command(type="close", mood="happy") == {"type": "closed"}
            assert await b.command(type="close", mood="happy") == {"type": "closed"}
        assert await mailbox_results(database_url) == ["crowded"]
        assert await count(database_url, "mailboxes") == 0


# -- open, add, replay -------------------------------------------------------------------------


async def test_add_echoes_to_sender_and_peer(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as a, client(server) as b:
        await pair(a, b)
        echo = await add(a, "pake", "abcd", "0001")
        assert echo == {"type": "message", "side": "aaaa", "phase": "pake", "body": "abcd",
                        "id": "0001", "server_rx": echo["server_rx"]}
        assert isinstance(echo["server_rx"], float)
        assert await b.recv() == echo
        # A forged side inside add is ignored.
        await b.ack_only(type="add", phase="pake", body="ef", side="aaaa", id=9)
        live_b = await b.recv()
        assert live_b["side"] == "bbbb" and live_b["id"] == 9
        assert await a.recv() == live_b
        # No de-duplication: the same phase twice is two messages.
        await add(a, "pake", "abcd", "0001")
        await b.recv()
        assert await count(database_url, "messages") == 3


async def test_open_replays_own_and_peer_messages_identical_to_live(database_url: str) -> None:
    async with serving(database_url) as server:
        live: list[dict[str, Any]] = []
        async with client(server) as a, client(server) as b:
            _, mailbox = await pair(a, b)
            for i, msg_id in enumerate(["0001", 7, None, {"n": 1}, 1.5, 10**20]):
                sender, other = (a, b) if i % 2 == 0 else (b, a)
                await sender.send(type="add", phase=f"p{i}", body=f"{i:02x}", id=msg_id)
                assert await sender.recv() == {"type": "ack", "id": msg_id}
                echo = await sender.recv()
                assert echo["id"] == msg_id
                assert await other.recv() == echo
                live.append(echo)
        for side in ("aaaa", "bbbb", "aaaa"):
            async with client(server) as again:
                await again.bind(side)
                await again.ack_only(type="open", mailbox=mailbox)
                replay = [await again.recv() for _ in live]
                assert replay == live  # same side, phase, body, server_rx (exact float) and id
                await again.barrier()


async def test_open_subscribes_for_later_messages(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as a, client(server) as b:
        await a.bind("aaaa")
        await b.bind("bbbb")
        await a.ack_only(type="open", mailbox="direct")
        first = await add(a, "one", "01")
        await b.ack_only(type="open", mailbox="direct")
        assert await b.recv() == first
        second = await add(a, "two", "02")
        assert await b.recv() == second
        rows = await query(database_url, "SELECT for_nameplate FROM mailboxes")
        assert rows == [(False,)]


async def test_big_body_round_trips(database_url: str) -> None:
    body = "0123456789abcdef" * 4096  # 64 KiB
    async with serving(database_url) as server, client(server) as a, client(server) as b:
        _, mailbox = await pair(a, b)
        echo = await add(a, "big", body)
        assert echo["body"] == body
        assert (await b.recv())["body"] == body
        async with client(server) as again:
            await again.bind("aaaa")
            await again.ack_only(type="open", mailbox=mailbox)
            assert await again.recv() == echo


async def test_same_mailbox_id_in_two_apps_is_independent(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as a, client(server) as b:
        await a.bind("side", "app1")
        await b.bind("side", "app2")
        await a.ack_only(type="open", mailbox="shared")
        mine = await add(a, "p", "aa")
        await b.ack_only(type="open", mailbox="shared")
        await b.barrier()  # no replay of app1's message
        theirs = await add(b, "p", "bb")
        assert theirs["body"] == "bb"
        await a.barrier()
        assert await a.command(type="close", mood="happy") == {"type": "closed"}
        assert await query(database_url, "SELECT app_id FROM mailboxes") == [("app2",)]
        assert await query(database_url, "SELECT body FROM messages") == [("bb",)]
        assert mine["body"] == "aa"


async def test_open_again_after_close_on_the_same_connection(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as a, client(server) as b:
        _, mailbox = await pair(a, b)
        assert await a.command(type="close", mood="happy") == {"type": "closed"}
        await a.ack_only(type="open", mailbox=mailbox)
        rows = await query(database_url, "SELECT side, opened FROM mailbox_sides ORDER BY side")
        assert rows == [("aaaa", True), ("bbbb", True)]
        # Still subscribed: a message from b reaches a.
        echo = await add(b, "p", "bb")
        assert await a.recv() == echo


# -- close -------------------------------------------------------------------------------------


async def test_both_close_without_releasing_retires_everything(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as a, client(server) as b:
        await pair(a, b)
        await add(a, "pake", "aa")
        await b.recv()
        assert await a.command(type="close", mood="happy") == {"type": "closed"}
        assert await count(database_url, "mailboxes") == 1
        assert await b.command(type="close", mood="happy") == {"type": "closed"}
        assert await all_state_gone(database_url)
        assert await mailbox_results(database_url) == ["happy"]
        # A nameplate deleted with its mailbox gets no usage record of its own.
        assert await count(database_url, "usage_nameplates") == 0


async def test_close_is_idempotent_across_connections(database_url: str) -> None:
    async with serving(database_url) as server:
        async with client(server) as a, client(server) as b:
            _, mailbox = await pair(a, b)
            assert await a.command(type="close", mood="happy") == {"type": "closed"}
        async with client(server) as a2:
            await a2.bind("aaaa")
            assert await a2.command(type="close", mailbox=mailbox, mood="happy") == {
                "type": "closed"}
        rows = await query(database_url, "SELECT side, opened, mood FROM mailbox_sides"
                                         " ORDER BY side")
        assert rows == [("aaaa", False, "happy"), ("bbbb", True, None)]
        # b reconnected just to say goodbye: an implicit open, then the close retires it.
        async with client(server) as b2:
            await b2.bind("bbbb")
            assert await b2.command(type="close", mailbox=mailbox, mood="happy") == {
                "type": "closed"}
        assert await count(database_url, "mailboxes") == 0
        assert await mailbox_results(database_url) == ["happy"]


async def test_go_errory_close_of_empty_mailbox(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as c:
        await c.bind("side")
        assert await c.command(type="close", mailbox="", mood="errory") == {"type": "closed"}
        rows = await query(database_url, "SELECT for_nameplate, total_time, waiting_time, result"
                                         " FROM usage_mailboxes")
        assert rows == [(False, 0.0, None, "errory")]
        assert await count(database_url, "mailboxes") == 0
        # ...and nothing broke: the connection and server carry on.
        assert await c.command(type="ping", ping=1) == {"type": "pong", "pong": 1}


async def test_closed_mailbox_drops_its_subscribers(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as a, client(server) as b:
        _, mailbox = await pair(a, b)
        await a.command(type="close", mood="happy")
        echo = await add(b, "late", "ff")
        await a.barrier()  # a unsubscribed at close
        assert echo["phase"] == "late"
        await b.command(type="close", mood="happy")
        assert server.hub.subscribed_mailboxes() == []
        assert mailbox
