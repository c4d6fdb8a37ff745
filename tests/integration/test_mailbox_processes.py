"""Several mailbox servers share one database: each side may be on a different one."""

from __future__ import annotations

import random
import time

import pytest
import trio

from tests.integration.mailbox_helpers import add
from tests.support.mailbox import Client, client, running_mailbox

LIMIT = 20


async def test_sides_on_different_servers_complete_a_flow(database_url: str) -> None:
    with trio.fail_after(LIMIT):
        async with (
            running_mailbox(database_url) as one,
            running_mailbox(database_url) as two,
            client(one) as a,
            client(two) as b,
        ):
            await a.bind("aaaa")
            name = (await a.command(type="allocate"))["nameplate"]
            mailbox = (await a.command(type="claim", nameplate=name))["mailbox"]
            await a.ack_only(type="open", mailbox=mailbox)
            await a.ack_only(type="add", phase="pake", body="a1", id="0001")
            assert (await a.recv())["body"] == "a1"
            await b.bind("bbbb")
            assert (await b.command(type="claim", nameplate=name))["mailbox"] == mailbox
            await b.ack_only(type="open", mailbox=mailbox)
            replayed = await b.recv()
            assert replayed["body"] == "a1"
            # live, both ways, across servers, with the same server_rx a replay gives
            await b.ack_only(type="add", phase="pake", body="b1", id="0002")
            own = await b.recv()
            seen_by_a = await a.recv_type("message")
            assert seen_by_a == own
            await a.ack_only(type="add", phase="version", body="a2", id="0003")
            await a.recv()
            assert (await b.recv_type("message"))["body"] == "a2"
            assert (await a.command(type="release", nameplate=name))["type"] == "released"
            assert (await b.command(type="release", nameplate=name))["type"] == "released"
            for c in (a, b):
                closed = await c.command(type="close", mailbox=mailbox, mood="happy")
                assert closed["type"] == "closed"


async def collect(c: Client, count: int) -> list[str]:
    bodies = []
    while len(bodies) < count:
        msg = await c.recv_type("message")
        bodies.append(msg["body"])
    return bodies


async def test_many_messages_across_servers_arrive_once_in_order(database_url: str) -> None:
    count = 60
    with trio.fail_after(LIMIT):
        async with (
            running_mailbox(database_url) as one,
            running_mailbox(database_url) as two,
            client(one) as a,
            client(two) as b,
        ):
            await a.bind("aaaa")
            await b.bind("bbbb")
            await a.ack_only(type="open", mailbox="standalone")
            await b.ack_only(type="open", mailbox="standalone")
            for i in range(count):
                await a.send(type="add", phase=str(i), body=f"{i:04d}", id=f"{i:04x}")
            # a sees its own echoes, b sees them from the other server: same order, no repeats
            a_bodies = await collect(a, count)
            b_bodies = await collect(b, count)
            assert a_bodies == b_bodies == [f"{i:04d}" for i in range(count)]
            # Nothing repeated meanwhile: the next message b gets is a new last one.
            last = await add(a, "last", "last")
            assert await b.recv() == last
            await b.barrier()


@pytest.mark.parametrize("seed", range(5))
async def test_concurrent_allocations_across_servers_never_collide(
    database_url: str, seed: int
) -> None:
    rng = random.Random(seed)
    with trio.fail_after(LIMIT):
        async with running_mailbox(database_url) as one, running_mailbox(database_url) as two:
            names: list[str] = []

            async def allocate(server_index: int, n: int) -> None:
                server = (one, two)[server_index]
                async with client(server) as c:
                    await c.bind(f"side{n:04d}")
                    await trio.sleep(rng.random() * 0.01)
                    names.append((await c.command(type="allocate"))["nameplate"])

            async with trio.open_nursery() as nursery:
                for n in range(40):
                    nursery.start_soon(allocate, n % 2, n)
            assert len(names) == 40
            assert len(set(names)) == 40, sorted(names)


@pytest.mark.parametrize("seed", range(5))
async def test_concurrent_claims_across_servers_share_one_mailbox(
    database_url: str, seed: int
) -> None:
    """Two sides claim the same fresh nameplates at once through different servers."""
    rng = random.Random(seed)
    with trio.fail_after(LIMIT):
        async with running_mailbox(database_url) as one, running_mailbox(database_url) as two:
            results: dict[str, list[str]] = {}

            async def claim(server_index: int, side: str, name: str) -> None:
                async with client((one, two)[server_index]) as c:
                    await c.bind(side)
                    await trio.sleep(rng.random() * 0.01)
                    reply = await c.command(type="claim", nameplate=name)
                    assert reply["type"] == "claimed", reply
                    results.setdefault(name, []).append(reply["mailbox"])

            async with trio.open_nursery() as nursery:
                for n in range(15):
                    name = str(100 + n)
                    nursery.start_soon(claim, 0, f"a{n}", name)
                    nursery.start_soon(claim, 1, f"b{n}", name)
            assert len(results) == 15
            for name, mailboxes in results.items():
                assert len(mailboxes) == 2 and mailboxes[0] == mailboxes[1], (name, mailboxes)


async def test_pruning_on_one_server_keeps_another_servers_live_channel(database_url: str) -> None:
    """Each server keeps its own subscribed mailboxes alive; the pruner only removes the
    channel nobody is connected to."""
    with trio.fail_after(LIMIT):
        async with (
            running_mailbox(database_url, channel_expiry_seconds=600) as one,
            running_mailbox(database_url, channel_expiry_seconds=600) as two,
            client(two) as live,
            client(one) as gone,
        ):
            await live.bind("live")
            await live.ack_only(type="open", mailbox="kept")
            await gone.bind("gone")
            await gone.ack_only(type="open", mailbox="abandoned")
            await gone.ws.aclose()
            later = time.time() + 500
            await two.pruner.prune_once(later)  # two touches what it serves
            report = await one.pruner.prune_once(later + 200)  # 700 s after the abandoned one
            assert report.mailboxes == 1
            await live.ack_only(type="add", phase="pake", body="still here", id="0001")
            assert (await live.recv())["body"] == "still here"
