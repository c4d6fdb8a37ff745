"""The sans-IO WebSocket server side: the upgrade's answer, frames in and out, violations."""

from __future__ import annotations

import random
import struct

import pytest
from wormhole_common.core.websocket import (
    FRAME_COST,
    CloseReceived,
    FrameReader,
    HandshakeError,
    Message,
    Ping,
    Pong,
    Violation,
    accept_key,
    check_upgrade,
    close_frame,
    parse_head,
    text_frame,
    unmask,
    upgrade_response,
)

MASK = b"\x37\xfa\x21\x3d"
LIMIT = 1 << 20


def client_frame(payload: bytes, *, first: int = 0x81, announce: int | None = None,
                 masked: bool = True) -> bytes:
    length = len(payload) if announce is None else announce
    bit = 0x80 if masked else 0
    if length < 126:
        head = bytes([first, bit | length])
    elif length < 1 << 16:
        head = bytes([first, bit | 126]) + struct.pack("!H", length)
    else:
        head = bytes([first, bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def test_accept_key_is_the_rfc_example() -> None:
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_upgrade_response_and_its_refusals() -> None:
    head = (b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade"
            b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13")
    request = parse_head(head)
    assert (request.method, request.target) == (b"GET", b"/v1")
    answer = upgrade_response(check_upgrade(request), [(b"Server", b"test")])
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    assert answer.endswith(b"\r\nServer: test\r\n\r\n")
    assert b"Extensions" not in answer and b"Protocol:" not in answer
    with pytest.raises(HandshakeError) as refused:
        check_upgrade(parse_head(head.replace(b"GET", b"POST")))
    assert refused.value.status == 405
    with pytest.raises(HandshakeError) as refused:
        check_upgrade(parse_head(head.replace(b"Version: 13", b"Version: 8")))
    assert refused.value.status == 426
    assert refused.value.headers == ((b"Sec-WebSocket-Version", b"13"),)  # RFC 6455 4.4
    with pytest.raises(HandshakeError):
        parse_head(b"GET /v1 HTTP/1.1\r\nno colon here")


@pytest.mark.parametrize("change", [
    (b"HTTP/1.1", b"HTTP/1.0"),  # an upgrade needs HTTP/1.1
    (b"HTTP/1.1", b"HTTP/0.9"),
    (b"HTTP/1.1", b"HTTP/1.1 extra"),
    (b"Host: x\r\n", b""),  # an HTTP/1.1 request names its host
    (b"dGhlIHNhbXBsZSBub25jZQ==", b"abc"),  # the key is 16 bytes in base64
    (b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZSBub25jZQ"),
    (b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZSBub25jZSE/"),  # 18 bytes
    (b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ=="),
])
def test_upgrades_rfc_6455_refuses_get_400(change: tuple[bytes, bytes]) -> None:
    head = (b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
            b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13")
    check_upgrade(parse_head(head))
    with pytest.raises(HandshakeError) as refused:
        check_upgrade(parse_head(head.replace(*change)))
    assert refused.value.status == 400


def test_a_plain_http_1_0_request_needs_no_host() -> None:
    assert parse_head(b"GET /metrics HTTP/1.0").version == b"HTTP/1.0"


def test_frames_out_use_the_shortest_length() -> None:
    assert text_frame("hi") == b"\x81\x02hi"
    assert text_frame("a" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame("a" * 70000)[:10] == b"\x81\x7f" + struct.pack("!Q", 70000)
    assert close_frame(1000) == b"\x88\x02\x03\xe8"
    assert close_frame(None) == b"\x88\x00"
    reason = close_frame(1002, "é" * 100)  # cut at a character boundary to fit 125 bytes
    assert len(reason) - 2 <= 125
    reason[4:].decode("utf-8")


def test_unmask_round_trips_every_length() -> None:
    for n in range(0, 11):
        data = bytes(range(n))
        masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(data))
        assert unmask(masked, MASK) == data


def test_messages_arrive_whole_however_the_bytes_are_cut() -> None:
    stream = (client_frame("héllo".encode()) + client_frame(b"\x00\xff", first=0x82)
              + client_frame(b"ab", first=0x01) + client_frame(b"p", first=0x89)
              + client_frame(b"cd", first=0x80) + client_frame(b"q", first=0x8A)
              + client_frame(b"x" * 300))
    for step in (1, 3, 7, len(stream)):
        reader = FrameReader(LIMIT)
        events = []
        for i in range(0, len(stream), step):
            events += reader.feed(stream[i:i + step])
        assert events == [Message("héllo"), Message(b"\x00\xff"), Ping(b"p"),
                          Message("abcd"), Pong(b"q"), Message("x" * 300)]


def test_a_close_ends_the_stream_of_events() -> None:
    reader = FrameReader(LIMIT)
    events = reader.feed(client_frame(b"\x03\xe8bye", first=0x88) + client_frame(b"late"))
    assert events == [CloseReceived(1000, "bye")]
    assert reader.done and reader.feed(client_frame(b"more")) == []
    assert FrameReader(LIMIT).feed(client_frame(b"", first=0x88)) == [CloseReceived(None, "")]


PROTOCOL = Violation(1002, "protocol error")


@pytest.mark.parametrize(("data", "violation"), [
    (client_frame(b"x", first=0xC1), PROTOCOL),  # reserved bits
    (client_frame(b"x", first=0x83), PROTOCOL),  # unknown opcode
    (client_frame(b"x", first=0x8B), PROTOCOL),  # unknown control opcode
    (client_frame(b"x", masked=False), PROTOCOL),  # a client must mask
    (client_frame(b"x", first=0x80), PROTOCOL),  # a continuation of nothing
    (client_frame(b"a", first=0x01) + client_frame(b"b"), PROTOCOL),  # a new message midway
    (client_frame(b"p", first=0x09), PROTOCOL),  # a fragmented control frame
    (client_frame(b"p" * 126, first=0x89), PROTOCOL),  # a control frame over 125 bytes
    (client_frame(b"\x03", first=0x88), PROTOCOL),  # a close with half a code
    (client_frame(b"\x03\xed", first=0x88), PROTOCOL),  # 1005 is never sent
    (client_frame(b"\x03\xe8\xc3\x28", first=0x88), Violation(1007, "invalid UTF-8")),
    (client_frame(b"\xc3\x28"), Violation(1007, "invalid UTF-8")),
    (client_frame(b"\xed\xa0\x80"), Violation(1007, "invalid UTF-8")),  # a UTF-8 surrogate
    (client_frame(b"", announce=1 << 63), PROTOCOL),  # a length's top bit must be 0
    (client_frame(b"", first=0x80, announce=LIMIT + 1), PROTOCOL),  # out of place before big
    (client_frame(b"", announce=LIMIT + 1), Violation(1009, "message over 1048576 bytes")),
    (client_frame(b"a" * (LIMIT // 2), first=0x01)
     + client_frame(b"", first=0x80, announce=LIMIT // 2 + 1),
     Violation(1009, "message over 1048576 bytes")),
])
def test_violations_are_the_last_event(data: bytes, violation: Violation) -> None:
    reader = FrameReader(LIMIT)
    events = reader.feed(client_frame(b"first") + data + client_frame(b"never"))
    assert events == [Message("first"), violation]
    assert reader.done


def test_an_oversized_message_is_refused_before_its_payload_arrives() -> None:
    reader = FrameReader(LIMIT)
    header = client_frame(b"", announce=LIMIT + 1)
    assert reader.feed(header) == [Violation(1009, "message over 1048576 bytes")]


def test_a_message_at_the_limit_is_taken() -> None:
    reader = FrameReader(16 + FRAME_COST)
    assert reader.feed(client_frame(b"a" * (16 + FRAME_COST))) == [Message("a" * (16 + FRAME_COST))]
    assert reader.feed(client_frame(b"a" * 8, first=0x01)
                       + client_frame(b"b" * 8, first=0x80)) == [Message("a" * 8 + "b" * 8)]
    over = client_frame(b"a" * 8, first=0x02) + client_frame(b"b" * 9, first=0x80)
    assert reader.feed(over) == [Violation(1009, "message over 80 bytes")]


def test_tiny_fragments_are_charged_so_a_message_of_them_is_refused_early() -> None:
    reader = FrameReader(LIMIT)
    stream = client_frame(b"a", first=0x01) + client_frame(b"a", first=0x00) * 20_000
    events = reader.feed(stream)
    assert events == [Violation(1009, "message over 1048576 bytes")]
    empty = FrameReader(LIMIT)
    assert empty.feed(client_frame(b"", first=0x02) + client_frame(b"", first=0x00) * 20_000)[
        -1].code == 1009
    # up to the budget, fragments are joined into the message
    budget = LIMIT // (FRAME_COST + 1)
    fine = FrameReader(LIMIT).feed(client_frame(b"a", first=0x01)
                                   + client_frame(b"b", first=0x00) * (budget - 2)
                                   + client_frame(b"c", first=0x80))
    assert fine == [Message("a" + "b" * (budget - 2) + "c")]


def test_invalid_utf8_is_refused_at_the_first_bad_fragment() -> None:
    reader = FrameReader(LIMIT)
    assert reader.feed(client_frame("κόσμε".encode(), first=0x01)) == []
    assert reader.feed(client_frame(b"\xf4\x90\x80\x80", first=0x00)) == [
        Violation(1007, "invalid UTF-8")]  # before the message's end
    split = FrameReader(LIMIT)  # a character cut between fragments is fine
    assert split.feed(client_frame("é".encode()[:1], first=0x01)
                      + client_frame("é".encode()[1:], first=0x80)) == [Message("é")]
    truncated = FrameReader(LIMIT)  # ...but not one the message ends inside
    assert truncated.feed(client_frame("é".encode()[:1], first=0x01)
                          + client_frame(b"", first=0x80)) == [Violation(1007, "invalid UTF-8")]


def test_mutated_streams_give_events_never_exceptions() -> None:
    """Seeded fuzz: valid frames with random bytes flipped, cut anywhere, fed in random
    chunks; the reader answers with events (messages, then at most one close or violation)."""
    rng = random.Random(12)
    valid = [client_frame(b'{"type": "ping", "ping": 1}'), client_frame(b"ab", first=0x01),
             client_frame(b"cd", first=0x80), client_frame(b"p", first=0x89),
             client_frame(b"\x03\xe8", first=0x88), client_frame(b"x" * 300, first=0x82)]
    for _ in range(3000):
        data = bytearray(b"".join(rng.choice(valid) for _ in range(rng.randint(1, 6))))
        for _ in range(rng.randint(0, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        reader = FrameReader(512)
        events = []
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 64)
            events += reader.feed(bytes(data[pos:pos + step]))
            pos += step
        enders = [e for e in events if isinstance(e, CloseReceived | Violation)]
        assert len(enders) <= 1 and (not enders or events[-1] is enders[0])
        for event in events:
            if isinstance(event, Message) and isinstance(event.data, str):
                event.data.encode("utf-8")  # text messages are valid UTF-8
