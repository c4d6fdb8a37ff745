"""Rules that live in SQL, with explicit values: choosing a nameplate to allocate
(docs/mailbox-protocol.md §5.6) and usage records: results, times and blurring (§7).

One migrated database for the module; each test uses an app of its own.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import trio
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb
from wormhole_common.database import Database
from wormhole_common.migrations import migrate
from wormhole_mailbox.core.ops import Allocate
from wormhole_mailbox.core.usage import MailboxUsage, NameplateUsage, from_sql
from wormhole_mailbox.store import Store

_apps = itertools.count()


@pytest.fixture(scope="module")
def url(server_database_url: str) -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_database_url)
    params["dbname"] = name
    url = make_conninfo(**params)

    async def migrated() -> None:
        db = Database(url, size=2)
        try:
            await migrate(db, "mailbox", "wormhole_mailbox")
        finally:
            db.close()

    trio.run(migrated)
    yield url
    with psycopg.connect(server_database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def conn(url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def value(conn: psycopg.Connection, sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


# -- allocation --------------------------------------------------------------------------------


def names(low: int, high: int) -> set[str]:
    return {str(n) for n in range(low, high + 1)}


def app_with(conn: psycopg.Connection, taken: set[str]) -> str:
    """A new app whose nameplates are `taken`."""
    app = f"app{next(_apps)}"
    conn.execute("INSERT INTO mailboxes (app_id, id, for_nameplate, updated)"
                 " SELECT %s, 'm' || n, true, 0 FROM unnest(%s::text[]) AS n", (app, list(taken)))
    conn.execute("INSERT INTO nameplates (app_id, name, mailbox_id)"
                 " SELECT %s, n, 'm' || n FROM unnest(%s::text[]) AS n", (app, list(taken)))
    return app


def picks(conn: psycopg.Connection, app: str, n: int, wide_high: int = 999_999) -> list[str]:
    rows = conn.execute("SELECT mb_choose_nameplate(%s, %s) FROM generate_series(1, %s)",
                        (app, wide_high, n)).fetchall()
    return [row[0] for row in rows]


def test_a_fresh_app_gets_one_digit_uniformly(conn: psycopg.Connection) -> None:
    counts = Counter(picks(conn, app_with(conn, set()), 9000))
    assert set(counts) == names(1, 9)
    assert all(800 < c < 1200 for c in counts.values()), counts


def test_only_free_numbers_are_picked(conn: psycopg.Connection) -> None:
    app = app_with(conn, names(1, 9) - {"4", "8"})
    assert set(picks(conn, app, 100)) == {"4", "8"}


def test_the_tenth_gets_two_digits_then_three(conn: psycopg.Connection) -> None:
    two = picks(conn, app_with(conn, names(1, 9)), 500)
    assert set(two) <= names(10, 99) and len(set(two)) > 50  # spread over the width
    assert set(picks(conn, app_with(conn, names(1, 99)), 50)) <= names(100, 999)


def test_zero_and_leading_zero_names_do_not_count_as_taken(conn: psycopg.Connection) -> None:
    assert set(picks(conn, app_with(conn, {"0", "01", "001"}), 20)) <= names(1, 9)


def test_the_wide_range_after_999_then_none(conn: psycopg.Connection) -> None:
    app = app_with(conn, names(1, 999))
    wide = picks(conn, app, 50)
    assert all(1000 <= int(name) <= 999_999 for name in wide)
    assert picks(conn, app, 1, wide_high=1000) == ["1000"]
    full = app_with(conn, names(1, 1000))
    assert picks(conn, full, 1, wide_high=1000) == [None]  # 1,000 picks, all taken


async def test_allocations_in_one_batch_get_distinct_names(url: str) -> None:
    db = Database(url, size=2)
    try:
        with trio.fail_after(30):
            results, _ = await Store(blur_seconds=None).execute(
                db, [Allocate("batch-app", f"s{i}", 1.0) for i in range(10)])
    finally:
        db.close()
    assert set(results[:9]) == names(1, 9)  # type: ignore[comparison-overlap]
    assert str(results[9]) in names(10, 99)


# -- usage records -----------------------------------------------------------------------------


@pytest.mark.parametrize(("t", "period", "expected"), [
    (7199.9, 3600, 3600), (7200.0, 3600, 7200), (1_700_000_123.25, 60, 1_700_000_100),
    (1234.5678, None, 1234.5678), (1234.5678, 0, 1234.5678),
])
def test_blur_rounds_down(conn: psycopg.Connection, t: float, period: float | None,
                          expected: float) -> None:
    assert value(conn, "SELECT mb_blur(%s, %s)", t, period) == expected


@pytest.mark.parametrize(("added", "now", "expected"), [
    ([100.0], 130.0, (100.0, None, 30.0)),
    ([105.0, 100.0, 103.0], 110.0, (100.0, 3.0, 10.0)),  # the two earliest, in any order
    ([], 50.0, (50.0, None, 0.0)),  # no side: started now
])
def test_times(conn: psycopg.Connection, added: list[float], now: float,
               expected: tuple[float, float | None, float]) -> None:
    row = conn.execute("SELECT * FROM mb_usage_times(mb_summary_added(%s), %s, NULL)",
                       (Jsonb({"added": added}), now)).fetchone()
    assert row == expected


@pytest.mark.parametrize(("sides", "pruned", "crowded", "expected"), [
    (1, False, False, "lonely"), (2, False, False, "happy"), (1, True, False, "pruney"),
    (2, True, False, "pruney"), (3, False, False, "crowded"), (3, True, False, "crowded"),
    (2, False, True, "crowded"), (2, True, True, "crowded"),
])
def test_nameplate_result(conn: psycopg.Connection, sides: int, pruned: bool, crowded: bool,
                          expected: str) -> None:
    assert value(conn, "SELECT mb_nameplate_result(%s, %s, %s)",
                 sides, pruned, crowded) == expected


@pytest.mark.parametrize(("moods", "pruned", "crowded", "expected"), [
    ([], False, False, "quiet"),
    ([None], False, False, "lonely"),
    (["happy"], False, False, "lonely"),
    (["happy", "happy"], False, False, "happy"),
    ([None, None], False, False, "happy"),
    (["happy", "whatever"], False, False, "happy"),
    (["happy", "lonely"], False, False, "lonely"),
    (["lonely", "errory"], False, False, "errory"),
    (["errory", "lonely"], False, False, "errory"),
    (["scary", "errory"], False, False, "scary"),
    (["lonely", "scary"], False, False, "scary"),
    (["errory"], False, False, "errory"),
    (["scary", "scary"], True, False, "pruney"),
    ([None], True, False, "pruney"),
    (["scary", "happy"], True, True, "crowded"),
    (["happy", "happy", "happy"], False, False, "crowded"),
    (["happy", "happy"], False, True, "crowded"),
])
def test_mailbox_result_precedence(conn: psycopg.Connection, moods: list[str | None],
                                   pruned: bool, crowded: bool, expected: str) -> None:
    assert value(conn, "SELECT mb_mailbox_result(%s::text[], %s, %s)",
                 moods, pruned, crowded) == expected


def record(conn: psycopg.Connection, kind: str, summary: dict[str, Any], now: float, *,
           pruned: bool, blur: float | None) -> NameplateUsage | MailboxUsage:
    """The record a function returns (its app left out), checked against the row it wrote."""
    app = f"app{next(_apps)}"
    written = from_sql(value(conn, f"SELECT mb_record_{kind}(%s, %s, %s, %s, %s)",
                             app, Jsonb(summary), now, pruned, blur))
    table = "usage_nameplates" if kind == "nameplate" else "usage_mailboxes"
    columns = "app_id, started, waiting_time, total_time, result"
    if kind == "mailbox":
        columns = "app_id, for_nameplate, started, waiting_time, total_time, result"
    row = conn.execute(f"SELECT {columns} FROM {table} WHERE app_id = %s", (app,)).fetchone()
    assert row is not None and from_sql([kind[0], *row]) == written
    return dataclasses.replace(written, app_id="")


def test_nameplate_records(conn: psycopg.Connection) -> None:
    assert record(conn, "nameplate", {"added": [1000.5, 1010.0], "crowded": False}, 1100.0,
                  pruned=False, blur=None) == NameplateUsage("", 1000.5, 9.5, 99.5, "happy")
    # blurring rounds the start only
    assert record(conn, "nameplate", {"added": [3700.5]}, 3800.0, pruned=True,
                  blur=3600) == NameplateUsage("", 3600, None, 99.5, "pruney")


def test_mailbox_records(conn: psycopg.Connection) -> None:
    summary = {"added": [4.0, 10.0], "moods": ["scary", "happy"], "for_nameplate": True}
    assert record(conn, "mailbox", summary, 20.0, pruned=False,
                  blur=None) == MailboxUsage("", True, 4.0, 6.0, 16.0, "scary")
    summary = {"added": [125.0], "moods": ["errory"], "for_nameplate": False}
    assert record(conn, "mailbox", summary, 125.0, pruned=False,
                  blur=60) == MailboxUsage("", False, 120, None, 0.0, "errory")
    # a mailbox without sides (the summary of `mb_retire_mailbox` then) still gets a record
    summary = {"added": [None], "moods": [None], "for_nameplate": True, "crowded": False}
    assert record(conn, "mailbox", summary, 50.0, pruned=True,
                  blur=None) == MailboxUsage("", True, 50.0, None, 0.0, "pruney")
