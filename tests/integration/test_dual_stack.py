"""Both services on their default address take IPv6 and IPv4 clients on one socket, and count
an IPv4 client reaching that socket (an IPv4-mapped address) as its IPv4 address."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.support.mailbox import Client, client_at, running_mailbox
from tests.support.processes import mailbox_process
from tests.support.transit import (
    connect,
    line,
    receive_all,
    receive_exactly,
    running_transit,
    side,
    token,
    wait_for,
    ws_connect,
)

LIMIT = 20


def your_address(c: Client) -> dict[str, object]:
    welcome = c.received[0]["welcome"]["your-address"]
    assert isinstance(welcome, dict)
    return {k: v for k, v in welcome.items() if k != "port"}


async def exchange(a: Client, b: Client) -> None:
    """A full exchange: `a` allocates and adds, `b` claims, reads it and answers, both close."""
    await a.bind("aaaa")
    name = (await a.command(type="allocate"))["nameplate"]
    mailbox = (await a.command(type="claim", nameplate=name))["mailbox"]
    await a.ack_only(type="open", mailbox=mailbox)
    await a.ack_only(type="add", phase="pake", body="aa", id="0001")
    assert (await a.recv_type("message"))["side"] == "aaaa"
    await b.bind("bbbb")
    assert (await b.command(type="claim", nameplate=name))["mailbox"] == mailbox
    await b.ack_only(type="open", mailbox=mailbox)
    assert (await b.recv_type("message"))["body"] == "aa"
    await b.ack_only(type="add", phase="pake", body="bb", id="0002")
    assert (await b.recv_type("message"))["body"] == "bb"  # its own, echoed
    assert (await a.recv_type("message"))["body"] == "bb"
    for c in (a, b):
        assert (await c.command(type="close", mailbox=mailbox, mood="happy"))["type"] == "closed"


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_mailbox_default_address_serves_ipv6_and_ipv4(
    database_url: str, tmp_path: Path, workers: str,
) -> None:
    """The console script with no MAILBOX_HOST; with workers, the supervisor's socket."""
    with mailbox_process(database_url, tmp_path, host=None, MAILBOX_WORKERS=workers) as service:
        with trio.fail_after(LIMIT):
            async with (client_at(service.port, "::1") as six,
                        client_at(service.port, "127.0.0.1") as four):
                assert your_address(six) == {"ipv6": "::1"}
                assert your_address(four) == {"ipv4": "127.0.0.1"}  # not ::ffff:127.0.0.1
                await exchange(six, four)
    assert f"mailbox listening on [::]:{service.port} (/v1)" in service.output()


async def test_mailbox_per_address_limit_counts_a_mapped_address_as_ipv4(
    database_url: str,
) -> None:
    async with running_mailbox(database_url, host="::", max_connections_per_ip=1) as server:
        assert server.port is not None
        with trio.fail_after(LIMIT):
            async with client_at(server.port, "127.0.0.1"):
                assert dict(server.limits.connections.per_key) == {"127.0.0.1": 1}
                async with client_at(server.port, "::1"):  # another address: served
                    assert dict(server.limits.connections.per_key) == {
                        "127.0.0.1": 1, "::/64": 1}


async def test_relay_default_address_pairs_an_ipv6_side_with_an_ipv4_side() -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(host="::") as server:
            tok = token()
            six = await connect(server, "::1")
            await six.send_all(line(tok, side()))
            await wait_for(lambda: server.stats.waiting_sides == 1)
            four = await connect(server, "127.0.0.1")
            await four.send_all(line(tok, side()))
            assert await receive_exactly(six, 3) == b"ok\n"
            assert await receive_exactly(four, 3) == b"ok\n"
            await six.send_all(b"from six")
            assert await receive_exactly(four, 8) == b"from six"
            await four.send_all(b"from four")
            assert await receive_exactly(six, 9) == b"from four"


async def test_relay_websocket_port_takes_both_families() -> None:
    with trio.fail_after(LIMIT):
        async with (running_transit(host="::") as server,
                    ws_connect(server, host="::1") as six):
            tok = token()
            await six.send_message(line(tok, side()))
            await wait_for(lambda: server.stats.waiting_sides == 1)
            async with ws_connect(server, host="127.0.0.1") as four:
                await four.send_message(line(tok, side()))
                assert await six.get_message() == b"ok\n"
                assert await four.get_message() == b"ok\n"
                await six.send_message(b"from six")
                assert await four.get_message() == b"from six"


async def test_relay_per_address_limit_counts_a_mapped_address_as_ipv4() -> None:
    with trio.fail_after(LIMIT):
        async with running_transit(host="::", max_connections_per_ip=1) as server:
            first = await connect(server, "127.0.0.1")
            await first.send_all(line(token(), side()))
            await wait_for(lambda: server.stats.waiting_sides == 1)
            assert dict(server.admission.per_ip) == {"127.0.0.1": 1}
            refused = await connect(server, "127.0.0.1")
            assert await receive_all(refused) == b""
            assert server.stats.refused["max_connections_per_ip"] == 1
            other = await connect(server, "::1")  # another address: served
            await other.send_all(line(token(), side()))
            await wait_for(lambda: server.stats.waiting_sides == 2)
            assert dict(server.admission.per_ip) == {"127.0.0.1": 1, "::/64": 1}
