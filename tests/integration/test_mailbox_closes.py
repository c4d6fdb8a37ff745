"""Protocol violations on a real mailbox over real sockets: raw bytes in, the close frame with
the right code out (1002 framing, 1007 invalid UTF-8, 1009 too big, refused at the header),
then the end of the connection."""

from __future__ import annotations

import json
import struct

import pytest
import trio
import trio.testing
from wormhole_mailbox.server import MailboxServer

from tests.integration.mailbox_helpers import serving

DROPPED = "wormhole_mailbox_connections_dropped_total"

MASK = b"\x01\x02\x03\x04"
UPGRADE = (b"GET /v1 HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def client_frame(payload: bytes, *, first: int = 0x81, announce: int | None = None) -> bytes:
    """A masked frame as a client sends it; `announce` overrides the length in the header."""
    length = len(payload) if announce is None else announce
    if length < 126:
        head = bytes([first, 0x80 | length])
    elif length < 1 << 16:
        head = bytes([first, 0x80 | 126]) + struct.pack("!H", length)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack("!Q", length)
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked frame the server sent."""
    frames = []
    while data:
        opcode, short = data[0] & 0x0F, data[1] & 0x7F
        pos = 2
        if short == 126:
            short, pos = struct.unpack("!H", data[2:4])[0], 4
        elif short == 127:
            short, pos = struct.unpack("!Q", data[2:10])[0], 10
        frames.append((opcode, data[pos:pos + short]))
        data = data[pos + short:]
    return frames


def dropped(server: MailboxServer, reason: str) -> float:
    value = server.metrics.registry.get_sample_value(DROPPED, {"reason": reason})
    return value or 0.0


async def upgraded(server: MailboxServer) -> tuple[trio.SocketStream, bytes, bytes]:
    """A raw client past the upgrade: its stream, the 101's head, the bytes after it."""
    assert server.port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(UPGRADE)
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive_some()
    head, _, received = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    return stream, head, received


async def violate(server: MailboxServer, violation: bytes) -> list[tuple[int, bytes]]:
    """Upgrade, exchange a ping command, then send `violation`: every frame the server sent
    until it hung up."""
    stream, _head, received = await upgraded(server)
    await stream.send_all(client_frame(b'{"type": "ping", "ping": 1}'))
    while len(server_frames(received)) < 3:  # the welcome, the ack and the pong
        received += await stream.receive_some()
    await stream.send_all(violation)
    while chunk := await stream.receive_some():
        received += chunk
    await stream.aclose()
    return server_frames(received)


async def test_protocol_violations_get_their_close_codes(database_url: str) -> None:
    cases = [
        # Reserved bits set (no extension was negotiated): a framing error.
        (client_frame(b"x", first=0xF1), 1002, b"protocol error", "protocol_error"),
        # An unknown opcode.
        (client_frame(b"x", first=0x83), 1002, b"protocol error", "protocol_error"),
        (client_frame(b'{"type": "ping", "ping": "\xc3\x28"}'), 1007, b"invalid UTF-8",
         "invalid_utf8"),
        # A length with its top bit set is a framing error, whatever the size limit.
        (client_frame(b"", announce=1 << 63), 1002, b"protocol error", "protocol_error"),
        (client_frame(b"", announce=(1 << 20) + 1), 1009, b"message over 1048576 bytes",
         "too_big"),
    ]
    async with serving(database_url) as server:
        for violation, code, reason, label in cases:
            before = dropped(server, label)
            frames = await violate(server, violation)
            texts = [json.loads(payload)["type"] for opcode, payload in frames if opcode == 1]
            assert texts == ["welcome", "ack", "pong"], frames
            assert frames[-1] == (0x8, struct.pack("!H", code) + reason)
            await trio.testing.wait_all_tasks_blocked()  # the server is done with it
            assert dropped(server, label) == before + 1


@pytest.mark.parametrize("fragments", [2, 3])
async def test_a_fragmented_message_over_the_limit_is_refused_at_the_header(
    database_url: str, fragments: int,
) -> None:
    part = (1 << 20) // fragments + 1
    violation = client_frame(b"a" * part, first=0x01)
    for _ in range(fragments - 2):
        violation += client_frame(b"a" * part, first=0x00)
    violation += client_frame(b"", first=0x80, announce=part)  # the last header says too much
    async with serving(database_url) as server:
        frames = await violate(server, violation)
    assert frames[-1] == (0x8, struct.pack("!H", 1009) + b"message over 1048576 bytes")


async def test_pings_and_the_clients_close_over_a_real_socket(database_url: str) -> None:
    """A WebSocket ping (not the protocol's `ping` command) gets its pong; the client's close
    is echoed with its code, then the server ends the TCP connection."""
    async with serving(database_url) as server:
        stream, head, received = await upgraded(server)
        assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head + b"\r\n"
        await stream.send_all(client_frame(b"are you there", first=0x89))
        while len(server_frames(received)) < 2:  # the welcome and the pong
            received += await stream.receive_some()
        await stream.send_all(client_frame(struct.pack("!H", 1000) + b"done", first=0x88))
        while chunk := await stream.receive_some():
            received += chunk
        await stream.aclose()
    frames = server_frames(received)
    # a pong is sent by the reader, so it may overtake the welcome the writer has queued
    assert sorted(opcode for opcode, _ in frames[:2]) == [0x1, 0xA]
    assert (0xA, b"are you there") in frames
    assert frames[2] == (0x8, struct.pack("!H", 1000))
