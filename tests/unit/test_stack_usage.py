"""`wormhole-stack usage`: the days it covers and the layout of its tables."""

from __future__ import annotations

from wormhole_stack.usage import DAY, Count, since, size, summary, table


def test_since_is_midnight_utc_of_the_first_of_the_last_days() -> None:
    noon = 20_000 * DAY + DAY / 2
    assert since(noon, 1) == 20_000 * DAY
    assert since(noon, 7) == 19_994 * DAY


def test_sizes_in_binary_units() -> None:
    assert [size(n) for n in (0, 1023, 1024, 300_000, 5 << 30)] == \
        ["0 B", "1023 B", "1.0 KiB", "293.0 KiB", "5.0 GiB"]


def test_one_row_per_day_one_column_per_mood_and_a_total_row() -> None:
    counts = [Count("2026-12-06", "happy", 2), Count("2026-12-07", "happy", 1),
              Count("2026-12-07", "lonely", 3)]
    assert table(counts, ("happy", "lonely", "scary"), with_bytes=False) == [
        "day         total  happy  lonely  scary",
        "2026-12-06      2      2       0      0",
        "2026-12-07      4      1       3      0",
        "all             6      3       3      0",
    ]


def test_moods_beyond_the_known_ones_get_columns_and_bytes_are_summed() -> None:
    counts = [Count("2026-12-07", "happy", 1, 300_000), Count("2026-12-07", "odd", 1, 24)]
    assert table(counts, ("happy",), with_bytes=True) == [
        "day         total  happy  odd    relayed",
        "2026-12-07      2      1    1  293.0 KiB",
    ]


def test_summary_says_when_there_is_nothing_or_no_table() -> None:
    assert summary([], None, 30) == "\n".join([
        "Mailbox: wormhole sessions (usage_mailboxes), last 30 days by day (UTC) and mood:",
        "  none",
        "Relay: connections and bytes relayed (transit_usage), last 30 days by day (UTC) and"
        " mood:",
        "  no such table (the service has not run on this database)",
    ])
