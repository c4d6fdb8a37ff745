"""A mailbox at its limits (1000 messages, nearly 4 MiB) is replayed completely, in order, to
4 openers at once, page by page from the database; an `add` past a limit is refused and the
connection still works."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

import trio

from tests.integration.mailbox_helpers import serving
from tests.support.mailbox import Client, client

MESSAGES = 1000  # MAILBOX_MAILBOX_MAX_MESSAGES's default
BODY_CHARS = (4 << 20) // MESSAGES  # 4194: all bodies together just under 4 MiB
FULL = "mailbox is full"


def body(i: int) -> str:
    return f"{i:06d}".ljust(BODY_CHARS, "f")


async def fill(c: Client) -> None:
    """Send every add at once (pipelined), then read each ack and echo."""
    async with trio.open_nursery() as nursery:
        async def send_all() -> None:
            for i in range(MESSAGES):
                await c.send(type="add", phase=str(i), body=body(i), id=i)
        nursery.start_soon(send_all)
        for i in range(MESSAGES):
            assert await c.recv() == {"type": "ack", "id": i}
            echo = await c.recv()
            assert (echo["type"], echo["phase"]) == ("message", str(i)), echo


async def replay(c: Client, name: str, side: str, seen: dict[str, list[str]]) -> None:
    """Open as `side` (a mailbox has two sides, each may open it from many connections)."""
    await c.bind(side)
    await c.ack_only(type="open", mailbox="full")
    phases = seen[name] = []
    for i in range(MESSAGES):
        msg = await c.recv()
        assert (msg["type"], msg.get("body")) == ("message", body(i)), (name, i, msg)
        phases.append(msg["phase"])
    await c.barrier()  # nothing more: the replay ended where the mailbox does


async def test_a_full_mailbox_is_replayed_completely_to_four_openers_at_once(
    database_url: str,
) -> None:
    async with serving(database_url) as server:
        with trio.fail_after(120):  # a bound on the whole exchange, not a figure under test
            async with client(server) as writer:
                await writer.bind("writer")
                await writer.ack_only(type="open", mailbox="full")
                await fill(writer)
                for extra in [{"body": "x"}, {"body": "x" * 200_000}]:
                    refused = await writer.command(type="add", phase="late", **extra)
                    assert (refused["type"], refused["error"]) == ("error", FULL)
                await writer.barrier()  # the connection still works
            seen: dict[str, list[str]] = {}
            async with AsyncExitStack() as held:
                readers = [await held.enter_async_context(client(server)) for _ in range(4)]
                async with trio.open_nursery() as nursery:
                    for n, c in enumerate(readers):
                        nursery.start_soon(replay, c, f"reader{n}", ["writer", "peer"][n % 2], seen)
    assert sorted(seen) == [f"reader{n}" for n in range(4)]
    for phases in seen.values():
        assert phases == [str(i) for i in range(MESSAGES)]
    errors = server.metrics.registry.get_sample_value(
        "wormhole_mailbox_errors_total", {"kind": "full"})
    assert errors == 2


async def test_the_byte_limit_refuses_an_add_and_the_connection_still_works(
    database_url: str,
) -> None:
    async with serving(database_url, mailbox_max_bytes=1000) as server, client(server) as c:
        await c.bind("side")
        await c.ack_only(type="open", mailbox="mb")
        await c.send(type="add", phase="0", body="a" * 1000, id=1)
        assert await c.recv() == {"type": "ack", "id": 1}
        assert (await c.recv())["body"] == "a" * 1000
        reply = await c.command(type="add", phase="1", body="b")
        assert reply == {"type": "error", "error": FULL,
                         "orig": {"type": "add", "phase": "1", "body": "b", "id": "c0de"}}
        assert json.loads(json.dumps(await c.command(type="list"))) == {
            "type": "nameplates", "nameplates": []}
