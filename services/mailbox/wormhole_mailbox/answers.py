"""What the SQL functions' answers mean: one reading for both ways a batch runs (in one
statement, `bulk`, or op by op, `store`), so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from wormhole_mailbox import records as usage_rows
from wormhole_mailbox.core.errors import ErrorKind
from wormhole_mailbox.core.ops import Add, Close, Message, Page, Refused, Release, Result
from wormhole_mailbox.pipeline import Query
from wormhole_mailbox.records import Records


def claimed(mailbox: Any, error: str | None) -> str | Refused:
    """`mb_claim`: the mailbox of the nameplate, or why not."""
    return Refused.from_sql(error) if error else str(mailbox)


def added(op: Add, seq: int | None, full: bool) -> Message | Refused:
    """`mb_add`: the stored message, or why it was not stored."""
    if full:
        return Refused("mailbox is full", ErrorKind.FULL)
    if seq is None:
        return Refused("mailbox is gone", ErrorKind.GONE)
    return Message(seq, op.side, op.phase, op.body, op.server_rx, op.msg_id)


def opened(error: str | None, page: Any) -> Page | Refused:
    """`mb_open_side`, then the first page (`mb_page`)."""
    return Refused.from_sql(error) if error else paged(page)


def paged(page: Any) -> Page:
    """`mb_page`'s answer: [rows, more]."""
    rows, more = page
    return Page([Message(*row) for row in rows], bool(more))


def released(op: Release, summary: dict[str, Any] | None, blur_seconds: float | None,
             records: Records) -> Query | None:
    """`mb_release`: the usage row of the nameplate it retired, if it did (its record is
    appended to `records`)."""
    if summary is None:
        return None
    record, query = usage_rows.nameplate(op.app, summary, op.now, pruned=False,
                                         blur_seconds=blur_seconds)
    records.append(record)
    return query


def closed(op: Close, error: str | None, retired: dict[str, Any] | None,
           blur_seconds: float | None, records: Records) -> tuple[Result, Query | None]:
    """`mb_close`: the result, and the usage row of the mailbox it retired, if it did."""
    if error:
        return Refused.from_sql(error), None
    if retired is None:
        return None, None
    record, query = usage_rows.mailbox(op.app, retired, op.now, pruned=False,
                                       blur_seconds=blur_seconds)
    records.append(record)
    return None, query
