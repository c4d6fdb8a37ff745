"""Commands a client sends without waiting (docs/mailbox-protocol.md §3.3), over a real socket
to a real server: `add`s that arrive with an `open` share its batch, and the client sees
exactly what it would have seen had the server taken them one at a time."""

from __future__ import annotations

import json
from typing import Any

import trio
from wormhole_mailbox.server import MailboxServer

from tests.integration.mailbox_helpers import query, serving
from tests.integration.test_mailbox_closes import client_frame, server_frames, upgraded


def commands(*msgs: dict[str, Any]) -> bytes:
    """The commands as frames, for one write."""
    return b"".join(client_frame(json.dumps(m).encode()) for m in msgs)


class Client:
    def __init__(self, stream: trio.SocketStream, received: bytes) -> None:
        self.stream = stream
        self.received = received

    @classmethod
    async def bound(cls, server: MailboxServer, side: str) -> Client:
        stream, _head, received = await upgraded(server)
        client = cls(stream, received)
        await client.send({"type": "bind", "appid": "app", "side": side, "id": "b"})
        assert [f["type"] for f in await client.frames(2)] == ["welcome", "ack"]
        return client

    async def send(self, *msgs: dict[str, Any]) -> None:
        await self.stream.send_all(commands(*msgs))

    async def frames(self, n: int) -> list[dict[str, Any]]:
        """The next `n` frames the server sends, without `server_tx`."""
        while len(server_frames(self.received)) < n:
            self.received += await self.stream.receive_some()
        frames = server_frames(self.received)
        taken, rest = frames[:n], frames[n:]
        self.received = b"".join(_unmasked(p) for _op, p in rest)
        out = []
        for _opcode, payload in taken:
            frame = json.loads(payload)
            frame.pop("server_tx")
            out.append(frame)
        return out


def _unmasked(payload: bytes) -> bytes:
    """A text frame as the server sends it (for putting back what was not taken)."""
    n = len(payload)
    head = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + n.to_bytes(2, "big")
    return head + payload


def shape(frame: dict[str, Any]) -> tuple[str, Any]:
    if frame["type"] == "ack":
        return ("ack", frame["id"])
    if frame["type"] == "message":
        return ("message", frame["phase"])
    return (frame["type"], frame.get("error"))


async def test_adds_sent_with_the_open_share_its_batch_in_the_order_of_one_at_a_time(
    database_url: str,
) -> None:
    async with serving(database_url) as server:
        client = await Client.bound(server, "s1")
        trips = server.batcher.store.round_trips
        await client.send({"type": "open", "mailbox": "mb", "id": "o"},
                          {"type": "add", "phase": "pake", "body": "aa", "id": "p"},
                          {"type": "add", "phase": "version", "body": "bb", "id": "v"})
        assert [shape(f) for f in await client.frames(5)] == [
            ("ack", "o"), ("ack", "p"), ("message", "pake"), ("ack", "v"),
            ("message", "version")]
        assert server.batcher.store.round_trips == trips + 1  # the three in one statement
        await client.stream.aclose()


async def test_adds_sent_with_a_crowded_open_get_what_they_would_have_got(
    database_url: str,
) -> None:
    async with serving(database_url) as server:
        others = [await Client.bound(server, side) for side in ("s1", "s2")]
        for other in others:
            await other.send({"type": "open", "mailbox": "mb", "id": "o"})
            assert [shape(f) for f in await other.frames(1)] == [("ack", "o")]
        third = await Client.bound(server, "s3")
        await third.send({"type": "open", "mailbox": "mb", "id": "o"},
                         {"type": "add", "phase": "pake", "body": "aa", "id": "p"},
                         {"type": "add", "phase": "version", "body": "bb", "id": "v"},
                         {"type": "ping", "ping": 7, "id": "q"})
        assert [shape(f) for f in await third.frames(8)] == [
            ("ack", "o"), ("error", "crowded"),
            ("ack", "p"), ("error", "must open mailbox before adding"),
            ("ack", "v"), ("error", "must open mailbox before adding"),
            ("ack", "q"), ("pong", None)]
        assert await query(database_url, "SELECT side FROM messages") == []
        for client in (*others, third):
            await client.stream.aclose()
