"""Client frames in and server frames out, checked where the protocol rules live.

Sans-IO. `decode_frame` turns one inbound WebSocket message into a JSON object, refusing what
JSON cannot represent or the server cannot handle (NaN/Infinity, floats that overflow such as
1e400, integers past Python's 4300 digits, nesting beyond `MAX_DEPTH`); a refused frame is
never echoed as parsed, only as a short safe preview. (jsonb stores any finite number.)
The field checks (`required`, `optional`, `client_version`, `message_id`) bound every string a
client can make the server store, so no client value reaches the database in a form it rejects.
`encode_frame` is the one way out: strict JSON, never `NaN` or `Infinity`.

Every refusal is a `ProtocolError` whose text is the exact protocol `error` string
(docs/mailbox-protocol.md §9.2) and whose `kind` is an `ErrorKind` (the `errors_total` label);
`FrameRefused` also carries the safe echo.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from wormhole_mailbox.core.actions import Frame
from wormhole_mailbox.core.errors import ErrorKind, ProtocolError

MAX_DEPTH = 32  # nested arrays/objects, the frame itself being 1; real frames use 2
MAX_ID_CHARS = 256  # an `id`, serialised as compact JSON; real clients send 4 hex digits
PREVIEW_CHARS = 200  # how much of a refused frame's text its error echoes in `orig`


@dataclass(frozen=True)
class Rule:
    """Limits of one string field. `identifier`: no control characters (they only ever come
    from hostile clients, and would end up in logs), else only NUL is refused (text columns
    cannot hold it)."""

    max_chars: int
    identifier: bool = True
    error: str | None = None  # one text for every violation, where the protocol has one
    error_kind: ErrorKind = ErrorKind.MALFORMED  # the kind that goes with `error`


# Real clients: appid "lothar.com/wormhole/text-or-file-xfer" (37), side 10 hex digits, phase
# "pake"/"version"/"0"/"dilate-0", mailbox 13 base32 characters, mood "happy"..., version
# ["python", "0.24.0"], a body of a few KiB of hex. Worst case in UTF-8, appid + mailbox + side
# is 2 KiB, under PostgreSQL's B-tree row limit (2704 bytes) for the (app, mailbox, side) key.
RULES: dict[str, Rule] = {
    "appid": Rule(256),
    "side": Rule(128),
    "nameplate": Rule(40, error="invalid nameplate",
                      error_kind=ErrorKind.INVALID_NAMEPLATE),  # 1 to 40 ASCII digits
    "mailbox": Rule(128),
    "phase": Rule(128),
    "mood": Rule(128),
    "client_version": Rule(128),  # each of [implementation, version]
    "stamp": Rule(256),  # hashcash: 1:bits:date:resource::rand:counter, about 60 characters
    "body": Rule(1 << 20, identifier=False),  # the WebSocket message limit binds first
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # a decoded pair is one code point: these are lone
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string literal (linear: no nesting)
_STRICT = json.JSONEncoder(allow_nan=False)  # once: json.dumps with options makes one per call
_OTHERS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class FrameRefused(ProtocolError):
    """A whole frame refused before any field was looked at; `orig` is the safe echo: the
    parsed value when it was valid JSON but not an object, else a short preview of the text."""

    def __init__(self, kind: ErrorKind, text: str, orig: Any) -> None:
        super().__init__(kind, text)
        self.orig = orig


def error_frame(text: str, orig: Any) -> Frame:
    return {"type": "error", "error": text, "orig": orig}


def malformed(text: str) -> ProtocolError:
    """A field missing or of the wrong type, or a frame that is not a command."""
    return ProtocolError(ErrorKind.MALFORMED, text)


# -- inbound frames -------------------------------------------------------------------------------


class _OutOfRange:
    """Stands in for a number the decoder refuses, so the field holding it can be named."""


_OUT_OF_RANGE = _OutOfRange()


class _NotJson(ValueError):
    """NaN, Infinity and -Infinity: Python reads them, JSON has no such thing."""


def _refuse_constant(name: str) -> Any:
    raise _NotJson(name)


class _Numbers:
    """`json.loads` hooks for one frame: they note whether a number was refused, so the frame
    is searched for it only then. Integers are converted by the C scanner itself (fast), and
    only a frame it fails on (past Python's 4300 digits) is read again with `parse_int`."""

    def __init__(self) -> None:
        self.refused = False

    def parse_float(self, text: str) -> float | _OutOfRange:
        value = float(text)
        if math.isfinite(value):
            return value
        self.refused = True  # 1e400 parses to inf
        return _OUT_OF_RANGE

    def parse_int(self, text: str) -> int | _OutOfRange:
        try:
            return int(text)
        except ValueError:
            self.refused = True
            return _OUT_OF_RANGE


# Made once: `json.loads` with hooks builds a decoder and its scanner for every call. Frames
# are decoded one at a time, on the event loop's thread, so the hooks' note is reset per frame.
_FLOATS = _Numbers()
_DECODER = json.JSONDecoder(parse_float=_FLOATS.parse_float, parse_constant=_refuse_constant)


def _load(text: str) -> tuple[Any, bool]:
    """The parsed value and whether it holds a refused number (`_OUT_OF_RANGE`)."""
    numbers = _FLOATS
    numbers.refused = False
    try:
        value = _DECODER.decode(text)
    except (json.JSONDecodeError, _NotJson):
        raise
    except ValueError:  # an integer too long to convert: read again to name its field
        numbers = _Numbers()
        value = json.loads(text, parse_float=numbers.parse_float, parse_int=numbers.parse_int,
                           parse_constant=_refuse_constant)
    return value, numbers.refused


def preview(raw: str | bytes) -> str:
    """The start of a refused frame as a string that always encodes (invalid UTF-8 and lone
    surrogates replaced), so an error can echo it without echoing what made it unsafe."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    cut = text[:PREVIEW_CHARS].encode("utf-8", "replace").decode("utf-8")
    return cut + "\u2026" if len(text) > PREVIEW_CHARS else cut


def depth(text: str) -> int:
    """Nesting depth of valid JSON text, counted without recursion and at C speed: strings
    dropped, then the running sum of +1 per opening and -1 per closing bracket."""
    brackets = _STRING.sub("", text).encode("utf-8", "surrogatepass").translate(None, _OTHERS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _key_holding(frame: Frame, marker: object) -> str | None:
    """The top-level key whose value holds `marker` (depth is already bounded)."""
    for key, value in frame.items():
        stack = [value]
        while stack:
            item = stack.pop()
            if item is marker:
                return key
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.values())
    return None


def decode_frame(raw: str | bytes) -> Frame:
    """One inbound message (text or binary, docs/mailbox-protocol.md §2.4) as a JSON object, or
    `FrameRefused` (§3.1)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value, refused = _load(text)
    except RecursionError:  # the C scanner guards its own recursion; far deeper than allowed
        raise FrameRefused(ErrorKind.TOO_DEEP, _too_deep(), preview(raw)) from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
        raise FrameRefused(ErrorKind.MALFORMED, "message is not valid JSON",
                           preview(raw)) from None
    if text.count("[") + text.count("{") > MAX_DEPTH and depth(text) > MAX_DEPTH:
        raise FrameRefused(ErrorKind.TOO_DEEP, _too_deep(), preview(raw))
    if not isinstance(value, dict):
        raise FrameRefused(ErrorKind.MALFORMED, "message must be a JSON object",
                           preview(raw) if refused else value)
    if refused:
        key = _key_holding(value, _OUT_OF_RANGE)
        raise FrameRefused(ErrorKind.OUT_OF_RANGE, f"'{key}' contains a number out of range",
                           preview(raw))
    return value


def _too_deep() -> str:
    return f"message is nested too deeply (at most {MAX_DEPTH} levels)"


# -- fields ---------------------------------------------------------------------------------------


def check_string(value: object, key: str) -> str:
    """`value` as the string field `key` (a key of `RULES`), or a `ProtocolError` naming the
    field (or the rule's own error, where the protocol has one)."""
    if not isinstance(value, str):
        raise malformed(f"'{key}' must be a string")
    rule = RULES[key]
    try:
        return _bounded(value, key, rule)
    except ProtocolError:
        if rule.error is None:
            raise
        raise ProtocolError(rule.error_kind, rule.error) from None


def _bounded(value: str, key: str, rule: Rule) -> str:
    if len(value) > rule.max_chars:
        raise ProtocolError(ErrorKind.TOO_LONG,
                            f"'{key}' is too long (at most {rule.max_chars} characters)")
    return _storable(value, key, identifier=rule.identifier)


def _storable(value: str, key: str, *, identifier: bool) -> str:
    """PostgreSQL text holds no NUL and only valid UTF-8 (no lone surrogates)."""
    if identifier and _CONTROL.search(value):
        raise _characters(f"'{key}' must not contain control characters")
    if "\x00" in value:
        raise _characters(f"'{key}' must not contain NUL characters")
    if _SURROGATE.search(value):
        raise _characters(f"'{key}' must be valid Unicode")
    return value


def _characters(text: str) -> ProtocolError:
    return ProtocolError(ErrorKind.BAD_CHARACTERS, text)


def required(frame: Frame, key: str, missing: str) -> str:
    """A string field the command needs; `missing` is the protocol's text when it is absent
    (docs/mailbox-protocol.md §9.1)."""
    return check_string(present(frame, key, missing), key)


def present(frame: Frame, key: str, missing: str) -> str:
    """Only presence and type, for a field whose other checks come later in the protocol's
    order (`claim`: "only one claim per connection" comes before "invalid nameplate")."""
    if key not in frame:
        raise malformed(missing)
    value = frame[key]
    if not isinstance(value, str):
        raise malformed(f"'{key}' must be a string")
    return value


def optional(frame: Frame, key: str) -> str | None:
    """A string field that may be absent or null."""
    value = frame.get(key)
    return None if value is None else check_string(value, key)


def client_version(frame: Frame) -> tuple[str | None, str | None]:
    """`bind`'s optional [implementation, version]: strings (numbers are taken as text, extra
    items ignored, as the reference does)."""
    value = frame.get("client_version")
    if value is None:
        return None, None
    shape = "'client_version' must be a list of [implementation, version]"
    if not isinstance(value, list) or len(value) < 2:
        raise malformed(shape)
    parts: list[str | None] = []
    for item in value[:2]:
        if item is None:
            parts.append(None)
        elif isinstance(item, (str, int, float)) and not isinstance(item, bool):
            parts.append(check_string(str(item), "client_version"))
        else:
            raise malformed(shape)
    return parts[0], parts[1]


def message_id(frame: Frame) -> Any:
    """A command's `id` (any JSON, docs/mailbox-protocol.md §3.4), small and storable in jsonb:
    it is echoed in every ack and stored with every message. Numbers are already finite and
    short (`decode_frame`)."""
    value = frame.get("id")
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if len(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) > MAX_ID_CHARS:
        raise ProtocolError(ErrorKind.TOO_LONG,
                            f"'id' is too long (at most {MAX_ID_CHARS} characters as JSON)")
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _storable(item, "id", identifier=False)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return value
