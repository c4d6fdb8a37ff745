"""Limits and quotas of the client's address on a real mailbox over real sockets: a flood of
connections from one address is refused while another address is served; allocations past
the rate and nameplates past the quota are refused with the exact text, and the connection
still works."""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio
from wormhole_mailbox.server import MailboxServer

from tests.integration.mailbox_helpers import serving
from tests.support.mailbox import client

UPGRADE = (b"GET /v1 HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
REFUSALS = "wormhole_mailbox_refusals_total"


async def upgrade_answer(server: MailboxServer, source: str, header: bytes = b"") -> bytes:
    """The whole answer to an upgrade request from `source`, up to the server's close."""
    assert server.port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", server.port, local_address=source)
    async with stream:
        await stream.send_all(UPGRADE[:-2] + header + b"\r\n")
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
    return answer


def refusals(server: MailboxServer, reason: str) -> float:
    return server.metrics.registry.get_sample_value(REFUSALS, {"reason": reason}) or 0.0


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def service_unavailable(text: str) -> tuple[int, bytes]:
    return 503, text.encode() + b"\n"


async def test_a_flood_from_one_address_is_refused_while_another_is_served(
    database_url: str,
) -> None:
    async with serving(database_url, max_connections_per_ip=3) as server, AsyncExitStack() as held:
        flood = [await held.enter_async_context(client(server, "127.0.0.2")) for _ in range(3)]
        for _ in range(10):
            answer = await upgrade_answer(server, "127.0.0.2")
            assert status_and_body(answer) == service_unavailable(
                "too many connections from your address; try again later")
        assert refusals(server, "connections_per_address") == 10
        async with client(server, "127.0.0.1") as other:
            await other.barrier()
            await other.bind("other")
        for c in flood:  # the admitted ones are still served
            await c.barrier()
    assert refusals(server, "connections_total") == 0


async def test_behind_a_trusted_proxy_the_address_it_reports_is_limited(
    database_url: str,
) -> None:
    async with serving(database_url, max_connections_per_ip=1,
                       trusted_proxies="127.0.0.1/32") as server:
        async with client(server, headers=[(b"X-Real-IP", b"203.0.113.5")]) as first:
            answer = await upgrade_answer(server, "127.0.0.1", b"X-Real-IP: 203.0.113.5\r\n")
            assert status_and_body(answer) == service_unavailable(
                "too many connections from your address; try again later")
            async with client(server, headers=[(b"X-Real-IP", b"203.0.113.6")]) as other:
                await other.barrier()
            await first.barrier()
        assert refusals(server, "connections_per_address") == 1


async def test_past_the_total_no_address_gets_in_and_a_closed_one_makes_room(
    database_url: str,
) -> None:
    async with serving(database_url, max_connections=2) as server:
        async with client(server, "127.0.0.2") as first, client(server, "127.0.0.3"):
            answer = await upgrade_answer(server, "127.0.0.4")
            assert status_and_body(answer) == service_unavailable(
                "too many connections; try again later")
            await first.barrier()
        assert refusals(server, "connections_total") == 1
        async with client(server, "127.0.0.4") as late:
            await late.barrier()


async def test_allocations_past_the_rate_are_refused_and_the_connection_still_works(
    database_url: str,
) -> None:
    async with serving(database_url, allocations_per_minute=2) as server, \
            AsyncExitStack() as held:
        clients = [await held.enter_async_context(client(server)) for _ in range(3)]
        for i, c in enumerate(clients):
            await c.bind(f"side{i}")
        for c in clients[:2]:
            assert (await c.command(type="allocate"))["type"] == "allocated"
        assert await clients[2].command(type="allocate") == {
            "type": "error",
            "error": "too many allocations from your address; try again in a minute",
            "orig": {"type": "allocate", "id": "c0de"}}
        assert refusals(server, "allocations_rate") == 1
        last = clients[2]
        await last.barrier()
        assert (await last.command(type="claim", nameplate="99"))["type"] == "claimed"


async def test_nameplates_held_past_the_quota_are_refused_until_one_is_released(
    database_url: str,
) -> None:
    async with serving(database_url, nameplates_per_ip=2) as server, AsyncExitStack() as held:
        clients = [await held.enter_async_context(client(server)) for _ in range(3)]
        for i, c in enumerate(clients):
            await c.bind(f"side{i}")
        for c, name in zip(clients, ["11", "12"], strict=False):
            assert (await c.command(type="claim", nameplate=name))["type"] == "claimed"
        assert await clients[2].command(type="claim", nameplate="13") == {
            "type": "error",
            "error": "too many nameplates held by your address; release some or try again later",
            "orig": {"type": "claim", "nameplate": "13", "id": "c0de"}}
        assert await clients[2].command(type="allocate") == {
            "type": "error",
            "error": "too many nameplates held by your address; release some or try again later",
            "orig": {"type": "allocate", "id": "c0de"}}
        assert refusals(server, "nameplates_held") == 2
        assert await clients[0].command(type="release") == {"type": "released"}
        assert (await clients[2].command(type="claim", nameplate="13"))["type"] == "claimed"
