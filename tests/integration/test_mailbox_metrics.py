"""The mailbox's /metrics, /healthz and /readyz over real sockets and PostgreSQL."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from wormhole_mailbox.server import MailboxServer

from tests.integration.mailbox_helpers import add, serving
from tests.support.mailbox import Client, client
from tests.support.metrics import check_metrics, http_get, promtool, scrape
from tests.support.postgres import free_port

P = "wormhole_mailbox"


async def pair(a: Client, b: Client) -> str:
    await a.bind("aaaa")
    name = (await a.command(type="allocate"))["nameplate"]
    mailbox = (await a.command(type="claim", nameplate=name))["mailbox"]
    await a.ack_only(type="open", mailbox=mailbox)
    await b.bind("bbbb")
    await b.command(type="claim", nameplate=name)
    await b.ack_only(type="open", mailbox=mailbox)
    return name


async def transfer(server: MailboxServer) -> None:
    """A whole happy exchange: pair, one message each way, release, close happy."""
    async with client(server) as a, client(server) as b:
        await pair(a, b)
        await add(a, "pake", "aa")
        await b.recv_type("message")
        await add(b, "pake", "bb")
        await a.recv_type("message")
        for c in (a, b):
            assert (await c.command(type="release"))["type"] == "released"
            assert (await c.command(type="close", mood="happy"))["type"] == "closed"


def port(server: MailboxServer) -> int:
    assert server.endpoint.port is not None
    return server.endpoint.port


async def test_a_transfer_moves_its_metrics(database_url: str) -> None:
    async with serving(database_url, metrics_port=free_port()) as server:
        await transfer(server)
        page = await scrape(port(server))
    assert page.value(f"{P}_connections_total", kind="websocket") == 2
    assert page.value(f"{P}_commands_total", type="add") == 2
    assert page.value(f"{P}_commands_total", type="bind") == 2
    assert page.value(f"{P}_messages_relayed_total") == 2
    assert page.value(f"{P}_nameplates_total", result="happy") == 1
    assert page.value(f"{P}_mailboxes_total", result="happy") == 1
    assert page.value(f"{P}_client_moods_total", mood="happy") == 2
    assert page.value(f"{P}_pairing_seconds_count") == 1
    assert page.value(f"{P}_channel_lifetime_seconds_count") == 1
    assert page.value(f"{P}_database_query_duration_seconds_count") > 0
    assert page.value(f"{P}_database_errors_total") == 0
    assert page.value(f"{P}_nameplates_in_use") == 0
    assert page.value(f"{P}_connections_open") == 0
    assert page.value(f"{P}_build_info", version="0.1.0") == 1


async def test_bad_frames_count_as_errors_by_kind_and_unknown_moods_are_other(
    database_url: str,
) -> None:
    async with serving(database_url, metrics_port=free_port()) as server:
        async with client(server) as a, client(server) as b:
            await a.send_raw("{not json")
            assert (await a.recv())["error"] == "message is not valid JSON"
            await a.send(type="allocate", id="2")
            assert (await a.recv_type("error"))["error"] == "must bind first"
            await pair(a, b)
            await a.send(type="fly", id="1")
            assert (await a.recv_type("error"))["error"] == "unknown type"
            page = await scrape(port(server))
            assert page.value(f"{P}_connections_open") == 2
            assert page.value(f"{P}_nameplates_in_use") == 1
            assert page.value(f"{P}_mailboxes_in_use") == 1
            await a.command(type="close", mood="my-secret-side-abc")
        page = await scrape(port(server))
    assert page.value(f"{P}_errors_total", kind="malformed") == 1
    assert page.value(f"{P}_errors_total", kind="unknown_type") == 1
    assert page.value(f"{P}_errors_total", kind="unbound") == 1
    assert page.value(f"{P}_commands_total", type="invalid") == 1
    assert page.value(f"{P}_commands_total", type="other") == 1
    assert page.value(f"{P}_client_moods_total", mood="other") == 1
    assert "my-secret-side" not in page.text


async def test_a_crowded_nameplate_counts_as_crowded(database_url: str) -> None:
    async with serving(database_url, metrics_port=free_port()) as server:
        async with client(server) as a, client(server) as b, client(server) as c:
            name = await pair(a, b)
            await c.bind("cccc")
            assert (await c.command(type="claim", nameplate=name))["error"] == "crowded"
            for x in (a, b):
                await x.command(type="release")
                await x.command(type="close", mood="happy")
        page = await scrape(port(server))
    assert page.value(f"{P}_errors_total", kind="crowded") == 1
    assert page.value(f"{P}_nameplates_total", result="crowded") == 1
    assert page.value(f"{P}_mailboxes_total", result="crowded") == 1


async def test_pruning_counts_runs_and_what_it_removed(database_url: str) -> None:
    async with serving(database_url, metrics_port=free_port()) as server:
        async with client(server) as a:
            await a.bind("aaaa")
            name = (await a.command(type="allocate"))["nameplate"]
            await a.command(type="claim", nameplate=name)
        before = await scrape(port(server))
        await server.pruner.prune_once(time.time() + 3600)
        page = await scrape(port(server))
    assert page.value(f"{P}_prune_runs_total", outcome="ran") == (
        before.value(f"{P}_prune_runs_total", outcome="ran") + 1)
    assert page.value(f"{P}_pruned_total", kind="mailboxes") == 1
    assert page.value(f"{P}_pruned_total", kind="nameplates") == 1
    assert page.value(f"{P}_mailboxes_total", result="pruney") == 1
    assert page.value(f"{P}_nameplates_total", result="pruney") == 1


async def test_healthz_and_readyz_and_readyz_fails_without_the_database(
    database_url: str,
) -> None:
    async with serving(database_url, metrics_port=free_port()) as server:
        assert await http_get(port(server), "/healthz") == (200, b"ok\n")
        assert await http_get(port(server), "/readyz") == (200, b"ready\n")
        assert (await http_get(port(server), "/nothing"))[0] == 404
        params = conninfo_to_dict(database_url)
        name = params.pop("dbname")
        with psycopg.connect(make_conninfo(**params, dbname="postgres"),
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        assert await http_get(port(server), "/readyz") == (503, b"not ready\n")
        assert (await http_get(port(server), "/healthz"))[0] == 200
        page = await scrape(port(server))
        assert page.value(f"{P}_database_errors_total") >= 1


@pytest.mark.skipif(promtool() is None, reason="promtool (Debian prometheus) is not installed")
async def test_every_metric_passes_promtool_check_metrics(database_url: str) -> None:
    async with serving(database_url, metrics_port=free_port()) as server:
        await transfer(server)
        page = await scrape(port(server))
    result = check_metrics(page.text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result
