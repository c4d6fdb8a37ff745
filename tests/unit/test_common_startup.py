"""How expected start-up failures become one line and an exit status (no sockets here)."""

from __future__ import annotations

import psycopg
import pytest
from wormhole_common.database import DatabaseUnavailable
from wormhole_common.lifecycle import explain
from wormhole_common.startup import StartupError, failure_reason, is_refusal

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


@pytest.mark.parametrize(("message", "refused"), [
    ('connection failed: connection to server at "h", port 5432 failed: FATAL:  password'
     ' authentication failed for user "u"', True),
    ('connection failed: connection to server at "h", port 5432 failed: FATAL:  database "x"'
     " does not exist", True),
    ('connection failed: connection to server at "h", port 5432 failed: FATAL:  role "x" does'
     " not exist", True),
    ('connection failed: connection to server at "h", port 5432 failed: FATAL:  no pg_hba.conf'
     ' entry for host "10.0.0.1", user "u", database "x", no encryption', True),
    ('connection failed: connection to server at "h", port 5432 failed: fe_sendauth: no'
     " password supplied", True),
    ('connection failed: connection to server at "h", port 5432 failed: Connection refused\n'
     "\tIs the server running on that host and accepting TCP/IP connections?", False),
    ("connection failed: timeout expired", False),
])
def test_refusals_are_told_from_unreachable_servers(message: str, refused: bool) -> None:
    assert is_refusal(psycopg.OperationalError(message)) is refused


def test_failure_reason_is_the_first_line_without_the_preamble() -> None:
    error = psycopg.OperationalError(
        'connection failed: connection to server at "h", port 1 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?")
    assert failure_reason(error) == 'connection to server at "h", port 1 failed: Connection refused'
