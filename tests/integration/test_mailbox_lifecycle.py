"""Usage records, pruning, persistence across restarts, replay under load, hashcash
(docs/mailbox-protocol.md §5.3, §5.9, §7, §8)."""

from __future__ import annotations

import time
from typing import Any

import trio
from trio_websocket import ConnectionClosed
from wormhole_mailbox.pruning import PruneReport
from wormhole_mailbox.server import MailboxServer

from tests.integration.mailbox_helpers import (
    add,
    all_state_gone,
    count,
    mailbox_results,
    nameplate_results,
    query,
    serving,
)
from tests.support.mailbox import Client, client
from tests.support.stamps import mint_stamp

# -- usage records -----------------------------------------------------------------------------


async def _transfer(server: MailboxServer, name: str, moods: tuple[str | None, str | None],
                    release: bool = True) -> None:
    async with client(server) as a, client(server) as b:
        await a.bind("a" + name)
        mailbox = (await a.command(type="claim", nameplate=name))["mailbox"]
        await a.ack_only(type="open", mailbox=mailbox)
        await b.bind("b" + name)
        await b.command(type="claim", nameplate=name)
        await b.ack_only(type="open", mailbox=mailbox)
        if release:
            assert await a.command(type="release") == {"type": "released"}
            assert await b.command(type="release") == {"type": "released"}
        assert await a.command(type="close", mood=moods[0]) == {"type": "closed"}
        assert await b.command(type="close", mood=moods[1]) == {"type": "closed"}


async def test_usage_mailbox_results(database_url: str) -> None:
    async with serving(database_url) as server:
        await _transfer(server, "1", ("happy", "happy"))
        await _transfer(server, "2", ("happy", "lonely"))
        await _transfer(server, "3", ("scary", "happy"))
        await _transfer(server, "4", ("errory", "lonely"))
        await _transfer(server, "5", (None, "whatever"))
        async with client(server) as c:  # a lonely standalone mailbox
            await c.bind("alone")
            await c.ack_only(type="open", mailbox="solo")
            assert await c.command(type="close", mood="happy") == {"type": "closed"}
    assert await mailbox_results(database_url) == [
        "happy", "lonely", "scary", "errory", "happy", "lonely"]
    assert await nameplate_results(database_url) == ["happy"] * 5
    rows = await query(database_url, "SELECT app_id, for_nameplate FROM usage_mailboxes"
                                     " ORDER BY id")
    assert rows == [("app", True)] * 5 + [("app", False)]
    assert await all_state_gone(database_url)


async def test_usage_times(database_url: str) -> None:
    async with serving(database_url) as server:
        before = time.time()
        await _transfer(server, "6", ("happy", "happy"))
        after = time.time()
    rows = await query(database_url,
                       "SELECT started, waiting_time, total_time FROM usage_mailboxes")
    ((started, waiting, total),) = rows
    assert before <= started <= after
    assert 0 <= waiting <= total <= after - before
    rows = await query(database_url,
                       "SELECT started, waiting_time, total_time FROM usage_nameplates")
    ((started, waiting, total),) = rows
    assert before <= started <= after and 0 <= waiting <= total <= after - before


async def test_lonely_nameplate(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as c:
        await c.bind("side")
        name = (await c.command(type="allocate"))["nameplate"]
        assert await c.command(type="release", nameplate=name) == {"type": "released"}
    rows = await query(database_url, "SELECT waiting_time, result FROM usage_nameplates")
    assert rows == [(None, "lonely")]


async def test_usage_is_blurred(database_url: str) -> None:
    async with serving(database_url, blur_usage_seconds=3600) as server:
        await _transfer(server, "1", ("happy", "happy"))
        async with client(server) as c:
            await c.bind("side")
    for table, column in [("usage_mailboxes", "started"), ("usage_nameplates", "started"),
                          ("usage_client_versions", "connect_time")]:
        for (value,) in await query(database_url, f"SELECT {column} FROM {table}"):
            assert value % 3600 == 0, (table, value)
    rows = await query(database_url, "SELECT total_time FROM usage_mailboxes")
    assert rows[0][0] < 3600  # durations are not blurred


async def test_client_versions(database_url: str) -> None:
    async with serving(database_url) as server:
        async with client(server) as c:
            await c.ack_only(type="bind", appid="app", side="s1",
                             client_version=["python", "0.24.0", "extra"])
        async with client(server) as c:
            await c.ack_only(type="bind", appid="app", side="s2")
        async with client(server) as c:  # reconnect: another row, consumers de-duplicate
            await c.ack_only(type="bind", appid="app", side="s1",
                             client_version=["python", "0.24.0"])
    rows = await query(database_url, "SELECT app_id, side, implementation, version"
                                     " FROM usage_client_versions ORDER BY id")
    assert rows == [("app", "s1", "python", "0.24.0"), ("app", "s2", None, None),
                    ("app", "s1", "python", "0.24.0")]


# -- pruning -----------------------------------------------------------------------------------


async def prune(server: MailboxServer, now: float) -> PruneReport:
    """One pruning run at `now`; waits out the server's own start-up run holding the lock."""
    while True:
        report: PruneReport = await server.pruner.prune_once(now)
        if report.ran:
            return report
        await trio.sleep(0.01)


async def test_prune_removes_old_channels_and_keeps_subscribed_ones(database_url: str) -> None:
    async with serving(database_url) as server:
        async with client(server) as old_a, client(server) as old_b:
            await old_a.bind("aaaa")
            stale = (await old_a.command(type="claim", nameplate="1"))["mailbox"]
            await old_a.ack_only(type="open", mailbox=stale)
            await add(old_a, "pake", "aa")
            await old_b.bind("bbbb")
            await old_b.command(type="claim", nameplate="1")
        async with client(server) as lonely:  # claimed, never opened, disconnected
            await lonely.bind("cccc")
            await lonely.command(type="claim", nameplate="2")
        async with client(server) as crowd_a, client(server) as crowd_b, \
                client(server) as crowd_c:
            for c, side in ((crowd_a, "x"), (crowd_b, "y"), (crowd_c, "z")):
                await c.bind(side)
                await c.command(type="claim", nameplate="3")
        async with client(server) as keeper:  # still connected and subscribed
            await keeper.bind("kkkk")
            alive = (await keeper.command(type="claim", nameplate="4"))["mailbox"]
            await keeper.ack_only(type="open", mailbox=alive)

            now = time.time() + 3600
            report = await prune(server, now)
            assert report.ran and report.mailboxes == 3 and report.nameplates == 3
            assert report.touched == 1

            assert await query(database_url, "SELECT name FROM nameplates") == [("4",)]
            assert await query(database_url, "SELECT id, updated FROM mailboxes") == [
                (alive, now)]
            assert await count(database_url, "messages") == 0
            assert await count(database_url, "mailbox_sides") == 1
            assert await count(database_url, "nameplate_sides") == 1
            assert sorted(await mailbox_results(database_url)) == [
                "crowded", "pruney", "pruney"]
            assert sorted(await nameplate_results(database_url)) == [
                "crowded", "pruney", "pruney"]
            rows = await query(database_url, "SELECT server_id, updated, connections_websocket"
                                             " FROM usage_current WHERE updated = %s", now)
            assert rows == [(server.server_id, now, 1)]

            # The kept channel still works after pruning.
            echo = await add(keeper, "later", "01")
            assert echo["body"] == "01"
        # Once nobody is subscribed, a later run retires it too.
        await prune(server, now + 3600)
        assert await all_state_gone(database_url)
        rows = await query(database_url, "SELECT connections_websocket FROM usage_current")
        assert rows == [(0,)]


async def test_prune_keeps_recent_channels(database_url: str) -> None:
    async with serving(database_url, channel_expiry_seconds=600) as server:
        async with client(server) as c:
            await c.bind("side")
            await c.command(type="claim", nameplate="1")
        report = await prune(server, time.time() + 300)
        assert report.mailboxes == 0
        assert await count(database_url, "nameplates") == 1
        report = await prune(server, time.time() + 601)
        assert report.mailboxes == 1
        assert await count(database_url, "nameplates") == 0


async def test_prune_of_an_empty_database(database_url: str) -> None:
    async with serving(database_url) as server:
        report = await prune(server, time.time())
        assert report.ran and (report.mailboxes, report.nameplates) == (0, 0)


# -- persistence -------------------------------------------------------------------------------


async def test_state_survives_a_server_restart(database_url: str) -> None:
    async with serving(database_url) as server, client(server) as a:
        await a.bind("aaaa")
        name = (await a.command(type="allocate"))["nameplate"]
        mailbox = (await a.command(type="claim", nameplate=name))["mailbox"]
        await a.ack_only(type="open", mailbox=mailbox)
        echo = await add(a, "pake", "aa", "0001")
    async with serving(database_url) as server, client(server) as a2:
        await a2.bind("aaaa")
        assert await a2.command(type="claim", nameplate=name) == {
            "type": "claimed", "mailbox": mailbox}
        await a2.ack_only(type="open", mailbox=mailbox)
        assert await a2.recv() == echo
        async with client(server) as b:
            await b.bind("bbbb")
            assert (await b.command(type="claim", nameplate=name))["mailbox"] == mailbox
            await b.ack_only(type="open", mailbox=mailbox)
            assert await b.recv() == echo
            reply = await add(b, "pake", "bb", "0002")
            assert await a2.recv() == reply
            await a2.command(type="release")
            await b.command(type="release")
            await a2.command(type="close", mood="happy")
            await b.command(type="close", mood="happy")
    assert await mailbox_results(database_url) == ["happy"]
    assert await nameplate_results(database_url) == ["happy"]


# -- replay under concurrent adds --------------------------------------------------------------


async def _collect(c: Client, want: int, into: list[dict[str, Any]]) -> None:
    while len(into) < want:
        msg = await c.recv()
        if msg["type"] == "message":
            into.append(msg)


async def test_replay_never_loses_or_duplicates_concurrent_adds(database_url: str) -> None:
    total = 300
    async with serving(database_url) as server, client(server) as writer:
        await writer.bind("wwww")
        await writer.ack_only(type="open", mailbox="busy")
        readers: list[list[dict[str, Any]]] = []

        async def write() -> None:
            for i in range(total):
                await writer.send(type="add", phase=str(i), body=f"{i:04x}", id=i)
                if i % 25 == 0:
                    await trio.sleep(0.005)

        async def read_from(start_after: int, got: list[dict[str, Any]]) -> None:
            await trio.sleep(start_after * 0.01)
            async with client(server) as reader:
                await reader.bind("rrrr")  # the same side on every connection: no crowding
                await reader.ack_only(type="open", mailbox="busy")
                await _collect(reader, total, got)
                await reader.barrier()

        echoes: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            for start in (0, 3, 6, 9, 12):
                got: list[dict[str, Any]] = []
                readers.append(got)
                nursery.start_soon(read_from, start, got)
            nursery.start_soon(_collect, writer, total, echoes)
        assert [m["phase"] for m in echoes] == [str(i) for i in range(total)]
        for got in readers:
            assert got == echoes  # in order, none missing, none twice, identical to live copies
        assert await count(database_url, "messages") == total


# -- hashcash permissions ----------------------------------------------------------------------


def _resource(c: Client) -> tuple[int, str]:
    required = c.received[0]["welcome"]["permission-required"]
    assert set(required) == {"hashcash"}
    assert set(required["hashcash"]) == {"bits", "resource"}
    return required["hashcash"]["bits"], required["hashcash"]["resource"]


async def _expect_closed_by_server(c: Client, code: int) -> None:
    try:
        with trio.fail_after(5):
            await c.ws.get_message()
    except ConnectionClosed as exc:
        assert exc.reason is not None and exc.reason.code == code
    else:
        raise AssertionError("the connection should have been closed")


async def test_hashcash_admission(database_url: str) -> None:
    async with serving(database_url, permissions="hashcash", hashcash_bits=8) as server:
        async with client(server) as c:
            bits, resource = _resource(c)
            assert bits == 8
            stamp = mint_stamp(resource, bits, time.time())
            await c.ack_only(type="submit-permissions", method="hashcash", stamp=stamp)
            await c.bind("side")
            assert (await c.command(type="allocate"))["type"] == "allocated"
        async with client(server) as c:  # Rust's singular spelling
            bits, resource2 = _resource(c)
            assert resource2 != resource
            # The previous connection's stamp is for another resource.
            reply = await c.command(type="submit-permission", method="hashcash", stamp=stamp)
            assert reply["error"].startswith("permission denied")
            stamp2 = mint_stamp(resource2, bits, time.time())
            await c.ack_only(type="submit-permission", method="hashcash", stamp=stamp2)
            await c.bind("side")
            assert (await c.command(type="ping", ping=1))["type"] == "pong"


async def test_bind_without_permission_is_denied_and_closed(database_url: str) -> None:
    async with serving(database_url, permissions="hashcash", hashcash_bits=8) as server:
        async with client(server) as c:
            _resource(c)
            await c.send(type="bind", appid="app", side="side", id="b")
            assert await c.recv() == {"type": "ack", "id": "b"}
            reply = await c.recv()
            assert reply["error"] == "permission denied"
            await _expect_closed_by_server(c, 1008)
        assert await count(database_url, "usage_client_versions") == 0


async def test_bad_stamp_then_bind_is_denied(database_url: str) -> None:
    async with serving(database_url, permissions="hashcash", hashcash_bits=8) as server, \
            client(server) as c:
        bits, resource = _resource(c)
        weak = mint_stamp(resource, bits - 4, time.time())
        reply = await c.command(type="submit-permissions", method="hashcash", stamp=weak)
        assert reply["error"].startswith("permission denied")
        await c.send(type="bind", appid="app", side="side")
        await c.recv()
        assert (await c.recv())["error"] == "permission denied"
        await _expect_closed_by_server(c, 1008)
