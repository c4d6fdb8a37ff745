"""How expected start-up failures become one line and an exit status (no sockets here)."""

from __future__ import annotations

import gc
import struct

import psycopg
import pytest
import trio
from wormhole_common.database import DatabaseUnavailable
from wormhole_common.lifecycle import explain, run_service
from wormhole_common.pgprobe import PROTOCOL_3_0, Verdict, classify, probe, startup_message
from wormhole_common.startup import StartupError, failure_reason

SHOWN = "MAILBOX_DATABASE_URL=postgresql://u:***@db/x"


def test_a_startup_error_deep_in_exception_groups_keeps_its_line_and_status() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [StartupError("no", 2)])])
    assert explain(group, SHOWN) == ("no", 2)


def test_a_lost_database_names_the_variable() -> None:
    assert explain(ExceptionGroup("g", [DatabaseUnavailable("server closed")]), SHOWN) == (
        f"cannot use the database ({SHOWN}): server closed", 1)


def test_a_port_taken_after_the_check_is_still_one_line() -> None:
    error = OSError(98, "error while attempting to bind on address ('127.0.0.1', 4000):"
                        " address already in use")
    assert explain(ExceptionGroup("g", [error]), SHOWN) == (
        "cannot start: [Errno 98] error while attempting to bind on address ('127.0.0.1',"
        " 4000): address already in use", 1)


def test_a_bug_is_not_explained_away() -> None:
    assert explain(ExceptionGroup("g", [KeyError("x")]), SHOWN) is None


def backend(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def error(sqlstate: str, text: str = "FATAL:  irgendwas auf Deutsch") -> bytes:
    """An ErrorResponse in any language: only its SQLSTATE field is read."""
    return backend(b"E", b"SFATAL\0C" + sqlstate.encode() + b"\0M" + text.encode() + b"\0\0")


AUTH_OK = backend(b"R", struct.pack("!I", 0))


@pytest.mark.parametrize(("answer", "verdict"), [
    (error("28000"), Verdict.REFUSED),  # no pg_hba.conf entry, before any password
    (AUTH_OK + error("3D000"), Verdict.REFUSED),  # trusted, but no such database
    (AUTH_OK + error("28000"), Verdict.REFUSED),  # no such role
    (backend(b"R", struct.pack("!I", 10) + b"SCRAM-SHA-256\0\0"), Verdict.REFUSED),
    (backend(b"R", struct.pack("!I", 5) + b"salt"), Verdict.REFUSED),  # md5: it wants one
    (error("57P03"), Verdict.TRANSIENT),  # starting up or shutting down
    (error("53300"), Verdict.TRANSIENT),  # too many connections
    (AUTH_OK + backend(b"S", b"a\0b\0") + backend(b"Z", b"I"), Verdict.TRANSIENT),
])
def test_refusals_are_told_from_outages_by_sqlstate(answer: bytes, verdict: Verdict) -> None:
    assert classify(answer) is verdict
    assert classify(answer[:-1]) in (None, verdict)  # a message cut short says nothing yet


def test_the_startup_message_names_user_and_database() -> None:
    message = startup_message("u", "db")
    assert struct.unpack("!II", message[:8]) == (len(message), PROTOCOL_3_0)
    assert message[8:] == b"user\0u\0database\0db\0\0"


def test_an_unreachable_server_is_transient() -> None:
    assert probe({"host": "127.0.0.1", "port": "1", "user": "u"}, 1) is Verdict.TRANSIENT


def test_failure_reason_is_the_first_line_without_the_preamble() -> None:
    error = psycopg.OperationalError(
        'connection failed: connection to server at "h", port 1 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?")
    assert failure_reason(error) == 'connection to server at "h", port 1 failed: Connection refused'


def test_what_exists_before_serving_is_kept_out_of_the_cycle_collector() -> None:
    seen: list[int] = []

    async def service(stop: trio.Event) -> None:
        seen.append(gc.get_freeze_count())

    try:
        assert run_service(service) == 0
    finally:
        gc.unfreeze()
    assert seen and seen[0] > 0
