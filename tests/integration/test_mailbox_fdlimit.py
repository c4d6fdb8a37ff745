"""The mailbox as a process with a small open-file limit (256): it sizes its connection limits
from the limit it got, so a flood of connections never runs it out of descriptors. One
address gets at most a quarter of the connections and another is still served; past the total
new connections get 503; `/readyz` and `/metrics` answer throughout; no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from tests.support.metrics import http_get
from tests.support.postgres import free_port
from tests.support.processes import wait_for_port

OPEN_FILES = 256
# fdlimit.connection_limits(256, database_connections=4 + 2): 256 - 70 reserved; a quarter each
TOTAL = OPEN_FILES - 64 - 6
PER_ADDRESS = TOTAL // 4
UPGRADE = (b"GET /v1 HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


# The mailbox's __main__ with soft = hard = OPEN_FILES (so there is nothing to raise).
SMALL_LIMIT = (f"import resource, runpy; resource.setrlimit(resource.RLIMIT_NOFILE,"
               f" ({OPEN_FILES}, {OPEN_FILES})); runpy.run_module('wormhole_mailbox',"
               f" run_name='__main__')")


@contextmanager
def mailbox(database_url: str, tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "MAILBOX_DATABASE_URL": database_url, "MAILBOX_HOST": "127.0.0.1",
           "MAILBOX_PORT": str(port), "MAILBOX_METRICS_HOST": "127.0.0.1",
           "MAILBOX_METRICS_PORT": str(metrics_port), "MAILBOX_WORKERS": "1"}
    log = tmp_path / "mailbox.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", SMALL_LIMIT], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc=proc)
        wait_for_port(metrics_port, proc=proc)
        yield port, metrics_port, log
    finally:
        proc.terminate()
        proc.wait(20)


async def connect(port: int, source: str) -> tuple[int, trio.SocketStream]:
    """An upgrade from `source`: the status and the stream (left open)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    await stream.send_all(UPGRADE)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = await stream.receive_some()
        assert chunk, answer
        answer += chunk
    return int(answer.split(b" ", 2)[1]), stream


async def flood(port: int, source: str, count: int, held: list[trio.SocketStream]) -> list[int]:
    statuses = []
    for _ in range(count):
        status, stream = await connect(port, source)
        statuses.append(status)
        if status == 101:
            held.append(stream)
        else:
            await stream.aclose()
    return statuses


async def test_a_flood_never_runs_the_mailbox_out_of_descriptors(
    database_url: str, tmp_path: Path,
) -> None:
    held: list[trio.SocketStream] = []
    with mailbox(database_url, tmp_path) as (port, metrics_port, log), trio.fail_after(120):
        try:
            statuses = await flood(port, "127.0.0.2", PER_ADDRESS + 20, held)
            assert statuses == [101] * PER_ADDRESS + [503] * 20
            status, other = await connect(port, "127.0.0.3")
            held.append(other)
            assert status == 101  # another address is served
            for n in range(4, 9):  # more addresses, until the total is reached
                await flood(port, f"127.0.0.{n}", PER_ADDRESS, held)
            assert len(held) == TOTAL
            status, late = await connect(port, "127.0.0.20")
            held.append(late)
            assert status == 503
            assert await http_get(metrics_port, "/readyz") == (200, b"ready\n")
            status, page = await http_get(metrics_port, "/metrics")
            assert status == 200
            assert b'wormhole_mailbox_refusals_total{reason="connections_per_address"} 20.0' \
                in page
            assert b'wormhole_mailbox_refusals_total{reason="connections_total"}' in page
        finally:
            for stream in held:
                await stream.aclose()
        output = log.read_text(errors="replace")
        assert "Traceback" not in output and "Too many open files" not in output
        assert "raised the open-file limit" not in output  # soft == hard: nothing to raise
