"""When a client counts as not reading (too slow): explicit `now`, no clock, no socket."""

from __future__ import annotations

import math

from wormhole_mailbox.core.read_clock import ReadClock


def test_the_clock_runs_only_while_something_waits() -> None:
    clock = ReadClock(stall_seconds=60)
    assert clock.deadline() == math.inf
    assert not clock.stalled(1e9)
    clock.took(5)  # a write with nothing waiting starts nothing
    assert clock.deadline() == math.inf
    clock.waiting(100)
    assert clock.deadline() == 160
    assert not clock.stalled(159.9)
    assert clock.stalled(160)
    clock.idle()
    assert not clock.stalled(1000)


def test_a_client_that_keeps_taking_writes_is_never_stalled() -> None:
    """A replay of many pages takes far longer than the stall time in all."""
    clock = ReadClock(stall_seconds=60)
    clock.waiting(0)
    for now in range(50, 3600, 50):  # a write finishes every 50 s, for an hour
        assert not clock.stalled(now)
        clock.took(now)
    assert clock.deadline() == 3550 + 60


def test_waiting_again_does_not_restart_a_running_clock() -> None:
    clock = ReadClock(stall_seconds=60)
    clock.waiting(0)
    clock.waiting(50)  # more frames queued: the client has still taken nothing
    assert clock.stalled(60)


def test_acknowledged_bytes_moving_on_count_as_reading() -> None:
    """One frame's write can take longer than the stall time for a slow reader: its TCP
    acknowledging bytes says it reads."""
    clock = ReadClock(stall_seconds=60)
    clock.waiting(0, acked=1000)
    clock.acked(1000, 59)  # nothing acknowledged
    assert clock.deadline() == 60
    clock.acked(70_000, 60)
    assert clock.deadline() == 120
    clock.acked(70_000, 120)
    assert clock.stalled(120)


def test_without_a_count_of_acknowledged_bytes_only_writes_count() -> None:
    clock = ReadClock(stall_seconds=60)
    clock.waiting(0, acked=None)
    clock.acked(5000, 30)  # the first count seen is a baseline, not progress
    assert clock.deadline() == 60
    clock.acked(None, 40)  # the count is gone (the socket closed)
    clock.acked(9000, 50)
    assert clock.deadline() == 60
