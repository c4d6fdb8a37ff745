"""Invalid values against a real server and PostgreSQL: every command with each wrong value,
then every follow-up command, gets clean `error` frames or the protocol's normal answers; no
connection is closed 1011 and nothing counts an internal error or a database failure. A value
PostgreSQL itself refuses (a data exception) is the client's error too
(docs/mailbox-protocol.md §9.2)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from wormhole_mailbox.core import validation
from wormhole_mailbox.core.ops import UNSTORABLE
from wormhole_mailbox.server import MailboxServer

from tests.integration.mailbox_helpers import serving
from tests.integration.test_mailbox_hostile import honest
from tests.support.invalid_values import BAD_VALUES, FOLLOW_UPS, SPOILED, spoiled
from tests.support.mailbox import Client, client

P = "wormhole_mailbox"
# what a command may get besides its ack, on a connection that stays open
ANSWERS = {"error", "pong", "nameplates", "allocated", "claimed", "released", "message",
           "closed"}
SERVER_TROUBLE = {"internal server error", "command timed out"}
# quotas out of the way: each connection allocates, claims and opens
GENEROUS = {"allocations_per_minute": 1e6, "new_mailboxes_per_minute": 1e6,
            "nameplates_per_ip": 1_000_000}


def troubles(server: MailboxServer) -> dict[str, float]:
    """The counts that must not move: the server's own failures, seen by clients or not."""
    registry = server.metrics.registry

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(f"{P}_{name}", labels) or 0.0

    return {
        "dropped database": value("connections_dropped_total", reason="database"),
        "dropped command_timeout": value("connections_dropped_total", reason="command_timeout"),
        "errors internal": value("errors_total", kind="internal"),
        "errors timeout": value("errors_total", kind="timeout"),
        "database errors": value("database_errors_total"),
    }


async def answers(c: Client, msg: dict[str, Any]) -> list[dict[str, Any]]:
    """All the server sends after `msg` (its ack first), up to the pong of a ping sent
    after it: commands are answered in order, so that is everything `msg` caused."""
    c.pings += 1
    token = f"sweep-{c.pings}"
    await c.send_raw(json.dumps(msg))
    await c.send(type="ping", ping=token, id=token)
    frames = []
    while (frame := await c.recv()) != {"type": "pong", "pong": token}:
        frames.append(frame)
    assert frames[0]["type"] == "ack" and frames[-1] == {"type": "ack", "id": token}, frames
    return frames[1:-1]


def assert_clean(msg: dict[str, Any], frames: list[dict[str, Any]]) -> None:
    assert {f["type"] for f in frames} <= ANSWERS, (msg, frames)
    assert not [f for f in frames if f.get("error") in SERVER_TROUBLE], (msg, frames)


VALID_BIND = {"type": "bind", "appid": "app", "side": "side1"}


def stage_for(kind: str) -> list[dict[str, Any]]:
    """The commands that bring a connection to where `kind` is looked at past the sequence
    checks: nothing for ping and bind, a bind for most, an open mailbox for add and close."""
    if kind in ("ping", "bind"):
        return []
    if kind in ("add", "close"):
        return [VALID_BIND, {"type": "open", "mailbox": "mb"}]
    return [VALID_BIND]



def sweep_cases() -> Iterator[tuple[str, str, str]]:
    for kind, key in SPOILED:
        for bad in BAD_VALUES:
            yield kind, key, bad


async def sweep_one(server: MailboxServer, app: str, kind: str, key: str, bad: str) -> None:
    """One connection: the stage, the spoiled command, then every follow-up; `app` keeps
    each connection's nameplates and mailboxes apart from the others'."""
    def scoped(msg: dict[str, Any]) -> dict[str, Any]:
        return {**msg, "appid": app} if msg["type"] == "bind" and "appid" in msg else msg

    async with client(server) as c:
        for msg in stage_for(kind):
            assert_clean(msg, await answers(c, scoped(msg)))
        msg = spoiled(kind, key, BAD_VALUES[bad])
        if kind == "bind" and key != "appid":
            msg = scoped(msg)
        assert_clean(msg, await answers(c, msg))
        for follow_up in FOLLOW_UPS:
            assert_clean(follow_up, await answers(c, scoped(follow_up)))
        await c.barrier()  # still open


async def test_every_invalid_value_then_every_follow_up_is_answered_cleanly(
    database_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    cases = list(sweep_cases())
    async with serving(database_url, **GENEROUS) as server:
        before = troubles(server)
        with trio.fail_after(120), caplog.at_level(logging.WARNING, "wormhole_mailbox"):
            async with trio.open_nursery() as nursery:
                for worker in range(4):  # a few connections at a time
                    nursery.start_soon(_sweep_share, server, cases[worker::4], worker)
        assert troubles(server) == before
        for kind in ("malformed", "bad_characters", "too_long", "invalid_nameplate"):
            assert server.metrics.registry.get_sample_value(
                f"{P}_errors_total", {"kind": kind}), kind  # the sweep did refuse values
    # the core refused every invalid value: none reached PostgreSQL to be refused there
    assert not [r.getMessage() for r in caplog.records if r.name == "wormhole_mailbox.batcher"]


async def _sweep_share(
    server: MailboxServer, cases: list[tuple[str, str, str]], worker: int,
) -> None:
    for i, (kind, key, bad) in enumerate(cases):
        await sweep_one(server, f"sweep-{worker}-{i}", kind, key, bad)


@pytest.mark.parametrize("bad", ["12\x00", "12\ud800"])
async def test_a_release_after_a_refused_claim_is_not_an_internal_error(
    database_url: str, bad: str,
) -> None:
    async with serving(database_url) as server, client(server) as c:
        before = troubles(server)
        await c.bind("side")
        assert (await c.command(type="claim", nameplate=bad))["error"] == "invalid nameplate"
        assert (await c.command(type="release"))["error"] == (
            "release without nameplate must follow claim")
        assert await c.command(type="release", nameplate=bad) == {"type": "released"}
        await c.barrier()
        assert troubles(server) == before


# -- values only PostgreSQL refuses ----------------------------------------------------------
# The checks in `validation.py` refuse all of these first; with the character check switched
# off, each reaches PostgreSQL (or psycopg), which refuses it: SQLSTATE 22P05 and 22P02 for
# jsonb, psycopg's own refusal of NUL in text, a lone surrogate that cannot be encoded.

OPENED = [VALID_BIND, {"type": "open", "mailbox": "mb"}]
# (the stage, the command PostgreSQL refuses, a follow-up and its answer: nothing changed)
UNSTORABLE_COMMANDS: list[tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], str]] = [
    ([], {"type": "bind", "appid": "app\x00", "side": "s"}, {"type": "list"},
     "must bind first"),
    ([], {"type": "bind", "appid": "app", "side": "s\ud800"}, {"type": "list"},
     "must bind first"),
    ([], {"type": "bind", "appid": "app", "side": "s", "client_version": ["py\x00", "1"]},
     {"type": "list"}, "must bind first"),
    ([VALID_BIND], {"type": "open", "mailbox": "mb\x00"},
     {"type": "add", "phase": "pake", "body": "aa"}, "must open mailbox before adding"),
    (OPENED, {"type": "add", "phase": "pake", "body": "aa", "id": {"k": "\x00"}},
     {"type": "list"}, ""),
    (OPENED, {"type": "add", "phase": "pake", "body": "aa", "id": ["\udc00"]},
     {"type": "list"}, ""),
    (OPENED, {"type": "add", "phase": "pa\x00ke", "body": "aa"}, {"type": "list"}, ""),
    (OPENED, {"type": "add", "phase": "pake", "body": "a\ud800a"}, {"type": "list"}, ""),
    (OPENED, {"type": "close", "mood": "happy\x00"}, {"type": "close", "mood": "happy"}, ""),
]


def _unchecked(value: str, key: str, *, identifier: bool) -> str:
    return value


async def test_a_value_postgresql_refuses_is_a_client_error_beside_an_honest_pair(
    database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(validation, "_storable", _unchecked)
    results: dict[str, list[str]] = {}
    async with serving(database_url) as server, client(server) as a, client(server) as b:
        before = troubles(server)

        async def run_refused() -> None:
            results["refused"] = [await _refused_by_postgresql(server, *case)
                                  for case in UNSTORABLE_COMMANDS]

        async def run_honest() -> None:
            results["honest"] = await honest(a, b)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_refused)
                nursery.start_soon(run_honest)
        assert troubles(server) == before
        unstorable = server.metrics.registry.get_sample_value(
            f"{P}_errors_total", {"kind": "unstorable"})
    assert results["refused"] == [UNSTORABLE.error] * len(UNSTORABLE_COMMANDS)
    assert results["honest"] == [f"{i:04x}" for i in range(10)]
    assert unstorable == len(UNSTORABLE_COMMANDS)


async def _refused_by_postgresql(
    server: MailboxServer, stage: list[dict[str, Any]], msg: dict[str, Any],
    follow_up: dict[str, Any], follow_up_error: str,
) -> str:
    """On a connection of its own: the stage, then `msg`, whose error text is returned, then
    `follow_up`, whose error (none: "") shows that the refused command changed nothing."""
    async with client(server) as c:
        for step in stage:
            assert not [f for f in await answers(c, step) if f["type"] == "error"]
        frames = await answers(c, msg)
        assert_clean(msg, frames)
        assert [f["type"] for f in frames] == ["error"], frames
        after = await answers(c, follow_up)
        assert_clean(follow_up, after)
        assert [f.get("error", "") for f in after if f["type"] == "error"] == (
            [follow_up_error] if follow_up_error else []), after
        await c.barrier()
        return str(frames[0]["error"])
