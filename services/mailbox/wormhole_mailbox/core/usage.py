"""Usage records (docs/mailbox-protocol.md §7) as the SQL functions that write them return them.

The rules (timing, results, blurring) live in SQL (`mb_record_nameplate`, `mb_record_mailbox`
in `migrations/0004_one_statement.sql`), next to the rows they write in the same transaction;
the server only counts the committed records in its metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NameplateUsage:
    app_id: str
    started: float
    waiting_time: float | None
    total_time: float
    result: str


@dataclass(frozen=True)
class MailboxUsage:
    app_id: str
    for_nameplate: bool
    started: float
    waiting_time: float | None
    total_time: float
    result: str


# Usage records written by a unit of work; counted as metrics once it has committed.
Records = list[NameplateUsage | MailboxUsage]


def from_sql(record: list[Any]) -> NameplateUsage | MailboxUsage:
    """A record as the SQL returns it: ["n", app, started, waiting, total, result] or
    ["m", app, for_nameplate, started, waiting, total, result]."""
    match record:
        case ["n", str(app), started, waiting, total, str(result)]:
            return NameplateUsage(app, float(started), _seconds(waiting), float(total), result)
        case ["m", str(app), bool(for_nameplate), started, waiting, total, str(result)]:
            return MailboxUsage(app, for_nameplate, float(started), _seconds(waiting),
                                float(total), result)
    raise ValueError(f"not a usage record: {record!r}")


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)
