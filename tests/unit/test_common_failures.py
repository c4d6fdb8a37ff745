"""One log line per kind of failure, a periodic summary, one line on recovery."""

from __future__ import annotations

import logging

import pytest
from wormhole_common.core.failures import FailureLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_an_outage_logs_each_kind_once_then_summaries(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    failures = FailureLog(logging.getLogger("t"), "batch", interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t"):
        for i in range(100):
            clock.now = i * 0.5
            failures.failed("DatabaseUnavailable", "connection refused")
        failures.failed("QueryCanceled", "statement timeout")
        clock.now = 61
        failures.failed("DatabaseUnavailable", "connection refused")
        failures.failed("DatabaseUnavailable", "connection refused")
        failures.succeeded()
        failures.succeeded()
        failures.failed("DatabaseUnavailable", "again")
    assert messages(caplog) == [
        "batch failed (DatabaseUnavailable): connection refused",
        "batch failed (QueryCanceled): statement timeout",
        "batch: 100 more failures in the last 61 s (DatabaseUnavailable: 100)",
        "batch works again after 103 failures",
        "batch failed (DatabaseUnavailable): again",
    ]


def test_nothing_is_logged_while_all_is_well(caplog: pytest.LogCaptureFixture) -> None:
    failures = FailureLog(logging.getLogger("t"), "batch", clock=Clock())
    with caplog.at_level(logging.DEBUG, logger="t"):
        failures.succeeded()
    assert caplog.records == []
