"""Why a connection to PostgreSQL failed, by SQLSTATE rather than by libpq's words.

libpq reports a failed connection as text only, in the server's language (`lc_messages`), so
a refusal cannot be told from an outage by reading it. After a failed connect, `probe` opens
one more connection itself and sends the startup message: the server's first answer is either
an error with its SQLSTATE (a refused address, a missing database under trust, a server still
starting) or a request for a password, which says that the failure came once the server had
heard who we are, at authentication or just after: a refusal. The reading of the answer
(`classify`) is sans-IO.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping
from enum import Enum

PROTOCOL_3_0 = 196608
# Server states that pass by themselves: starting up or shutting down (57P03), too many
# connections (53300), and the connection failures of class 08.
_TRANSIENT = ("57P03", "53300", "08")


class Verdict(Enum):
    REFUSED = "refused"  # who we are or what we asked for: retrying cannot help
    TRANSIENT = "transient"  # unreachable, starting, busy: retrying may help


def startup_message(user: str, database: str) -> bytes:
    body = struct.pack("!I", PROTOCOL_3_0)
    for key, value in (("user", user), ("database", database)):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def messages(data: bytes) -> list[tuple[bytes, bytes]]:
    """The whole backend messages (type, payload) at the start of `data`."""
    found = []
    while len(data) >= 5:
        length = struct.unpack("!I", data[1:5])[0]
        if length < 4 or len(data) < 1 + length:
            break
        found.append((data[:1], data[5:1 + length]))
        data = data[1 + length:]
    return found


def error_fields(payload: bytes) -> dict[str, str]:
    fields = {}
    for item in payload.split(b"\0"):
        if item:
            fields[chr(item[0])] = item[1:].decode("utf-8", "replace")
    return fields


def classify(data: bytes) -> Verdict | None:
    """What the server's first messages say; None while they say nothing yet."""
    for kind, payload in messages(data):
        if kind == b"E":
            sqlstate = error_fields(payload).get("C", "")
            transient = sqlstate.startswith(_TRANSIENT) or not sqlstate
            return Verdict.TRANSIENT if transient else Verdict.REFUSED
        if kind == b"R" and len(payload) >= 4:
            if struct.unpack("!I", payload[:4])[0] != 0:
                return Verdict.REFUSED  # it wants a password: the failure was at or after it
            continue  # trusted: an error may follow
        if kind == b"Z":
            return Verdict.TRANSIENT  # it let us in: what failed was not a refusal
    return None


def probe(params: Mapping[str, str], timeout: float) -> Verdict:
    """Ask the server in `params` (libpq's keys: host, port, user, dbname) who it thinks we
    are; TRANSIENT if it cannot be reached or says nothing in time."""
    host = params.get("host") or "/var/run/postgresql"
    port = int(params.get("port") or 5432)
    user = params.get("user") or ""
    if "," in host or not user:
        return Verdict.TRANSIENT  # several hosts, or the user libpq would guess: not ours
    try:
        if host.startswith("/"):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(timeout)
            sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            sock = socket.create_connection((host, port), timeout=timeout)
        with sock:
            sock.sendall(startup_message(user, params.get("dbname") or user))
            data = b""
            while (verdict := classify(data)) is None:
                chunk = sock.recv(8192)
                if not chunk:
                    return Verdict.TRANSIENT
                data += chunk
            return verdict
    except OSError:
        return Verdict.TRANSIENT
