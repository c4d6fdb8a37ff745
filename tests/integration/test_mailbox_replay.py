"""A mailbox at its limits (1000 messages, nearly 4 MiB) is replayed completely, in order, to
4 openers at once, page by page from the database; so is one of 1 MB messages under a raised
byte cap, a page (1 MiB) at a time; an `add` past a limit is refused and the connection still
works."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from functools import partial

import pytest
import trio
from wormhole_common.wsconnection import WebSocket
from wormhole_mailbox.outbound import acked_bytes

from tests.integration.mailbox_helpers import add, serving
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


async def replay(c: Client, name: str, side: str, seen: dict[str, list[str]], *,
                 mailbox: str = "full", count: int = MESSAGES,
                 body: Callable[[int], str] = body) -> None:
    """Open as `side` (a mailbox has two sides, each may open it from many connections)."""
    await c.bind(side)
    await c.ack_only(type="open", mailbox=mailbox)
    phases = seen[name] = []
    for i in range(count):
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


BIG_MESSAGES = 30
BIG_BODY_CHARS = 1_000_000  # a frame of about 1 MB: the most a client may send


def big_body(i: int) -> str:
    return f"{i:06d}".ljust(BIG_BODY_CHARS, "e")


async def test_a_mailbox_of_big_messages_is_replayed_completely_to_three_openers(
    database_url: str,
) -> None:
    """Pages are bounded in octets (1 MiB: one message each here), so every opener gets every
    message, in order, and none is closed as too slow while it reads."""
    async with serving(database_url, mailbox_max_bytes=200_000_000) as server:
        with trio.fail_after(120):  # a bound on the whole exchange, not a figure under test
            async with client(server) as writer:
                await writer.bind("writer")
                await writer.ack_only(type="open", mailbox="big")
                for i in range(BIG_MESSAGES):
                    await add(writer, str(i), big_body(i), msg_id=i)
            seen: dict[str, list[str]] = {}
            async with AsyncExitStack() as held:
                readers = [await held.enter_async_context(client(server)) for _ in range(3)]
                async with trio.open_nursery() as nursery:
                    for n, c in enumerate(readers):
                        nursery.start_soon(partial(
                            replay, c, f"reader{n}", ["writer", "peer"][n % 2], seen,
                            mailbox="big", count=BIG_MESSAGES, body=big_body))
    assert sorted(seen) == ["reader0", "reader1", "reader2"]
    for phases in seen.values():
        assert phases == [str(i) for i in range(BIG_MESSAGES)]
    dropped = server.metrics.registry.get_sample_value(
        "wormhole_mailbox_connections_dropped_total", {"reason": "too_slow"})
    assert not dropped


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="Linux's TCP_INFO")
async def test_the_count_of_acknowledged_bytes_moves_on_as_a_client_receives() -> None:
    """What tells the too-slow clock that a client is reading a frame whose write has not
    finished: its TCP acknowledging bytes."""
    with trio.fail_after(10):
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listener.socket.getsockname()[1]
        async with await trio.open_tcp_stream("127.0.0.1", port) as peer:
            server = await listener.accept()
            ws = WebSocket(server, 1 << 20)
            before = acked_bytes(ws)
            assert before is not None
            await server.send_all(b"x" * 100_000)
            received = 0
            while received < 100_000:
                received += len(await peer.receive_some(1 << 16))
            while (acked_bytes(ws) or 0) < before + 100_000:  # noqa: ASYNC110 - a kernel count
                await trio.sleep(0.01)
            await server.aclose()
            assert acked_bytes(ws) is None  # closed: no count
        await listener.aclose()
