"""The `wormhole-transit` console script as operators run it: env config, SIGTERM, exit codes."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import trio

from tests.support.postgres import free_port
from tests.support.transit import line, receive_exactly, side, token

LIMIT = 20


def script() -> str:
    found = shutil.which("wormhole-transit", path=str(Path(sys.executable).parent))
    assert found, "wormhole-transit is not installed in this environment"
    return found


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSIT_")}
    env.update(values)
    return env


async def wait_listening(port: int, proc: trio.Process) -> None:
    while True:
        assert proc.returncode is None, "the relay exited early"
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.05)
            continue
        await stream.aclose()
        return


async def wait_not_listening(port: int) -> None:
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return
        await stream.aclose()
        await trio.sleep(0.05)


async def test_sigterm_lets_pairs_finish_records_usage_and_exits_zero(database_url: str) -> None:
    port = free_port()
    env = clean_env(TRANSIT_DATABASE_URL=database_url, TRANSIT_HOST="127.0.0.1",
                    TRANSIT_PORT=str(port), TRANSIT_METRICS_PORT="0",
                    TRANSIT_SHUTDOWN_GRACE_SECONDS="10")
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(functools.partial(
                trio.run_process, [script()], env=env, check=False, stderr=subprocess.DEVNULL))
            await wait_listening(port, proc)
            tok = token()
            a = await trio.open_tcp_stream("127.0.0.1", port)
            await a.send_all(line(tok, side()))
            b = await trio.open_tcp_stream("127.0.0.1", port)
            await b.send_all(line(tok, side()))
            assert await receive_exactly(a, 3) == b"ok\n"
            assert await receive_exactly(b, 3) == b"ok\n"
            proc.send_signal(signal.SIGTERM)
            await wait_not_listening(port)
            # no new connections, but the active pair still relays during the grace period
            await a.send_all(b"after sigterm")
            assert await receive_exactly(b, 13) == b"after sigterm"
            await a.aclose()
            await b.aclose()
            await proc.wait()
    assert proc.returncode == 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT total_bytes, result FROM transit_usage").fetchall()
        current = conn.execute("SELECT connected FROM transit_current").fetchall()
    assert [r for r in rows if r[1] != "empty"] == [(13, "happy")]  # probes are `empty`
    assert current == [(0,)]


def test_invalid_variable_stops_the_start_naming_it() -> None:
    env = clean_env(TRANSIT_MAX_CONNECTIONS_PER_IP="lots")
    result = subprocess.run([script()], env=env, capture_output=True, text=True, timeout=LIMIT,
                            check=False)
    assert result.returncode != 0
    assert "TRANSIT_MAX_CONNECTIONS_PER_IP" in result.stderr
    assert "lots" in result.stderr
