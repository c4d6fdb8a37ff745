"""Run our mailbox server inside a test's trio run, and a small WebSocket client for it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import WebSocketConnection
from wormhole_common.database import Database
from wormhole_common.migrations import migrate
from wormhole_mailbox.server import MailboxServer
from wormhole_mailbox.settings import MailboxSettings

from tests.support.websocket import open_websocket

TIMEOUT = 10


def mailbox_settings(database_url: str, **overrides: Any) -> MailboxSettings:
    values: dict[str, Any] = {"database_url": database_url, "host": "127.0.0.1", "port": 0,
                              "metrics_port": 0}
    values.update(overrides)
    return MailboxSettings(**values)


@asynccontextmanager
async def running_mailbox(database_url: str, **overrides: Any) -> AsyncIterator[MailboxServer]:
    settings = mailbox_settings(database_url, **overrides)
    db = Database(settings.connection_string(), size=2)
    await migrate(db, "mailbox", "wormhole_mailbox")
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            server: MailboxServer = await nursery.start(_serve, MailboxServer(settings, db), stop)
            try:
                yield server
            finally:
                stop.set()
    finally:
        db.close()


async def _serve(server: MailboxServer, stop: trio.Event, task_status: Any) -> None:
    await server.serve(stop, task_status=task_status)


def url(server: MailboxServer) -> str:
    return f"ws://127.0.0.1:{server.port}/v1"


class Client:
    """A raw protocol client: send dicts, receive dicts (server_tx checked and removed)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self.pings = 0

    async def send(self, **msg: Any) -> None:
        await self.ws.send_message(json.dumps(msg))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send_message(data)

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(TIMEOUT):
            raw = await self.ws.get_message()
        assert isinstance(raw, str), "server frames must be text"
        msg: dict[str, Any] = json.loads(raw)
        assert isinstance(msg.pop("server_tx"), float)
        self.received.append(msg)
        return msg

    async def recv_type(self, kind: str) -> dict[str, Any]:
        while True:
            msg = await self.recv()
            if msg["type"] == kind:
                return msg

    async def command(self, **msg: Any) -> dict[str, Any]:
        """Send a command with an id; return the response after its ack."""
        msg.setdefault("id", "c0de")
        await self.send(**msg)
        ack = await self.recv()
        assert ack == {"type": "ack", "id": msg["id"]}, ack
        return await self.recv()

    async def ack_only(self, **msg: Any) -> None:
        msg.setdefault("id", "c0de")
        await self.send(**msg)
        ack = await self.recv()
        assert ack == {"type": "ack", "id": msg["id"]}, ack

    async def bind(self, side: str, appid: str = "app") -> None:
        await self.ack_only(type="bind", appid=appid, side=side, client_version=["test", "1"])

    async def barrier(self) -> None:
        """Nothing else is queued for this client: the next frames are a ping's ack and pong.

        Frames are written in the order they were queued, so this proves that nothing caused
        before the ping (a replay, a delivery to this connection) produced a frame.
        """
        self.pings += 1
        token = f"barrier-{self.pings}"
        await self.send(type="ping", ping=token, id=token)
        assert await self.recv() == {"type": "ack", "id": token}
        assert await self.recv() == {"type": "pong", "pong": token}


@asynccontextmanager
async def client(
    server: MailboxServer, source: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[Client]:
    """A client past its welcome. `source`: the local address to connect from; `headers`:
    extra request headers (see `open_websocket`)."""
    assert server.port is not None
    async with client_at(server.port, source=source, headers=headers) as c:
        yield c


@asynccontextmanager
async def client_at(
    port: int, host: str = "127.0.0.1", source: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[Client]:
    """A client past its welcome of the mailbox on `host:port` (`::1` for IPv6)."""
    async with open_websocket(port, "/v1", host=host, source=source, headers=headers) as ws:
        c = Client(ws)
        welcome = await c.recv()
        assert welcome["type"] == "welcome"
        yield c
