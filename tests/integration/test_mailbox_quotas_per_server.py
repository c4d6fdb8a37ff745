"""Per-address caps and rates, and the total, hold for the whole server with `MAILBOX_WORKERS=2`:
each address steered to one worker (the default), or each worker enforcing its share where
the workers share the port (behind a trusted proxy, or `MAILBOX_WORKERS_BY_ADDRESS=false`).
Real processes on real sockets; 127.0.0.0/8 gives the clients many source addresses."""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from wormhole_mailbox.steering import Address, steered_sockets, worker_for

from tests.integration.test_mailbox_workers import children, metrics_port, wait_ready, wait_until
from tests.support.mailbox import Client
from tests.support.metrics import Page, http_get
from tests.support.postgres import free_port
from tests.support.processes import ServiceProcess
from tests.support.websocket import open_websocket

LIMIT = 60  # absolute bound on one test's I/O
UPGRADE = (b"GET /v1 HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
SOURCES = [f"127.0.0.{i}" for i in range(2, 60)]
STEERED = "each client address served by one of them"
DIVIDED = "per-address limits divided among them"
MODES = {"steered": {}, "proxy": {"MAILBOX_TRUSTED_PROXIES": "192.0.2.0/24"},
         "off": {"MAILBOX_WORKERS_BY_ADDRESS": "false"}}


def on_worker(index: int) -> list[str]:
    return [source for source in SOURCES if worker_for(source, 2) == index]


def start_group(database_url: str, tmp_path: Path, **env: str) -> ServiceProcess:
    port = free_port()
    service = ServiceProcess(
        "wormhole-mailbox",
        {"MAILBOX_DATABASE_URL": database_url, "MAILBOX_HOST": "127.0.0.1",
         "MAILBOX_PORT": str(port), "MAILBOX_METRICS_HOST": "127.0.0.1",
         "MAILBOX_METRICS_PORT": str(free_port()), "MAILBOX_WORKERS": "2", **env},
        port, tmp_path / "mailbox.log",
    )
    service.start()
    assert service.proc is not None
    wait_until(lambda: len(children(service.proc.pid)) == 2, "two workers")  # type: ignore[union-attr]
    return service


@pytest.fixture
def groups(database_url: str, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    """Start groups with `groups.append(start_group(...))`; each is stopped afterwards."""
    started: list[ServiceProcess] = []
    try:
        yield started
    finally:
        for service in started:
            if service.proc is not None and service.proc.poll() is None:
                service.stop(timeout=20)


async def attempt(port: int, source: str) -> trio.SocketStream | None:
    """An upgrade from `source`: the open stream if it got its 101, else None (a 503)."""
    target = "::1" if ":" in source else "127.0.0.1"
    stream = await trio.open_tcp_stream(target, port, local_address=source)
    await stream.send_all(UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some()
        if not chunk:
            break
        head += chunk
    status = head.split(b" ", 2)[1]
    if status == b"101":
        return stream
    assert status == b"503", head
    await stream.aclose()
    return None


@asynccontextmanager
async def holding(port: int, sources: list[str]) -> AsyncIterator[list[trio.SocketStream]]:
    """One attempt from each of `sources` in turn; the admitted ones held open."""
    async with AsyncExitStack() as stack:
        held = []
        for source in sources:
            stream = await attempt(port, source)
            if stream is not None:
                held.append(await stack.enter_async_context(stream))
        yield held


async def allocations(port: int, source: str, count: int) -> int:
    """`count` connections from `source`, each binding and allocating once: how many got a
    nameplate (the others got the rate's error)."""
    allocated = 0
    for i in range(count):
        async with open_websocket(port, "/v1", source=source) as ws:
            client = Client(ws)
            assert (await client.recv())["type"] == "welcome"
            await client.bind(f"side{i}")
            answer = await client.command(type="allocate")
            if answer["type"] == "allocated":
                allocated += 1
            else:
                assert answer["error"] == (
                    "too many allocations from your address; try again in a minute")
    return allocated


@pytest.mark.parametrize("mode", list(MODES))
async def test_one_address_holds_at_most_the_cap_of_the_server(
    database_url: str, tmp_path: Path, groups: list[ServiceProcess], mode: str,
) -> None:
    group = start_group(database_url, tmp_path, MAILBOX_MAX_CONNECTIONS_PER_IP="10",
                        **MODES[mode])
    groups.append(group)
    assert (STEERED if mode == "steered" else DIVIDED) in group.output()
    with trio.fail_after(LIMIT):
        await wait_ready(group)
        async with holding(group.port, ["127.0.0.5"] * 30) as held, \
                holding(group.port, ["127.0.0.5"] * 10) as retried, \
                holding(group.port, ["127.0.0.6"]) as other:
            if mode == "steered":
                assert (len(held), len(retried)) == (10, 0)
            else:  # each worker admits 5: 10 once the kernel gave each worker 5 or more
                assert 5 <= len(held) + len(retried) <= 10
            assert len(other) == 1


@pytest.mark.parametrize("mode", ["steered", "proxy"])
async def test_one_address_gets_at_most_the_allocation_rate_of_the_server(
    database_url: str, tmp_path: Path, groups: list[ServiceProcess], mode: str,
) -> None:
    group = start_group(database_url, tmp_path, MAILBOX_ALLOCATIONS_PER_MINUTE="6",
                        **MODES[mode])
    groups.append(group)
    with trio.fail_after(LIMIT):
        await wait_ready(group)
        started = time.monotonic()
        allocated = await allocations(group.port, "127.0.0.7", 16)
        refilled = int((time.monotonic() - started) * 6 / 60)  # what the rate adds meanwhile
    assert allocated <= 6 + refilled
    if mode == "steered":
        assert allocated >= 6


async def test_each_address_is_served_by_the_worker_the_program_names(
    database_url: str, tmp_path: Path, groups: list[ServiceProcess],
) -> None:
    """On the default dual-stack socket (::): IPv4 clients, and one IPv6 client."""
    group = start_group(database_url, tmp_path, MAILBOX_HOST="::")
    groups.append(group)
    assert STEERED in group.output()
    first, second = on_worker(0)[:3], on_worker(1)[:5]
    (first if worker_for("::1", 2) == 0 else second).append("::1")
    with trio.fail_after(LIMIT):
        await wait_ready(group)
        async with holding(group.port, first + second) as held:
            assert len(held) == 9
            _, body = await http_get(metrics_port(group), "/metrics")
    page = Page(body.decode())
    assert [page.value("wormhole_mailbox_connections_open", worker=worker)
            for worker in ("0", "1")] == [len(first), len(second)]


def worker_pid(service: ServiceProcess, index: int) -> int:
    assert service.proc is not None
    for pid in children(service.proc.pid):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if args[args.index(b"--index") + 1] == str(index).encode():
            return pid
    raise AssertionError(f"no worker {index}")


async def test_the_total_is_the_servers_and_a_dead_workers_share_is_given_back(
    database_url: str, tmp_path: Path, groups: list[ServiceProcess],
) -> None:
    group = start_group(database_url, tmp_path, MAILBOX_MAX_CONNECTIONS="8")
    groups.append(group)
    assert group.proc is not None
    first, second = on_worker(0), on_worker(1)
    with trio.fail_after(LIMIT):
        await wait_ready(group)
        async with holding(group.port, first[:4] + second[:4] + second[4:8]) as held:
            assert len(held) == 8  # 4 on each worker; the last 4 refused
        async with holding(group.port, first[:5] + second[:5]) as held:
            assert len(held) == 8  # 5 on worker 0, then 3 on worker 1
            before = children(group.proc.pid)
            os.kill(worker_pid(group, 0), signal.SIGKILL)
            wait_until(lambda: len(children(group.proc.pid) - before) == 1,  # type: ignore[union-attr]
                       "worker 0 restarted")
            # worker 0's 5 connections died with it: worker 1 (holding 3) may take 5 more
            async with holding(group.port, second[5:15]) as more:
                assert len(more) == 5


def test_the_kernel_sends_each_source_to_the_socket_the_program_names() -> None:
    """The steered sockets alone, without a server: where each source's connections land, on
    an IPv4 socket, an IPv6-only one, and a dual-stack one (IPv4 packets on an IPv6 socket)."""
    addresses = [Address(socket.AF_INET, ("127.0.0.1", 0)),
                 Address(socket.AF_INET6, ("::1", 0, 0, 0)),
                 Address(socket.AF_INET6, ("::", 0), dual_stack=True)]
    groups = steered_sockets(addresses, 3)  # groups[worker][address]
    try:
        for sock in (sock for socks in groups for sock in socks):
            sock.setblocking(False)
        ipv4 = [(socket.AF_INET, source, "127.0.0.1") for source in SOURCES]
        cases = {0: ipv4, 1: [(socket.AF_INET6, "::1", "::1")],
                 2: [*ipv4, (socket.AF_INET6, "::1", "::1")]}
        for which, connections in cases.items():
            sockets = [socks[which] for socks in groups]
            port = sockets[0].getsockname()[1]
            for family, source, target in connections:
                for _ in range(2):  # and again: always the same one
                    with socket.socket(family) as client:
                        client.bind((source, 0))
                        client.connect((target, port))
                        ready, _, _ = select.select(sockets, [], [], 10)
                        assert [sockets.index(sock) for sock in ready] == [
                            worker_for(source, 3)]
                        ready[0].accept()[0].close()
    finally:
        for sock in (sock for socks in groups for sock in socks):
            sock.close()
