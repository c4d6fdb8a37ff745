"""The relay handshake line, parsed without I/O (docs/transit-protocol.md §3.2-§3.4 for TCP,
§6.2 for WebSocket).

The grammar is byte-exact: `please relay <64 word chars>[ for side <16 word chars>]\\n`, word
being ASCII `[A-Za-z0-9_]`. TCP delivers a stream, so `HandshakeParser` buffers partial lines
and applies Twisted's `LineReceiver.MAX_LENGTH` rule; WebSocket delivers the line as its first
message, parsed whole by `parse_message`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE = 1024  # Twisted LineReceiver.MAX_LENGTH: longer input is dropped without a reply

OK = b"ok\n"
BAD_HANDSHAKE = b"bad handshake\n"
IMPATIENT = b"impatient\n"

# bytes pattern: \w is ASCII-only, as in the reference.
_LINE = re.compile(rb"please relay (\w{64})(?: for side (\w{16}))?")


@dataclass(frozen=True)
class Handshake:
    """A valid request: `side` is None for the legacy form."""

    token: bytes
    side: bytes | None


@dataclass(frozen=True)
class Accepted:
    handshake: Handshake
    rest: bytes  # bytes after the LF: data sent after the handshake, never discarded


@dataclass(frozen=True)
class Rejected:
    """A complete line that does not match: reply `bad handshake\\n`, then close (errory)."""


@dataclass(frozen=True)
class Overlong:
    """More than MAX_LINE bytes without a line end: close silently (mood `empty`)."""


@dataclass(frozen=True)
class NeedMore:
    pass


Result = Accepted | Rejected | Overlong | NeedMore


def parse_line(line: bytes) -> Handshake | None:
    """One line without its LF; None when it is not a handshake."""
    match = _LINE.fullmatch(line)
    if match is None:
        return None
    return Handshake(token=match.group(1), side=match.group(2))


class HandshakeParser:
    """Feed TCP bytes until the result is not `NeedMore`; only the first line matters.

    A line that arrives whole in one read (every real client) is parsed without copying; a
    split line is buffered and each piece is searched once for the line end.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> Result:
        searched = len(self._buffer)
        if searched:
            data = self._buffer + data
        end = data.find(b"\n", searched)
        if end < 0:
            if len(data) > MAX_LINE:
                return Overlong()
            self._buffer = data
            return NeedMore()
        if end > MAX_LINE:
            return Overlong()
        handshake = parse_line(data[:end])
        if handshake is None:
            return Rejected()
        return Accepted(handshake, data[end + 1 :])


def parse_message(message: bytes) -> Handshake | None:
    """The first WebSocket message: the whole line, its trailing LF optional, nothing else."""
    if message.endswith(b"\n"):
        message = message[:-1]
    return parse_line(message)
