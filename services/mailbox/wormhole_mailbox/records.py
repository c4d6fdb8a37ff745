"""Usage records of retired nameplates and mailboxes, from the summaries the SQL returns."""

from __future__ import annotations

import json
from typing import Any

from wormhole_mailbox.core import usage
from wormhole_mailbox.pipeline import Query

# Usage records written by a unit of work; counted as metrics once it has committed.
Records = list[usage.NameplateUsage | usage.MailboxUsage]

NAMEPLATE_SQL = (
    "INSERT INTO usage_nameplates (app_id, started, waiting_time, total_time, result)"
    " VALUES (%s, %s, %s, %s, %s)"
)
MAILBOX_SQL = (
    "INSERT INTO usage_mailboxes (app_id, for_nameplate, started, waiting_time, total_time,"
    " result) VALUES (%s, %s, %s, %s, %s, %s)"
)


def nameplate(
    app: str, summary: dict[str, Any], now: float, *, pruned: bool, blur_seconds: float | None,
) -> tuple[usage.NameplateUsage, Query]:
    record = usage.nameplate_usage(
        app, summary.get("added") or [now], now, pruned=pruned,
        crowded=bool(summary.get("crowded")), blur_seconds=blur_seconds,
    )
    return record, (NAMEPLATE_SQL, (
        record.app_id, record.started, record.waiting_time, record.total_time, record.result))


def mailbox(
    app: str, summary: dict[str, Any], now: float, *, pruned: bool, blur_seconds: float | None,
) -> tuple[usage.MailboxUsage, Query]:
    added = [t for t in (summary.get("added") or []) if t is not None]
    moods = summary.get("moods") or []
    record = usage.mailbox_usage(
        app, for_nameplate=bool(summary.get("for_nameplate")), added=added,
        moods=moods[: len(added)], now=now, pruned=pruned,
        crowded=bool(summary.get("crowded")), blur_seconds=blur_seconds,
    )
    return record, (MAILBOX_SQL, (
        record.app_id, record.for_nameplate, record.started, record.waiting_time,
        record.total_time, record.result))


# Both kinds of usage row in one statement (a batch's `bulk.run`): their VALUES as JSON arrays.
INSERT_ALL_SQL = (
    "WITH n AS (INSERT INTO usage_nameplates (app_id, started, waiting_time, total_time, result)"
    " SELECT e->>0, (e->>1)::float8, (e->>2)::float8, (e->>3)::float8, e->>4"
    " FROM jsonb_array_elements(%s::jsonb) AS e)"
    " INSERT INTO usage_mailboxes (app_id, for_nameplate, started, waiting_time, total_time,"
    " result) SELECT e->>0, (e->>1)::boolean, (e->>2)::float8, (e->>3)::float8,"
    " (e->>4)::float8, e->>5 FROM jsonb_array_elements(%s::jsonb) AS e"
)


def insert_all(queries: list[Query]) -> Query:
    """The rows of `nameplate` and `mailbox` queries, as one `INSERT_ALL_SQL` query."""
    nameplates = [list(params) for sql, params in queries if sql == NAMEPLATE_SQL]
    mailboxes = [list(params) for sql, params in queries if sql == MAILBOX_SQL]
    return (INSERT_ALL_SQL, (json.dumps(nameplates), json.dumps(mailboxes)))
