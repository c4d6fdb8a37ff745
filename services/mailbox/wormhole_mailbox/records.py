"""Usage records of retired nameplates and mailboxes, from the summaries the SQL returns."""

from __future__ import annotations

from typing import Any

from wormhole_mailbox import usage
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
