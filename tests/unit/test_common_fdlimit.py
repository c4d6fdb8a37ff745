"""The open-file limit: raised at start, and connection limits sized from it
(docs/mailbox-protocol.md §2.7)."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
from wormhole_common.core.fdlimit import (
    INFINITE_AS,
    MEMORY_CEILING,
    ConnectionLimits,
    connection_limits,
    target_limit,
    usable,
)

INF = resource.RLIM_INFINITY


def test_target_limit() -> None:
    assert target_limit(1024, 4096) == 4096
    assert target_limit(4096, 4096) is None
    assert target_limit(1024, INF) == INFINITE_AS
    assert target_limit(INF, INF) is None
    assert usable(INF) == INFINITE_AS
    assert usable(1024) == 1024


RAISE_IN_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
from wormhole_common.core.fdlimit import raise_open_file_limit
got = raise_open_file_limit()
print(got, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _run_with_soft_limit(soft: int, hard: int) -> tuple[int, int]:
    """A child process (limits are per process) starting at `soft`, asked to raise it."""
    out = subprocess.run([sys.executable, "-c", RAISE_IN_CHILD, str(soft), str(hard)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    got, now = out.split()
    return int(got), int(now)


def test_a_process_raises_its_soft_limit_to_the_hard_one() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == INF or hard <= 256:
        pytest.skip(f"needs a finite hard limit above 256, have {hard}")
    assert _run_with_soft_limit(256, hard) == (hard, hard)


def test_a_limit_already_at_the_hard_one_is_reported_as_is() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == INF or hard < 512:
        pytest.skip(f"needs a finite hard limit of 512 or more, have {hard}")
    assert _run_with_soft_limit(512, 512) == (512, 512)


def test_at_1024_there_is_room_for_the_database_metrics_and_other_addresses() -> None:
    limits = connection_limits(1024, database_connections=5, per_address=250)
    assert limits == ConnectionLimits(total=1024 - 64 - 5, per_address=238)
    assert limits.total + 64 + 5 == 1024
    assert limits.per_address * 4 <= limits.total


def test_a_high_limit_is_capped_for_memory() -> None:
    limits = connection_limits(1 << 20, database_connections=65, per_address=250)
    assert limits == ConnectionLimits(total=MEMORY_CEILING, per_address=250)
    assert connection_limits(1 << 20, database_connections=5, per_address=250,
                             ceiling=50_000).total == 50_000


def test_a_tiny_limit_still_serves_some_clients() -> None:
    assert connection_limits(100, database_connections=5, per_address=250) == ConnectionLimits(
        total=50, per_address=12)
    assert connection_limits(2, database_connections=5, per_address=250) == ConnectionLimits(
        total=1, per_address=1)
