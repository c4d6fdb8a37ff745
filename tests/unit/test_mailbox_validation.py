"""Client frames in, server frames out: what the protocol refuses and how (docs/mailbox-protocol.md
§3.1, §9.2)."""

from __future__ import annotations

import contextlib
import json
import random
from typing import Any

import pytest
from wormhole_mailbox.core.encoding import encode_unstamped, stamp
from wormhole_mailbox.core.errors import ErrorKind, ProtocolError
from wormhole_mailbox.core.validation import (
    MAX_DEPTH,
    RULES,
    FrameRefused,
    check_string,
    client_version,
    decode_frame,
    depth,
    message_id,
    optional,
    present,
    preview,
    required,
)


def encode_frame(frame: dict[str, Any], server_tx: float) -> str:
    """What the writer sends: encoded when queued, stamped when written."""
    return stamp(encode_unstamped(frame), server_tx)


def refused(raw: str | bytes) -> FrameRefused:
    with pytest.raises(FrameRefused) as info:
        decode_frame(raw)
    assert info.value.kind in set(ErrorKind)
    return info.value


def invalid(call: Any, *args: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call(*args)
    assert info.value.kind in set(ErrorKind)
    return info.value


# -- decoding ---------------------------------------------------------------------------------


def test_real_client_frames_decode() -> None:
    frames = [
        {"type": "bind", "appid": "lothar.com/wormhole/text-or-file-xfer", "side": "0a1b2c3d4e",
         "client_version": ["python", "0.24.0"], "id": "a9c5"},
        {"type": "add", "phase": "pake", "body": "ab" * 80, "id": "0001"},
        {"type": "ping", "ping": [1.5, -2, 0, {"x": [None, True]}]},
    ]
    for frame in frames:
        assert decode_frame(json.dumps(frame)) == frame
        assert decode_frame(json.dumps(frame).encode()) == frame


def test_invalid_json_is_echoed_as_its_text() -> None:
    error = refused("{not json")
    assert (str(error), error.kind, error.orig) == ("message is not valid JSON", "malformed",
                                                     "{not json")


def test_invalid_utf8_in_a_binary_frame_is_not_json_and_echoed_replaced() -> None:
    error = refused(b'{"type": "\xff"}')
    assert str(error) == "message is not valid JSON"
    assert error.orig == '{"type": "\ufffd"}'


@pytest.mark.parametrize("raw", ['{"type": "ping", "ping": NaN}',
                                 '{"type": "ping", "ping": Infinity}',
                                 '{"type": "ping", "id": -Infinity}'])
def test_nan_and_infinity_constants_are_not_json(raw: str) -> None:
    assert str(refused(raw)) == "message is not valid JSON"


@pytest.mark.parametrize(("raw", "key"), [
    ('{"type": "add", "id": 1e400}', "id"),
    ('{"type": "ping", "ping": [1, {"a": -1e999}]}', "ping"),
    ('{"type": "ping", "ping": [2, ' + "1" * 4301 + "]}", "ping"),  # past Python's 4300 digits
    ('{"type": "ping", "id": -' + "9" * 5000 + "}", "id"),
    ('{"type": "ping", "ping": 1.0, "id": [1e309, ' + "9" * 5000 + "]}", "id"),
])
def test_numbers_out_of_range_are_refused_naming_the_field(raw: str, key: str) -> None:
    error = refused(raw)
    assert (str(error), error.kind) == (f"'{key}' contains a number out of range", "out_of_range")
    assert error.orig == preview(raw)
    json.dumps(error.orig, allow_nan=False)  # never echoed as a number


def test_long_but_finite_numbers_are_fine() -> None:
    assert decode_frame('{"type": "ping", "ping": ' + "9" * 4300 + "}")["ping"] == int("9" * 4300)
    assert decode_frame('{"type": "ping", "ping": 1e-400}')["ping"] == 0.0


def test_nesting_up_to_the_limit_is_fine() -> None:
    ping = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert depth('{"ping": ' + ping + "}") == MAX_DEPTH
    assert decode_frame('{"type": "ping", "ping": ' + ping + "}")["type"] == "ping"


@pytest.mark.parametrize("levels", [MAX_DEPTH, 950, 100_000])
def test_deeper_nesting_is_refused(levels: int) -> None:
    raw = '{"type": "ping", "ping": ' + "[" * levels + "]" * levels + "}"
    error = refused(raw)
    assert (str(error), error.kind) == ("message is nested too deeply (at most 32 levels)",
                                        "too_deep")
    assert error.orig == preview(raw)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"type": "ping", "ping": "[{" * 100 + '\\"[', "x": ["]]]"]})
    assert depth(text) == 2
    assert decode_frame(text)["type"] == "ping"


@pytest.mark.parametrize("raw", ["[1, 2]", '"type"', "3", "null"])
def test_a_non_object_is_refused_and_echoed_as_parsed(raw: str) -> None:
    error = refused(raw)
    assert (str(error), error.orig) == ("message must be a JSON object", json.loads(raw))


def test_a_non_object_holding_a_bad_number_is_echoed_as_text() -> None:
    assert refused("[1e400]").orig == "[1e400]"


def test_preview_is_short_and_always_encodable() -> None:
    assert preview("x" * 300) == "x" * 200 + "\u2026"
    assert preview("a\ud800b") == "a?b"
    assert preview(b"\xff\xfe") == "\ufffd\ufffd"


# -- fields -----------------------------------------------------------------------------------


def test_required_string() -> None:
    assert required({"side": "0a1b2c3d4e"}, "side", "bind requires 'side'") == "0a1b2c3d4e"
    error = invalid(required, {}, "side", "bind requires 'side'")
    assert (str(error), error.kind) == ("bind requires 'side'", "malformed")
    error = invalid(required, {"side": 7}, "side", "bind requires 'side'")
    assert (str(error), error.kind) == ("'side' must be a string", "malformed")


def test_present_checks_only_presence_and_type() -> None:
    assert present({"nameplate": "1" * 100}, "nameplate", "claim requires 'nameplate'") == (
        "1" * 100)
    assert str(invalid(present, {}, "nameplate", "claim requires 'nameplate'")) == (
        "claim requires 'nameplate'")
    assert str(invalid(present, {"nameplate": 5}, "nameplate", "x")) == (
        "'nameplate' must be a string")


def test_optional_string() -> None:
    assert optional({}, "mood") is None
    assert optional({"mood": None}, "mood") is None
    assert optional({"mood": "happy"}, "mood") == "happy"
    assert str(invalid(optional, {"mood": ["happy"]}, "mood")) == "'mood' must be a string"


@pytest.mark.parametrize(("key", "limit"), [("appid", 256), ("side", 128), ("mailbox", 128),
                                            ("phase", 128), ("mood", 128), ("stamp", 256),
                                            ("body", 1 << 20)])
def test_lengths(key: str, limit: int) -> None:
    assert RULES[key].max_chars == limit
    assert check_string("\u4e2d" * limit, key) == "\u4e2d" * limit
    error = invalid(check_string, "a" * (limit + 1), key)
    assert (str(error), error.kind) == (f"'{key}' is too long (at most {limit} characters)",
                                        "too_long")


@pytest.mark.parametrize("value", ["1" * 41, "1\n", "1\x00", "\ud800"])
def test_a_nameplate_has_one_error_text(value: str) -> None:
    assert check_string("1" * 40, "nameplate") == "1" * 40
    assert str(invalid(check_string, value, "nameplate")) == "invalid nameplate"
    assert str(invalid(check_string, 1, "nameplate")) == "'nameplate' must be a string"


@pytest.mark.parametrize("value", ["a\x00", "a\nb", "\x1b[31m", "a\x7f", "\x85"])
def test_identifiers_refuse_control_characters(value: str) -> None:
    error = invalid(check_string, value, "side")
    assert (str(error), error.kind) == ("'side' must not contain control characters",
                                        "bad_characters")


def test_body_allows_control_characters_but_not_nul() -> None:
    assert check_string("a\nb\tc", "body") == "a\nb\tc"
    assert str(invalid(check_string, "a\x00", "body")) == "'body' must not contain NUL characters"


@pytest.mark.parametrize("key", ["phase", "body"])
def test_lone_surrogates_are_refused(key: str) -> None:
    assert str(invalid(check_string, "a\udc00", key)) == f"'{key}' must be valid Unicode"


def test_a_surrogate_pair_from_json_is_one_character() -> None:
    frame = decode_frame('{"type": "add", "phase": "\\ud83d\\ude00", "body": "\\ud800"}')
    assert check_string(frame["phase"], "phase") == "\U0001f600"
    assert str(invalid(check_string, frame["body"], "body")) == "'body' must be valid Unicode"


def test_client_version() -> None:
    assert client_version({}) == (None, None)
    assert client_version({"client_version": ["python", "0.24.0"]}) == ("python", "0.24.0")
    assert client_version({"client_version": ["go-william", "v1.0.6", "x"]}) == (
        "go-william", "v1.0.6")
    assert client_version({"client_version": ["x", 2]}) == ("x", "2")
    assert client_version({"client_version": ["x", None]}) == ("x", None)


@pytest.mark.parametrize("value", ["python", ["python"], {"a": 1}, ["x", ["y"]], ["x", True],
                                   ["x", {"deep": "x" * 10_000}]])
def test_client_version_shapes_refused(value: Any) -> None:
    error = invalid(client_version, {"client_version": value})
    assert str(error) == "'client_version' must be a list of [implementation, version]"


def test_client_version_parts_are_checked() -> None:
    error = invalid(client_version, {"client_version": ["py", "1" * 129]})
    assert str(error) == "'client_version' is too long (at most 128 characters)"
    error = invalid(client_version, {"client_version": ["py\x00", "1"]})
    assert str(error) == "'client_version' must not contain control characters"


@pytest.mark.parametrize("value", [None, "a9c5", 3, 2.5, True, ["a", {"k": "\u4e2d"}],
                                   "x" * 254])
def test_message_ids_that_are_fine(value: Any) -> None:
    assert message_id({"id": value}) == value


def test_message_id_too_long() -> None:
    error = invalid(message_id, {"id": "x" * 255})  # 257 characters with its quotes
    assert (str(error), error.kind) == ("'id' is too long (at most 256 characters as JSON)",
                                        "too_long")


@pytest.mark.parametrize(("value", "text"), [
    ("\x00", "'id' must not contain NUL characters"),
    (["ok", {"k": "\udc00"}], "'id' must be valid Unicode"),
    ({"\x00": 1}, "'id' must not contain NUL characters"),
])
def test_message_id_must_be_storable(value: Any, text: str) -> None:
    assert str(invalid(message_id, {"id": value})) == text


def test_message_id_with_a_literal_backslash_u_is_fine() -> None:
    assert message_id({"id": "\\u0000"}) == "\\u0000"


# -- encoding ---------------------------------------------------------------------------------


def test_encode_frame_is_strict_json_with_server_tx() -> None:
    text = encode_frame({"type": "pong", "pong": ["\u4e2d", "\ud800"]}, 1234.5)
    assert text.isascii()
    assert json.loads(text) == {"type": "pong", "pong": ["\u4e2d", "\ud800"], "server_tx": 1234.5}


def test_encode_frame_never_emits_non_json() -> None:
    text = encode_frame({"type": "ack", "id": [float("inf"), {"a": float("nan")}, 1.0]}, 1.0)
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"type": "ack", "id": [None, {"a": None}, 1.0], "server_tx": 1.0}


# -- fuzzing ----------------------------------------------------------------------------------

SEEDS = [
    '{"type": "add", "phase": "pake", "body": "a1b2", "id": "a9c5"}',
    '{"type": "bind", "appid": "a", "side": "s", "client_version": ["python", "0.24.0"]}',
    '{"type": "ping", "ping": [1, -2.5e3, {"k": null}, true]}',
]
ALPHABET = '{}[]",:0123456789eE.-+ \\u0000dfNaIiy\x00\xff\ud800"'


def mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 6)):
        action = rng.randrange(4)
        at = rng.randrange(len(chars) + 1)
        if action == 0 and chars:
            del chars[min(at, len(chars) - 1)]
        elif action == 1:
            chars.insert(at, rng.choice(ALPHABET))
        elif action == 2:
            chars.insert(at, rng.choice(["[" * 40, "1e999", "9" * 4400, "NaN", '"\\ud800"']))
        else:
            chars[at:at] = list(rng.choice(SEEDS))
    return "".join(chars)


def test_fuzzed_frames_are_decoded_or_refused_and_always_echo_as_strict_json() -> None:
    rng = random.Random(10)
    decoded = 0
    for _ in range(3000):
        raw = mutate(rng, rng.choice(SEEDS))
        try:
            frame = decode_frame(raw.encode("utf-8", "surrogatepass") if rng.random() < 0.3
                                 else raw)
        except FrameRefused as error:
            assert error.kind in set(ErrorKind)
            reply = {"type": "error", "error": str(error), "orig": error.orig}
        else:
            decoded += 1
            assert isinstance(frame, dict)
            for key in ("appid", "side", "phase", "body"):
                with contextlib.suppress(ProtocolError):
                    optional(frame, key)
            with contextlib.suppress(ProtocolError):
                message_id(frame)
            reply = {"type": "error", "error": "x", "orig": frame}
        json.loads(encode_frame(reply, 1.0), parse_constant=pytest.fail)
    assert 0 < decoded < 3000
