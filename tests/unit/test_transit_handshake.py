"""The handshake grammar, byte by byte (docs/transit-protocol.md §3.2-§3.4, §6.2)."""

from __future__ import annotations

import pytest
from wormhole_transit.core.handshake import (
    MAX_LINE,
    Accepted,
    Handshake,
    HandshakeParser,
    NeedMore,
    Overlong,
    Rejected,
    parse_message,
)

TOKEN = b"0123456789abcdef" * 4
SIDE = b"fedcba9876543210"
SIDED = b"please relay " + TOKEN + b" for side " + SIDE + b"\n"
LEGACY = b"please relay " + TOKEN + b"\n"


def feed(data: bytes) -> object:
    return HandshakeParser().feed(data)


def test_sided_line_is_104_bytes_and_accepted() -> None:
    assert len(SIDED) == 104
    assert feed(SIDED) == Accepted(Handshake(TOKEN, SIDE), b"")


def test_legacy_line_is_78_bytes_and_accepted() -> None:
    assert len(LEGACY) == 78
    assert feed(LEGACY) == Accepted(Handshake(TOKEN, None), b"")


def test_word_characters_not_only_hex() -> None:
    token = b"Zz_g" * 16
    side = b"A_z9" * 4
    assert feed(b"please relay " + token + b" for side " + side + b"\n") == Accepted(
        Handshake(token, side), b"")


def test_bytes_after_the_line_are_kept_as_data() -> None:
    assert feed(SIDED + b"eager\nbytes") == Accepted(Handshake(TOKEN, SIDE), b"eager\nbytes")


def test_partial_lines_wait_one_byte_at_a_time() -> None:
    parser = HandshakeParser()
    for byte in SIDED[:-1]:
        assert parser.feed(bytes([byte])) == NeedMore()
    assert parser.feed(b"\n") == Accepted(Handshake(TOKEN, SIDE), b"")


def test_empty_input_needs_more() -> None:
    assert feed(b"") == NeedMore()


@pytest.mark.parametrize("line", [
    b"garbage",
    b"",
    b"please relay " + TOKEN[:63],
    b"please relay " + TOKEN + b"0",
    b"please relay " + TOKEN + b" for side " + SIDE[:15],
    b"please relay " + TOKEN + b" for side " + SIDE + b"0",
    b"please relay " + TOKEN + b" for side ",
    b"please relay " + TOKEN + b" for side " + SIDE + b"\r",
    b" please relay " + TOKEN,
    b"please relay " + TOKEN + b" ",
    b"please  relay " + TOKEN,
    b"please relay " + TOKEN + b" for  side " + SIDE,
    b"PLEASE RELAY " + TOKEN,
    b"please relay " + TOKEN[:63] + b"-",
    b"please relay " + TOKEN[:63] + b".",
    b"please relay " + TOKEN + b" for side " + SIDE[:15] + b"-",
    b"please relay " + TOKEN[:63] + "é".encode()[:1],
    b"x" * MAX_LINE,
])
def test_bad_lines_are_rejected(line: bytes) -> None:
    assert feed(line + b"\n") == Rejected()


def test_bytes_after_a_bad_line_do_not_matter() -> None:
    assert feed(b"nope\n" + SIDED) == Rejected()


def test_exactly_max_line_without_lf_still_waits() -> None:
    assert feed(b"x" * MAX_LINE) == NeedMore()


@pytest.mark.parametrize("data", [
    b"x" * (MAX_LINE + 1),
    b"x" * 4000,
    b"x" * (MAX_LINE + 1) + b"\n",
    b"x" * 2014 + b"\n",
])
def test_overlong_input_is_closed_silently(data: bytes) -> None:
    assert feed(data) == Overlong()


def test_overlong_reached_in_pieces() -> None:
    parser = HandshakeParser()
    assert parser.feed(b"x" * 1000) == NeedMore()
    assert parser.feed(b"x" * 24) == NeedMore()
    assert parser.feed(b"x") == Overlong()


def test_websocket_message_lf_optional() -> None:
    assert parse_message(SIDED) == Handshake(TOKEN, SIDE)
    assert parse_message(SIDED[:-1]) == Handshake(TOKEN, SIDE)
    assert parse_message(LEGACY[:-1]) == Handshake(TOKEN, None)


@pytest.mark.parametrize("message", [
    SIDED + b"extra",
    SIDED + b"\n",
    SIDED[:50],
    b"",
    b"please relay " + TOKEN + b"\r\n",
])
def test_websocket_message_must_be_exactly_the_line(message: bytes) -> None:
    assert parse_message(message) is None
