"""`MAILBOX_WORKERS=2`: one supervisor, two worker processes on one port, as operators run it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from wormhole_mailbox.steering import worker_for

from tests.support.mailbox import Client
from tests.support.metrics import Page, http_get
from tests.support.postgres import free_port
from tests.support.processes import ServiceProcess
from tests.support.websocket import open_websocket

LIMIT = 30


def children(pid: int) -> set[int]:
    """Child processes of every thread (trio starts processes from a worker thread)."""
    return {int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(
        f"/proc/{pid}/status").read_text()


def wait_until(condition: object, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def group(database_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    port = free_port()
    service = ServiceProcess(
        "wormhole-mailbox",
        {"MAILBOX_DATABASE_URL": database_url, "MAILBOX_HOST": "127.0.0.1",
         "MAILBOX_PORT": str(port), "MAILBOX_METRICS_HOST": "127.0.0.1",
         "MAILBOX_METRICS_PORT": str(free_port()), "MAILBOX_WORKERS": "2"},
        port, tmp_path / "mailbox.log",
    )
    service.start()
    assert service.proc is not None
    wait_until(lambda: len(children(service.proc.pid)) == 2, "two workers")
    try:
        yield service
    finally:
        if service.proc.poll() is None:
            service.stop()


def metrics_port(service: ServiceProcess) -> int:
    return int(service.env["MAILBOX_METRICS_PORT"])


async def wait_ready(service: ServiceProcess) -> None:
    while (await http_get(metrics_port(service), "/readyz"))[0] != 200:  # noqa: ASYNC110
        await trio.sleep(0.05)


def source_on(worker: int) -> str:
    """A loopback address whose connections worker `worker` (of 2) serves."""
    return next(source for source in (f"127.0.0.{i}" for i in range(2, 255))
                if worker_for(source, 2) == worker)


async def exchange(port: int, appid: str) -> None:
    """Two clients, one on each worker, swap messages (through PostgreSQL's NOTIFY)."""
    async with open_websocket(port, "/v1", source=source_on(0)) as wa, \
            open_websocket(port, "/v1", source=source_on(1)) as wb:
        a, b = Client(wa), Client(wb)
        for c in (a, b):
            assert (await c.recv())["type"] == "welcome"
        await a.bind("aaaa", appid)
        await b.bind("bbbb", appid)
        name = (await a.command(type="allocate"))["nameplate"]
        mailbox = (await a.command(type="claim", nameplate=name))["mailbox"]
        assert (await b.command(type="claim", nameplate=name))["mailbox"] == mailbox
        await a.ack_only(type="open", mailbox=mailbox)
        await b.ack_only(type="open", mailbox=mailbox)
        await a.ack_only(type="add", phase="pake", body="a1", id="1")
        assert (await b.recv_type("message"))["body"] == "a1"
        await b.ack_only(type="add", phase="pake", body="b1", id="2")
        assert [m["body"] for m in [await a.recv_type("message"), await a.recv_type("message")]
                ] == ["a1", "b1"]


async def test_workers_serve_one_port_and_one_metrics_page(group: ServiceProcess) -> None:
    with trio.fail_after(LIMIT):
        await wait_ready(group)
        for round_ in range(6):
            await exchange(group.port, f"app{round_}")
        status, body = await http_get(metrics_port(group), "/metrics")
    assert status == 200
    page = Page(body.decode())
    assert page.value("wormhole_mailbox_workers") == 2
    assert page.value("wormhole_mailbox_worker_restarts_total") == 0
    for worker in ("0", "1"):
        assert ("wormhole_mailbox_connections_open", frozenset({("worker", worker)})) \
            in page.samples
    accepted = [page.value("wormhole_mailbox_connections_total", kind="websocket",
                           worker=worker) for worker in ("0", "1")]
    assert accepted == [6, 6]  # each address to its worker


async def test_a_killed_worker_is_restarted_and_the_group_keeps_serving(
    group: ServiceProcess,
) -> None:
    assert group.proc is not None
    before = children(group.proc.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(children(group.proc.pid) - before) == 1, "a new worker")  # type: ignore[union-attr]
    with trio.fail_after(LIMIT):
        await wait_ready(group)
        await exchange(group.port, "after")
        _, body = await http_get(metrics_port(group), "/metrics")
    assert Page(body.decode()).value("wormhole_mailbox_worker_restarts_total") == 1
    assert "worker 0 exited with SIGKILL; restarting it" in group.output() or \
        "worker 1 exited with SIGKILL; restarting it" in group.output()


def test_sigterm_stops_every_worker_and_exits_0(group: ServiceProcess) -> None:
    assert group.proc is not None
    workers = children(group.proc.pid)
    assert group.stop(timeout=20) == 0
    assert not any(alive(pid) for pid in workers)
    assert "mailbox workers stopped" in group.output()


def test_workers_stop_when_the_supervisor_is_killed(group: ServiceProcess) -> None:
    assert group.proc is not None
    workers = children(group.proc.pid)
    group.proc.kill()
    group.proc.wait()
    wait_until(lambda: not any(alive(pid) for pid in workers), "orphaned workers to stop")
    assert "is gone; stopping" in group.output()
