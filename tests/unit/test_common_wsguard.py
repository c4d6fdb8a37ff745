"""Close codes for protocol violations: the frame scanner (sans-IO), and trio-websocket 0.12
behind a `GuardedStream` over memory streams (issue 10: 1002, 1007, 1009 at the header)."""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, wrap_server_stream
from wormhole_common.wsguard import (
    Close,
    FrameScanner,
    GuardedStream,
    close_frame,
    close_to_send,
)

LIMIT = 1000
MASK = b"\x11\x22\x33\x44"
REQUEST = (b"GET /v1 HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, masked: bool = True,
          announce: int | None = None) -> bytes:
    """A client frame; `announce` claims another payload length than the one sent."""
    length = len(payload) if announce is None else announce
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def server_close(code: int, reason: str = "") -> bytes:
    payload = code.to_bytes(2, "big") + reason.encode()
    return bytes([0x88, len(payload)]) + payload


# -- the scanner --------------------------------------------------------------------------------


def test_scanner_passes_the_head_and_frames_byte_by_byte() -> None:
    scanner = FrameScanner(LIMIT)
    data = REQUEST + frame(0x1, b"hello") + frame(0x9, b"p") + frame(0x1, b"x" * 300)
    assert all(scanner.feed(data[i:i + 1]) == 1 for i in range(len(data)))
    assert scanner.refused is None and not scanner.close_seen


def test_scanner_refuses_an_announced_size_at_the_header() -> None:
    scanner = FrameScanner(LIMIT)
    ok = REQUEST + frame(0x1, b"hello")
    assert scanner.feed(ok + frame(0x2, announce=1 << 62)) == len(ok)
    assert scanner.refused == Close(1009, "message over 1000 bytes")
    assert scanner.feed(b"more") == 0


def test_scanner_sums_the_fragments_of_a_message() -> None:
    scanner = FrameScanner(LIMIT)
    first = REQUEST + frame(0x1, b"a" * 600, fin=False) + frame(0x9, b"ping")
    assert scanner.feed(first) == len(first)
    assert scanner.feed(frame(0x0, b"b" * 401)) == 0
    assert scanner.refused == Close(1009, "message over 1000 bytes")


def test_scanner_counts_each_message_afresh() -> None:
    scanner = FrameScanner(LIMIT)
    data = REQUEST + frame(0x1, b"a" * 600) + frame(0x2, b"b" * 600) + frame(0x1, b"c" * 1000)
    assert scanner.feed(data) == len(data)
    assert scanner.refused is None


def test_scanner_notes_close_frames_and_needs_no_limit() -> None:
    scanner = FrameScanner()
    data = b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + frame(0x2, announce=1 << 40, masked=False)
    assert scanner.feed(data) == len(data)
    scanner.remaining = 0
    scanner.feed(server_close(1000))
    assert scanner.close_seen


def test_close_frame_bytes() -> None:
    assert close_frame(Close(1007, "invalid UTF-8")) == server_close(1007, "invalid UTF-8")
    assert len(close_frame(Close(1009, "x" * 500))) == 2 + 125
    assert close_frame(Close(1002, "\u00e9" * 100))[4:] == "\u00e9".encode() * 61  # 122 bytes


@pytest.mark.parametrize(("refused", "code", "sent", "owed"), [
    (None, None, False, None),  # never upgraded
    (None, 1000, True, None),  # an ordinary close, answered by the library
    (None, 1006, False, None),  # the client vanished
    (None, 1002, False, Close(1002, "protocol error")),  # wsproto noticed, nothing was sent
    (None, 1007, False, Close(1007, "invalid UTF-8")),
    (None, 1007, True, None),  # the client's own close frame with 1007, answered
    (None, 1009, True, None),  # the library's own size check sends its 1009
    (Close(1009, "big"), 1006, False, Close(1009, "big")),
    (Close(1009, "big"), 1006, True, None),
])
def test_close_to_send(refused: Close | None, code: int | None, sent: bool,
                       owed: Close | None) -> None:
    assert close_to_send(refused, code, sent) == owed


# -- trio-websocket behind the guard ------------------------------------------------------------


async def converse(client_bytes: bytes) -> tuple[list[str | bytes], Close | None, bytes]:
    """Serve one connection with trio-websocket; return the messages it got, the close frame
    `finish` added, and every byte the client received after the 101 response."""
    client, server = trio.testing.memory_stream_pair()
    messages: list[str | bytes] = []
    owed: list[Close | None] = []

    async def serve() -> None:
        guarded = GuardedStream(server, LIMIT)
        async with trio.open_nursery() as nursery:
            request = await wrap_server_stream(nursery, guarded, max_message_size=LIMIT)
            ws = await request.accept()
            try:
                while True:
                    messages.append(await ws.get_message())
            except ConnectionClosed:
                pass
            owed.append(await guarded.finish(ws.closed.code if ws.closed else None))
            nursery.cancel_scope.cancel()

    received = b""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await client.send_all(REQUEST)
            while b"\r\n\r\n" not in received:
                received += await client.receive_some()
            await client.send_all(client_bytes)
            while chunk := await client.receive_some():
                received += chunk
    return messages, owed[0], received.split(b"\r\n\r\n", 1)[1]


async def test_invalid_utf8_gets_1007() -> None:
    messages, owed, received = await converse(frame(0x1, b"ok") + frame(0x1, b"\xff\xfe"))
    assert messages == ["ok"]
    assert owed == Close(1007, "invalid UTF-8")
    assert received == server_close(1007, "invalid UTF-8")


@pytest.mark.parametrize("garbage", [frame(0x3, b"x"), frame(0x1, b"x", masked=False),
                                     frame(0x9, b"p" * 126), frame(0x0, b"orphan"),
                                     bytes([0xF1, 0x80]) + MASK])
async def test_framing_errors_get_1002(garbage: bytes) -> None:
    messages, owed, received = await converse(garbage)
    assert (messages, owed) == ([], Close(1002, "protocol error"))
    assert received == server_close(1002, "protocol error")


async def test_a_huge_announcement_gets_1009_at_once() -> None:
    messages, owed, received = await converse(frame(0x1, b"ok") + frame(0x1, announce=1 << 62))
    assert messages == ["ok"]
    assert received == server_close(1009, "message over 1000 bytes")
    assert owed == Close(1009, "message over 1000 bytes")


async def test_an_ordinary_close_is_answered_once() -> None:
    messages, owed, received = await converse(frame(0x1, b"hi") + frame(0x8, b"\x03\xe8"))
    assert (messages, owed) == (["hi"], None)
    assert received == server_close(1000)
