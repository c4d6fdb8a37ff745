"""Hostile values next to an honest pair: each gets its protocol error (the hostile client is
paced once past its error budget, never dropped), and the honest pair's exchange is complete
and error-free meanwhile."""

from __future__ import annotations

import json

import trio

from tests.integration.mailbox_helpers import serving
from tests.support.mailbox import Client, client

HOSTILE: list[tuple[str, str]] = [
    ('{"type": "ping", "ping": 1e400}', "'ping' contains a number out of range"),
    ('{"type": "ping", "ping": ' + "[" * 900 + "]" * 900 + "}",
     "message is nested too deeply (at most 32 levels)"),
    (json.dumps({"type": "bind", "appid": "a" * 100_000, "side": "s"}),
     "'appid' is too long (at most 256 characters)"),
    ('{"type": "bind", "appid": "app\\u0000", "side": "s"}',
     "'appid' must not contain control characters"),
    ("{not json", "message is not valid JSON"),
]
ROUNDS = 6  # 30 errors: past the budget of 20 at once


async def hostile(c: Client) -> list[str]:
    errors = []
    for _ in range(ROUNDS):
        for raw, _text in HOSTILE:
            await c.send_raw(raw)
            errors.append((await c.recv_type("error"))["error"])
    return errors


async def honest(a: Client, b: Client) -> list[str]:
    await a.bind("side-a")
    await b.bind("side-b")
    name = (await a.command(type="allocate"))["nameplate"]
    mailbox = (await a.command(type="claim", nameplate=name))["mailbox"]
    assert (await b.command(type="claim", nameplate=name))["mailbox"] == mailbox
    for c in (a, b):
        await c.ack_only(type="open", mailbox=mailbox)
    bodies = []
    for i in range(10):
        sender, receiver = (a, b) if i % 2 == 0 else (b, a)
        await sender.ack_only(type="add", phase=str(i), body=f"{i:04x}", id=str(i))
        assert (await sender.recv_type("message"))["body"] == f"{i:04x}"
        bodies.append((await receiver.recv_type("message"))["body"])
    for c in (a, b):
        assert (await c.command(type="close", mood="happy")) == {"type": "closed"}
    return bodies


async def test_hostile_values_get_errors_while_an_honest_pair_completes(
    database_url: str,
) -> None:
    results: dict[str, list[str]] = {}
    async with serving(database_url) as server, client(server) as bad, client(server) as a, \
            client(server) as b:
        async def run_hostile() -> None:
            results["hostile"] = await hostile(bad)

        async def run_honest() -> None:
            results["honest"] = await honest(a, b)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_hostile)
            nursery.start_soon(run_honest)
        assert not [m for c in (a, b) for m in c.received if m["type"] == "error"]
        await bad.barrier()  # paced, not dropped
    assert results["honest"] == [f"{i:04x}" for i in range(10)]
    assert results["hostile"] == [text for _raw, text in HOSTILE] * ROUNDS
