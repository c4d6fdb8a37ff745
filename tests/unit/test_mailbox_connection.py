"""A client connection's shell over in-memory streams: a real WebSocket, a fake store.

The store is a fake that records ops (and publishes added messages to the hub, as the batcher
does at commit); everything else is the real code. `wait_all_tasks_blocked` replaces sleeps.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream
from wormhole_mailbox.batcher import StoreFailed
from wormhole_mailbox.connection import ClientHandler, Services
from wormhole_mailbox.core.addresses import PeerAddress
from wormhole_mailbox.core.hub import Hub
from wormhole_mailbox.core.ops import Add, Bind, Key, Message, Op, Open, Page, Result
from wormhole_mailbox.core.session import SessionConfig
from wormhole_mailbox.front import serve_stream
from wormhole_mailbox.metrics import MailboxMetrics

PEER = PeerAddress("192.0.2.1", 4444)


class FakeStore:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.ops: list[Op] = []
        self.failing = False
        self.seq = 0
        self.gate: trio.Event | None = None  # when set, ops wait for it
        self.stored: list[Message] = []  # what an `open` finds
        self.page_size: int | None = None  # an `open` returns at most this many
        self.pages_read = 0

    async def submit(self, op: Op) -> Result:
        self.ops.append(op)
        await trio.lowlevel.checkpoint()
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise StoreFailed("database down")
        if isinstance(op, Open):
            size = len(self.stored) if self.page_size is None else self.page_size
            return Page(self.stored[:size], more=len(self.stored) > size)
        if isinstance(op, Add):
            self.seq += 1
            message = Message(self.seq, op.side, op.phase, op.body, op.server_rx, op.msg_id)
            self.hub.publish((op.app, op.mailbox), message)
            return message
        return None

    async def pages(self, key: Key, after: int) -> AsyncGenerator[list[Message], None]:
        """`replay.pages` over `stored`, counting the pages read."""
        assert self.page_size is not None
        rest = [m for m in self.stored if m.seq > after]
        for start in range(0, len(rest) + 1, self.page_size):
            await trio.lowlevel.checkpoint()
            self.pages_read += 1
            yield rest[start:start + self.page_size]


class Harness:
    def __init__(self, nursery: trio.Nursery, config: SessionConfig, *,
                 ping_interval: float = 3600, ping_timeout: float = 3600) -> None:
        self.nursery = nursery
        self.hub = Hub()
        self.store = FakeStore(self.hub)
        self.metrics = MailboxMetrics(CollectorRegistry())
        services = Services(hub=self.hub, submit=self.store.submit, metrics=self.metrics,
                            ping_interval=ping_interval, ping_timeout=ping_timeout,
                            command_timeout=5, replay=self.store.pages, read_stall=3)
        self.handler = ClientHandler(services, config)

    async def connect(self, path: str = "/v1", *, lockstep: bool = False) -> WebSocketConnection:
        """A client; `lockstep`: the server's writes wait until the client reads them."""
        pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        client, server = pair()
        self.nursery.start_soon(serve_stream, server, PEER, self.handler, self.metrics)
        return await wrap_client_stream(self.nursery, client, "localhost", path)  # type: ignore[arg-type]

    def counted(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(f"wormhole_mailbox_{name}", labels)


@asynccontextmanager
async def harness(config: SessionConfig | None = None, **pings: float,
                  ) -> AsyncIterator[Harness]:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            h = Harness(nursery, config or SessionConfig(), **pings)
            await nursery.start(h.handler.run)
            yield h
            nursery.cancel_scope.cancel()


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    raw = await ws.get_message()
    assert isinstance(raw, str)
    frame: dict[str, Any] = json.loads(raw)
    assert isinstance(frame.pop("server_tx"), float)
    return frame


async def send(ws: WebSocketConnection, **msg: Any) -> None:
    await ws.send_message(json.dumps(msg))


async def bound(h: Harness, side: str = "s1") -> WebSocketConnection:
    ws = await h.connect()
    assert (await recv(ws))["type"] == "welcome"
    await send(ws, type="bind", appid="app", side=side, id=1)
    assert await recv(ws) == {"type": "ack", "id": 1}
    return ws


async def test_welcome_names_the_peer_and_ping_is_answered_in_order() -> None:
    async with harness(SessionConfig(motd="hi")) as h:
        ws = await h.connect()
        assert await recv(ws) == {"type": "welcome", "welcome": {
            "motd": "hi", "your-address": {"port": 4444, "ipv4": "192.0.2.1"}}}
        await send(ws, type="ping", ping=5, id="x")
        assert await recv(ws) == {"type": "ack", "id": "x"}
        assert await recv(ws) == {"type": "pong", "pong": 5}
        assert h.counted("commands_total", type="ping") == 1
        assert h.counted("connections_total", kind="websocket") == 1
        assert len(h.handler.connections) == 1


async def test_commands_reach_the_store_and_messages_come_back_through_the_hub() -> None:
    async with harness() as h:
        one, two = await bound(h, "s1"), await bound(h, "s2")
        for ws in (one, two):
            await send(ws, type="open", mailbox="mb")
            assert (await recv(ws))["type"] == "ack"
        await trio.testing.wait_all_tasks_blocked()
        assert h.hub.subscriber_count() == 2
        await send(one, type="add", phase="pake", body="aa", id="m1")
        assert await recv(one) == {"type": "ack", "id": "m1"}
        for ws in (one, two):
            frame = await recv(ws)
            assert (frame["type"], frame["side"], frame["body"], frame["id"]) == (
                "message", "s1", "aa", "m1")
        assert [type(op) for op in h.store.ops] == [Bind, Bind, Open, Open, Add]


async def test_an_ack_waits_for_its_command_to_be_done() -> None:
    async with harness() as h:
        ws = await h.connect()
        await recv(ws)
        h.store.gate = trio.Event()
        await send(ws, type="bind", appid="app", side="s1", id=1)
        got: list[dict[str, Any]] = []

        async def receive_one() -> None:
            got.append(await recv(ws))

        h.nursery.start_soon(receive_one)
        await trio.testing.wait_all_tasks_blocked()
        assert len(h.store.ops) == 1 and got == []
        h.store.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert got == [{"type": "ack", "id": 1}]


async def test_leaving_unsubscribes() -> None:
    async with harness() as h:
        ws = await bound(h)
        await send(ws, type="open", mailbox="mb")
        await recv(ws)
        await trio.testing.wait_all_tasks_blocked()
        assert h.hub.is_subscribed(("app", "mb"))
        await ws.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert not h.hub.is_subscribed(("app", "mb"))
        assert not h.handler.connections


async def test_a_failed_store_op_is_reported_then_closed_1011() -> None:
    async with harness() as h:
        ws = await bound(h)
        h.store.failing = True
        await send(ws, type="open", mailbox="mb", id=2)
        assert await recv(ws) == {"type": "ack", "id": 2}
        assert await recv(ws) == {"type": "error", "error": "internal server error",
                                  "orig": {"type": "open", "mailbox": "mb", "id": 2}}
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert (closed.value.reason.code, closed.value.reason.reason) == (
            1011, "database unavailable")
        assert not h.hub.is_subscribed(("app", "mb"))
        assert h.counted("connections_dropped_total", reason="database") == 1
        assert h.counted("errors_total", kind="internal") == 1


async def test_a_store_op_past_the_deadline_is_an_error_then_a_1011_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:  # virtual seconds: the deadline of 5 s passes
        ws = await bound(h)
        h.store.gate = trio.Event()  # the store never answers
        await send(ws, type="open", mailbox="mb", id=2)
        assert await recv(ws) == {"type": "ack", "id": 2}
        assert await recv(ws) == {"type": "error", "error": "command timed out",
                                  "orig": {"type": "open", "mailbox": "mb", "id": 2}}
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert (closed.value.reason.code, closed.value.reason.reason) == (
            1011, "command timed out")
        assert not h.hub.is_subscribed(("app", "mb"))
        assert h.counted("connections_dropped_total", reason="command_timeout") == 1
        assert h.counted("errors_total", kind="timeout") == 1


async def test_permission_denied_is_flushed_then_closed_1008() -> None:
    async with harness(SessionConfig(hashcash_bits=8)) as h:
        ws = await h.connect()
        await recv(ws)
        await send(ws, type="bind", appid="a", side="s")
        assert await recv(ws) == {"type": "ack", "id": None}
        assert (await recv(ws))["error"] == "permission denied"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert (closed.value.reason.code, closed.value.reason.reason) == (
            1008, "permission denied")
        assert h.store.ops == []


async def test_shut_down_closes_1001() -> None:
    async with harness() as h:
        ws = await bound(h)
        (connection,) = h.handler.connections
        await connection.shut_down()
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert (closed.value.reason.code, closed.value.reason.reason) == (
            1001, "server shutting down")
        await trio.testing.wait_all_tasks_blocked()
        assert not h.handler.connections


UPGRADE = (b"GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")


async def test_other_paths_are_refused_404() -> None:
    async with harness() as h:
        client, server = trio.testing.memory_stream_pair()
        h.nursery.start_soon(serve_stream, server, PEER, h.handler, h.metrics)
        await client.send_all(UPGRADE % b"/v2")
        response = b""
        while chunk := await client.receive_some():
            response += chunk
        assert response.startswith(b"HTTP/1.1 404 ")
        assert response.endswith(b"\r\n\r\nNot Found\n")
        assert h.counted("connections_total", kind="websocket") == 0


async def test_a_long_replay_is_read_from_the_store_only_as_fast_as_the_client_reads() -> None:
    async with harness() as h:
        h.store.page_size = 2
        h.store.stored = [Message(seq, "s2", str(seq), "b", 1.0, None) for seq in range(1, 8)]
        ws = await h.connect(lockstep=True)
        assert (await recv(ws))["type"] == "welcome"
        await send(ws, type="bind", appid="app", side="s1", id=1)
        assert await recv(ws) == {"type": "ack", "id": 1}
        await send(ws, type="open", mailbox="mb", id=2)
        await trio.testing.wait_all_tasks_blocked()
        stalled_at = h.store.pages_read  # the client reads nothing: the replay waits for it
        live = Message(9, "s2", "live", "b", 1.0, None)
        h.hub.publish(("app", "mb"), live)  # held until the replay is written
        assert await recv(ws) == {"type": "ack", "id": 2}
        phases = [(await recv(ws))["phase"] for _ in range(8)]
        assert phases == ["1", "2", "3", "4", "5", "6", "7", "live"]
        # while the client waited, at most the page after the one written was read (the ack
        # and the first page go out in one write, which the client's library takes in whole)
        assert (stalled_at, h.store.pages_read) == (1, 3)


async def test_a_client_that_stops_reading_a_replay_is_dropped_as_too_slow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:  # virtual seconds
        h.store.page_size = 2
        h.store.stored = [Message(seq, "s2", str(seq), "b", 1.0, None) for seq in range(1, 8)]
        ws = await h.connect(lockstep=True)
        await send(ws, type="bind", appid="app", side="s1", id=1)
        await send(ws, type="open", mailbox="mb", id=2)
        await trio.sleep(8)  # past the stall limit (3 s) and the close (2 s), reading nothing
        assert h.counted("connections_dropped_total", reason="too_slow") == 1
        assert h.store.pages_read <= 1  # the client's library took the first write whole
        assert not h.hub.is_subscribed(("app", "mb"))


async def test_a_client_reading_a_replay_steadily_is_not_dropped_however_long_it_takes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The stall limit (3 s) is time in which the client takes nothing, not the time a page
    (20 frames of 8 kB: 5 s at this client's pace) or the whole replay takes to read."""
    async with harness() as h:  # virtual seconds
        h.store.page_size = 20
        body = "b" * 8000
        h.store.stored = [Message(seq, "s2", str(seq), body, 1.0, None) for seq in range(1, 31)]
        ws = await h.connect(lockstep=True)
        assert (await recv(ws))["type"] == "welcome"
        await send(ws, type="bind", appid="app", side="s1", id=1)
        assert await recv(ws) == {"type": "ack", "id": 1}
        await send(ws, type="open", mailbox="mb", id=2)
        assert await recv(ws) == {"type": "ack", "id": 2}
        started = trio.current_time()
        phases = []
        for _ in range(30):
            await trio.sleep(0.25)  # a frame at a time (its library reads 4 KiB at a time)
            phases.append((await recv(ws))["phase"])
        assert phases == [str(seq) for seq in range(1, 31)]
        assert trio.current_time() - started >= 7.5
        assert h.counted("connections_dropped_total", reason="too_slow") == 0
        await send(ws, type="ping", ping=1, id=3)  # and the connection still works
        assert await recv(ws) == {"type": "ack", "id": 3}


async def test_a_client_that_sends_big_pings_and_reads_nothing_is_dropped_after_a_few(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:  # virtual seconds
        ws = await h.connect(lockstep=True)  # the server's writes wait for reads: none come
        pings = 0
        while h.counted("connections_dropped_total", reason="too_slow") == 0:
            await send(ws, type="ping", ping="p" * 1_000_000)  # a pong of 1 MB each
            pings += 1
            await trio.testing.wait_all_tasks_blocked()
        # One pong being written, 8 MiB (OUTBOUND_BYTES) queued: not OUTBOUND_QUEUE (4096) of them
        assert pings <= 10


async def test_keep_alive_pings_answered_keep_a_connection_unanswered_close_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One task pings every connection open for an interval; trio-websocket's client answers
    (it stays open), a raw client that never reads its pings is closed 1001 `ping timeout`."""
    async with harness(ping_interval=2, ping_timeout=2) as h:  # virtual seconds
        answering = await bound(h)
        client, server = trio.testing.memory_stream_pair()
        h.nursery.start_soon(serve_stream, server, PEER, h.handler, h.metrics)
        await client.send_all(UPGRADE % b"/v1")
        await trio.sleep(8)  # several intervals
        assert h.counted("connections_dropped_total", reason="ping_timeout") == 1
        await send(answering, type="ping", ping=1, id="still")
        assert await recv(answering) == {"type": "ack", "id": "still"}
        received = b""
        while chunk := await client.receive_some():
            received += chunk
        assert b"\x89\x04" in received  # a ping was sent
        assert received.endswith(b"\x88\x0e\x03\xe9ping timeout")  # 1001, then the end
