"""Runs many ops' plans in one transaction, each statement in its own savepoint, so that one
bad op fails alone: the way a batch goes when its one-statement form (`bulk`) was refused.

Each op is a plan, a generator that yields one query at a time and receives its rows. Every
round sends the next query of all unfinished plans in one pipeline, so a batch costs as many
round trips as its longest plan (two or three). A failure makes the server skip the rest of
the pipeline: we roll back to that statement's savepoint (one round trip), fail its op alone,
and send the statements that were skipped again. Statements that failed in the client (a
value that cannot be encoded) fail their op without reaching the server at all. An op
refused for a value it carries (SQLSTATE class 22, or one that cannot be sent) is marked
`value_refused`: the client's error, not the database's.

A failure that says the database itself is in trouble (connection lost, query cancelled by a
timeout or a shutdown, out of resources) is not an op's fault: it is raised, and the caller's
transaction fails as a whole.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import psycopg
from wormhole_common.database import rejects_value, retire

Query = tuple[str, tuple[Any, ...]]
Rows = list[tuple[Any, ...]]
# An op's work: yields queries, receives each one's rows, returns the op's result.
Plan = Generator[Query, Rows, Any]

# SQLSTATE classes that blame the database, not the statement: connection exception, operator
# intervention (statement_timeout, cancel, shutdown), insufficient resources, system error,
# internal error.
_FATAL_CLASSES = ("08", "57", "53", "58", "XX")


@dataclass(frozen=True)
class OpFailed:
    """One op's statement failed; that statement was rolled back and the op abandoned."""

    kind: str  # the exception's class, e.g. "ProgramLimitExceeded", for one log line per kind
    reason: str
    # refused for a value it carried (SQLSTATE class 22, or unsendable): the client's fault
    value_refused: bool = False

    @classmethod
    def of(cls, exc: BaseException) -> OpFailed:
        """A failure of our own code or of the database."""
        return cls(type(exc).__name__, str(exc).strip() or type(exc).__name__)

    @classmethod
    def statement(cls, exc: BaseException) -> OpFailed:
        """The op's statement failed, in the server or before it could be sent."""
        return cls(type(exc).__name__, str(exc).strip() or type(exc).__name__,
                   rejects_value(exc))


@dataclass
class Outcome:
    results: list[Any]
    round_trips: int = 0


def _fatal(conn: psycopg.Connection, exc: psycopg.Error) -> bool:
    idle_in_error = psycopg.pq.TransactionStatus.INERROR
    if conn.broken or conn.closed or conn.info.transaction_status != idle_in_error:
        return True
    return exc.sqlstate is None or exc.sqlstate[:2] in _FATAL_CLASSES


def run_plans(conn: psycopg.Connection, plans: list[Plan], prelude: list[Query]) -> Outcome:
    """Run the plans to completion in the caller's transaction; `prelude` runs first, once.

    Plans are sent in list order in every round. A result is the plan's return value, or
    `OpFailed` if one of its statements (or its own code) failed; the statements it ran in
    earlier rounds stay (an op changes state in one statement only; its others read, or
    write its usage row).
    """
    # psycopg counts a statement as prepared once it has sent the PREPARE; when a pipeline
    # aborts first, it may go on counting it, and every later use of it would fail with
    # "prepared statement does not exist". So this connection prepares nothing more, and the
    # pool closes it after this transaction instead of reusing it.
    conn.prepare_threshold = None
    retire(conn)
    outcome = Outcome([None] * len(plans))
    pending: dict[int, Query] = {}
    for i in range(len(plans)):
        _advance(plans, i, None, pending, outcome)
    first = list(prelude)
    while pending:
        items = sorted(pending.items())
        pending = {}
        while items:
            done, items = _round(conn, first, items, outcome)
            first = []
            for i, rows in done:
                _advance(plans, i, rows, pending, outcome)
    return outcome


def _advance(
    plans: list[Plan], i: int, rows: Rows | BaseException | None, pending: dict[int, Query],
    outcome: Outcome,
) -> None:
    try:
        if isinstance(rows, BaseException):
            plans[i].close()
            outcome.results[i] = OpFailed.statement(rows)
            return
        pending[i] = next(plans[i]) if rows is None else plans[i].send(rows)
    except StopIteration as done:
        outcome.results[i] = done.value
    except Exception as exc:  # the plan's own code failed: that op alone
        outcome.results[i] = OpFailed.of(exc)


def _round(
    conn: psycopg.Connection, prelude: list[Query], items: list[tuple[int, Query]],
    outcome: Outcome,
) -> tuple[list[tuple[int, Rows | BaseException]], list[tuple[int, Query]]]:
    """Send `items` in one pipeline; return what ran and the items to send again."""
    done: list[tuple[int, Rows | BaseException]] = []
    sent: list[tuple[int, psycopg.Cursor[Any]]] = []
    prelude_cursors: list[psycopg.Cursor[Any]] = []
    outcome.round_trips += 1
    try:
        with conn.pipeline():
            prelude_cursors = [conn.execute(sql, params, prepare=False) for sql, params in prelude]
            for i, (sql, params) in items:
                conn.execute("SAVEPOINT op", prepare=False)
                try:
                    sent.append((i, conn.execute(sql, params)))
                except Exception as exc:
                    if isinstance(exc, psycopg.Error) and exc.sqlstate is not None:
                        raise  # an earlier statement's server error, surfacing here
                    done.append((i, exc))  # could not even be sent
                conn.execute("RELEASE SAVEPOINT op", prepare=False)
    except psycopg.Error as exc:
        if _fatal(conn, exc) or any(cur.pgresult is None for cur in prelude_cursors):
            raise
        _roll_back(conn, outcome)
        return _after_failure(exc, items, sent, done)
    return [*done, *((i, _rows(cur)) for i, cur in sent)], []


def _roll_back(conn: psycopg.Connection, outcome: Outcome) -> None:
    outcome.round_trips += 1
    with conn.pipeline():
        conn.execute("ROLLBACK TO SAVEPOINT op", prepare=False)
        conn.execute("RELEASE SAVEPOINT op", prepare=False)


def _after_failure(
    exc: psycopg.Error, items: list[tuple[int, Query]],
    sent: list[tuple[int, psycopg.Cursor[Any]]], done: list[tuple[int, Rows | BaseException]],
) -> tuple[list[tuple[int, Rows | BaseException]], list[tuple[int, Query]]]:
    """The first sent statement without a result failed; the ones after it never ran."""
    failed = next((i for i, cur in sent if cur.pgresult is None), None)
    if failed is None:
        raise exc
    ran = {i for i, cur in sent if cur.pgresult is not None}
    finished = {i for i, _ in done} | ran | {failed}
    results = [(i, _rows(cur)) for i, cur in sent if i in ran]
    again = [(i, query) for i, query in items if i not in finished]
    return [*done, *results, (failed, exc)], again


def _rows(cur: psycopg.Cursor[Any]) -> Rows:
    return cur.fetchall() if cur.description is not None else []
