"""`wormhole-stack usage`: the usage records summed by day and mood, read with psycopg.

The summing is SQL; the layout is plain Python (`summary`), tested without a database.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import LiteralString

import psycopg

DAY = 86400
# The outcomes the reference servers define, in their order; others found are added after.
MAILBOX_MOODS = ("happy", "lonely", "scary", "errory", "pruney", "crowded")
RELAY_MOODS = ("happy", "lonely", "redundant", "errory", "jilted")
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


@dataclass(frozen=True)
class Count:
    """Records of one day (UTC, `YYYY-MM-DD`) with one mood, and their bytes (relay)."""

    day: str
    mood: str
    records: int
    octets: int = 0


def since(now: float, days: int) -> float:
    """The start (UTC midnight) of the first of the last `days` days, today included."""
    return (now // DAY - (days - 1)) * DAY


def size(octets: int) -> str:
    value = float(octets)
    for unit in UNITS:
        if value < 1024 or unit == UNITS[-1]:
            return f"{octets} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def table(counts: Sequence[Count], known: Sequence[str], with_bytes: bool) -> list[str]:
    """One row per day (and a total row when there are several), one column per mood."""
    moods = [*known, *sorted({c.mood for c in counts} - set(known))]
    header = ["day", "total", *moods, *(["relayed"] if with_bytes else [])]
    per_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in counts:
        per_day[c.day][c.mood] += c.records
        per_day[c.day]["\0bytes"] += c.octets
    days = sorted(per_day)
    if len(days) > 1:
        for c in counts:
            per_day["all"][c.mood] += c.records
            per_day["all"]["\0bytes"] += c.octets
        days.append("all")
    rows = [header]
    for day in days:
        cells = per_day[day]
        rows.append([day, str(sum(cells[m] for m in moods)), *(str(cells[m]) for m in moods),
                     *([size(cells["\0bytes"])] if with_bytes else [])])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                      for i, cell in enumerate(row)) for row in rows]


def summary(mailbox: Sequence[Count] | None, relay: Sequence[Count] | None, days: int) -> str:
    """The report: mailbox sessions and relay connections per day; None: no such table."""
    parts = []
    for title, counts, moods, with_bytes in (
        ("Mailbox: wormhole sessions (usage_mailboxes)", mailbox, MAILBOX_MOODS, False),
        ("Relay: connections and bytes relayed (transit_usage)", relay, RELAY_MOODS, True),
    ):
        parts.append(f"{title}, last {days} days by day (UTC) and mood:")
        if counts is None:
            parts.append("  no such table (the service has not run on this database)")
        elif not counts:
            parts.append("  none")
        else:
            parts.extend("  " + line for line in table(counts, moods, with_bytes))
    return "\n".join(parts)


QUERIES: dict[str, LiteralString] = {
    "usage_mailboxes": "SELECT to_char(to_timestamp(started) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),"
                       " result, count(*), 0 FROM usage_mailboxes WHERE started >= %s"
                       " GROUP BY 1, 2",
    "transit_usage": "SELECT to_char(to_timestamp(started) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),"
                     " result, count(*), coalesce(sum(total_bytes), 0) FROM transit_usage"
                     " WHERE started >= %s GROUP BY 1, 2",
}


def read_counts(url: str, start: float) -> dict[str, list[Count] | None]:
    """Each usage table's counts since `start`; None for a table that does not exist."""
    result: dict[str, list[Count] | None] = {}
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        for table_name, query in QUERIES.items():
            present = conn.execute("SELECT to_regclass(%s)", (table_name,)).fetchone()
            if present is None or present[0] is None:
                result[table_name] = None
                continue
            rows = conn.execute(query, (start,)).fetchall()
            result[table_name] = [Count(str(day), str(mood), int(n), int(b))
                                  for day, mood, n, b in rows]
    return result
