"""Worker processes under one supervisor: started, restarted when they die, drained on stop.

A trio service is one thread on one core; to use every core the service runs as several
processes that listen on inherited sockets: one set shared by every worker (the kernel hands
each new connection to whichever worker accepts first, so a busy worker takes fewer), or each
worker's own (a SO_REUSEPORT group, where the kernel or a program attached to it chooses). The
supervisor owns the sockets, so a restarted worker gets the same ones and nothing queued is
lost.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

log = logging.getLogger(__name__)


def available_cpus() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """Half the CPUs, at least one: the mailbox's database (and usually the relay) share the
    machine. Measured on 2 CPUs with PostgreSQL beside it (docs/benchmarks.md), a second
    worker bought 18 % more pairs/s for 21 % more CPU per pair: one worker each for two CPUs
    is the default that never makes a small machine pay more per rendezvous."""
    return max(1, available_cpus() // 2)


@dataclass
class RestartPolicy:
    """How long to wait before restarting a worker that exited on its own.

    A worker that crashes at once is restarted after `first` seconds, doubling up to `cap`
    while it keeps crashing; one that ran for `stable` seconds starts again from `first`.
    """

    first: float = 0.5
    cap: float = 30.0
    stable: float = 60.0
    _delays: dict[int, float] = field(default_factory=dict)

    def delay(self, index: int, started: float, now: float) -> float:
        previous = self._delays.get(index)
        if previous is None or now - started >= self.stable:
            delay = self.first
        else:
            delay = min(previous * 2, self.cap)
        self._delays[index] = delay
        return delay


Command = Callable[[int], Sequence[str]]  # worker index -> argv
Descriptors = Callable[[int], Sequence[int]]  # worker index -> the descriptors it inherits


@dataclass
class Supervisor:
    """Keeps `count` workers running until `stop`; then SIGTERM to each and wait for all."""

    count: int
    command: Command
    pass_fds: Descriptors
    shutdown_seconds: float  # after SIGTERM, how long a worker may take before SIGKILL
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    on_restart: Callable[[int], None] | None = None
    pids: dict[int, int] = field(default_factory=dict)  # index -> pid of the running worker

    async def run(self, stop: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            for index in range(self.count):
                nursery.start_soon(self._keep_running, index, stop)

    async def _keep_running(self, index: int, stop: trio.Event) -> None:
        while not stop.is_set():
            started = trio.current_time()
            code = await self._run_once(index, stop)
            if stop.is_set():
                return
            delay = self.policy.delay(index, started, trio.current_time())
            log.warning("worker %d exited with %s; restarting it in %.1f s",
                        index, _describe(code), delay)
            if self.on_restart is not None:
                self.on_restart(index)
            with trio.move_on_after(delay):
                await stop.wait()

    async def _run_once(self, index: int, stop: trio.Event) -> int:
        process = await trio.lowlevel.open_process(
            list(self.command(index)), pass_fds=tuple(self.pass_fds(index)),
            # Its own session: a terminal's Ctrl-C reaches the supervisor only, which then
            # stops the workers in order instead of all of them at once.
            start_new_session=True, stdin=subprocess.DEVNULL,
        )
        self.pids[index] = process.pid
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stop_when_asked, process, stop)
                code = await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.pids.pop(index, None)
        return code

    async def _stop_when_asked(self, process: trio.Process, stop: trio.Event) -> None:
        await stop.wait()
        await stop_child(f"worker {process.pid}", process, signal.SIGTERM,
                         self.shutdown_seconds)


async def stop_child(name: str, proc: trio.Process, sig: signal.Signals,
                     patience: float) -> int:
    """Send `sig`, wait up to `patience` seconds, then kill (saying so in one line); returns
    the exit status."""
    if proc.returncode is None:
        proc.send_signal(sig)
    with trio.move_on_after(patience):
        return await proc.wait()
    log.warning("%s did not stop within %g s: killing it", name, patience)
    proc.kill()
    return await proc.wait()


def _describe(code: int) -> str:
    if code < 0:
        return signal.Signals(-code).name
    return f"status {code}"


async def exit_when_orphaned(parent: int, stop: trio.Event, interval: float = 1.0) -> None:
    """In a worker: set `stop` once the supervisor is gone (killed without a chance to stop
    us), so no worker outlives its group."""
    # Nothing signals a parent's death without prctl, whose trigger is the forking *thread*
    # (trio forks from a worker thread that may exit): polling is the reliable way.
    while os.getppid() == parent:  # noqa: ASYNC110
        await trio.sleep(interval)
    log.warning("supervisor %d is gone; stopping", parent)
    stop.set()
