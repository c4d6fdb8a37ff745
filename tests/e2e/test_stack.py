"""`wormhole-stack` as a user runs it: a fresh directory, no database server, one command.

A real file moves through it with the Python client; Ctrl-C (SIGINT) stops everything with
exit 0 and no PostgreSQL left running; a second start finds the first run's usage record.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.support import clients
from tests.support.postgres import free_port

pytestmark = pytest.mark.e2e

STACK = str(Path(sys.executable).parent / "wormhole-stack")
READY_SECONDS = 120


def stack_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MAILBOX_", "TRANSIT_", "WORMHOLE_"))}
    for prefix in ("MAILBOX", "TRANSIT"):
        env[f"{prefix}_HOST"] = env[f"{prefix}_METRICS_HOST"] = "127.0.0.1"
        env[f"{prefix}_PORT"] = str(free_port())
        env[f"{prefix}_METRICS_PORT"] = str(free_port())
    env["TRANSIT_SHUTDOWN_GRACE_SECONDS"] = "2"
    return env


@contextmanager
def running_stack(cwd: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The stack until it prints its client command lines; yields it and the `send` line.

    Stopped with SIGINT (the way it stops its children) if the test leaves it running.
    """
    log_path = cwd / "stack.log"
    log = log_path.open("a")
    proc = subprocess.Popen([STACK], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=log,
                            text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stdout or ():
            lines.put(line)
        lines.put("")  # end of output: the stack exited

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while True:
            try:
                line = lines.get(timeout=READY_SECONDS)
            except queue.Empty:
                pytest.fail(f"not ready in {READY_SECONDS} s:\n{log_path.read_text()}")
            assert line, f"exited with {proc.wait()} before it was ready:\n{log_path.read_text()}"
            if line.strip().endswith(" send FILE"):
                yield proc, line.strip()
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(10)
        if not reader.is_alive():
            assert proc.stdout is not None
            proc.stdout.close()
        log.close()


def postmaster_pid(data: Path) -> int:
    return int((data / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0])


def stop_with_ctrl_c(proc: subprocess.Popen[str], pid: int) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A fresh directory outside pytest's own, which pytest keeps private (0700): as root,
    the stack's PostgreSQL runs as `nobody` and must be able to reach its data."""
    path = Path(tempfile.mkdtemp(prefix="wormhole-stack-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_one_command_stack_moves_a_file_stops_cleanly_and_keeps_its_state(
    workdir: Path,
) -> None:
    tmp_path = workdir
    env = stack_environment()
    data = tmp_path / "wormhole-data"
    payload = tmp_path / "outbox" / "hello.bin"
    payload.parent.mkdir()
    payload.write_bytes(os.urandom(300_000))
    received = tmp_path / "received.bin"
    mailbox, transit = env["MAILBOX_PORT"], env["TRANSIT_PORT"]

    with running_stack(tmp_path, env) as (proc, send_line):
        relay_url = f"ws://127.0.0.1:{mailbox}/v1"
        helper = f"tcp:127.0.0.1:{transit}"
        assert send_line == f"wormhole --relay-url {relay_url} --transit-helper {helper} send FILE"
        code = "7-crossover-clockwork"
        clients.transfer(clients.python_send(relay_url, code, path=str(payload), transit=helper),
                         clients.python_receive(relay_url, code, transit=helper,
                                                output=str(received)), cwd=tmp_path)
        assert hashlib.sha256(received.read_bytes()).digest() == \
            hashlib.sha256(payload.read_bytes()).digest()
        url = f"host={data / 'socket'} user=wormhole dbname=wormhole"
        assert clients.relayed_bytes(url)[0][1] >= 300_000
        stop_with_ctrl_c(proc, postmaster_pid(data))
    assert not (data / "postgres" / "postmaster.pid").exists()
    log = (tmp_path / "stack.log").read_text()
    assert "Traceback" not in log

    with running_stack(tmp_path, env) as (proc, _):
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT result FROM transit_usage").fetchall()
        assert ("happy",) in rows
        stop_with_ctrl_c(proc, postmaster_pid(data))
    log = (tmp_path / "stack.log").read_text()
    assert "created a PostgreSQL cluster" in log
    assert log.count("created a PostgreSQL cluster") == 1


def test_with_a_database_url_it_uses_that_database_and_starts_no_postgres(
    workdir: Path, database_url: str,
) -> None:
    env = {**stack_environment(), "MAILBOX_DATABASE_URL": database_url}
    with running_stack(workdir, env) as (proc, _):
        # the relay migrates its tables in the background, after it is ready to relay
        deadline = time.monotonic() + 30
        while True:
            with psycopg.connect(database_url) as conn:
                tables = {row[0] for row in conn.execute(
                    "SELECT tablename FROM pg_tables"
                    " WHERE tablename IN ('messages', 'transit_usage')")}
            if tables == {"messages", "transit_usage"} or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert tables == {"messages", "transit_usage"}  # both services migrated it
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert not (workdir / "wormhole-data").exists()


def run_stack(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STACK, *args], cwd=cwd, env={**stack_environment(), **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_configuration_error_is_one_line_before_anything_starts(workdir: Path) -> None:
    result = run_stack(workdir, MAILBOX_PORT="x", MAILBOX_DATABASE_PASSWORD="s3cret")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("wormhole-stack: configuration error: MAILBOX_PORT='x': expected a"
                             " valid integer, unable to parse string as an integer\n")
    assert not (workdir / "wormhole-data").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the PostgreSQL user matters only as root")
def test_as_root_postgres_must_not_run_as_root(workdir: Path) -> None:
    result = run_stack(workdir, WORMHOLE_POSTGRES_USER="root")
    assert result.returncode == 2
    assert result.stderr == ("wormhole-stack: configuration error: WORMHOLE_POSTGRES_USER="
                             "'root': PostgreSQL refuses to run as root; expected an"
                             " unprivileged user\n")


def test_help_lists_the_stacks_and_both_services_variables(workdir: Path) -> None:
    result = subprocess.run([STACK, "--help"], cwd=workdir, capture_output=True, text=True,
                            timeout=60, check=False, env={"PATH": os.environ["PATH"]})
    assert result.returncode == 0
    for line in ("  WORMHOLE_DATA_DIR  [default: wormhole-data]\n",
                 "  MAILBOX_PORT  [default: 4000]\n", "  TRANSIT_PORT  [default: 4001]\n"):
        assert line in result.stdout
    assert not (workdir / "wormhole-data").exists()


def prometheus_targets(port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}/api/v1/targets"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    return {t["labels"]["job"]: t["health"] for t in body["data"]["activeTargets"]}


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_optional_prometheus_scrapes_both_services(workdir: Path, database_url: str) -> None:
    port = free_port()
    env = {**stack_environment(), "MAILBOX_DATABASE_URL": database_url,
           "WORMHOLE_PROMETHEUS_PORT": str(port)}
    with running_stack(workdir, env) as (proc, _):
        deadline = time.monotonic() + 90
        targets: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                targets = prometheus_targets(port)
            except OSError:
                targets = {}
            if targets == {"mailbox": "up", "transit": "up"}:
                break
            time.sleep(0.5)
        assert targets == {"mailbox": "up", "transit": "up"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    with pytest.raises(OSError):
        prometheus_targets(port)


def test_a_port_in_use_is_one_line_before_anything_starts(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_stack(workdir, TRANSIT_METRICS_PORT=str(port))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.endswith(
        f" ERROR wormhole_stack: cannot listen on 127.0.0.1:{port} (TRANSIT_METRICS_PORT={port}):"
        " address already in use\n")
    assert len(result.stderr.splitlines()) == 1
    assert not (workdir / "wormhole-data").exists()
