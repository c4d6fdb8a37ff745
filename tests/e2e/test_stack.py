"""`wormhole-stack` as a user runs it: a fresh directory, no database server, one command.

One trial serves the first tests (in file order): its first start is interrupted by SIGINT
while `initdb` runs, the next start serves a real file moved with the Python client, its
processes, ports and usage commands are inspected, and the last of them stops it with Ctrl-C
(exit 0, no PostgreSQL left) and starts it again to find the first run's usage record.
"""

from __future__ import annotations

import datetime
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
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support import clients
from tests.support.postgres import free_port

pytestmark = pytest.mark.e2e

STACK = str(Path(sys.executable).parent / "wormhole-stack")
READY_SECONDS = 120


def stack_environment(*, metrics_host: bool = True) -> dict[str, str]:
    """Ports of its own; the metrics host left to the stack's default unless `metrics_host`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MAILBOX_", "TRANSIT_", "WORMHOLE_"))}
    for prefix in ("MAILBOX", "TRANSIT"):
        env[f"{prefix}_HOST"] = "127.0.0.1"
        if metrics_host:
            env[f"{prefix}_METRICS_HOST"] = "127.0.0.1"
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


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command name) of each process whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        if int(rest.split()[1]) == pid:
            found.append((int(entry.name), name))
    return found


def descendants(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        for child, _ in children(todo.pop()):
            pids.append(child)
            todo.append(child)
    return pids


def interrupt_first_initdb(cwd: Path, env: dict[str, str]) -> int:
    """Start the stack in a fresh directory and send it SIGINT while `initdb` runs; its exit
    status. `initdb` (and its backend) are frozen while the signal arrives, so the stack
    stops it before it can finish, then thawed to stop."""
    log_path = cwd / "stack.log"
    with log_path.open("a") as log:
        proc = subprocess.Popen([STACK], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                stderr=log, text=True)
    initdb = None
    try:
        deadline = time.monotonic() + READY_SECONDS
        while initdb is None and proc.poll() is None and time.monotonic() < deadline:
            initdb = next((pid for pid, name in children(proc.pid) if name == "initdb"), None)
            time.sleep(0.01)
        assert initdb is not None, f"initdb never ran:\n{log_path.read_text()}"
        os.killpg(initdb, signal.SIGSTOP)  # it runs in a session (and group) of its own
        proc.send_signal(signal.SIGINT)
        while "received SIGINT" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(initdb, signal.SIGCONT)
        return proc.wait(60)
    finally:
        if initdb is not None:
            with suppress(ProcessLookupError):
                os.killpg(initdb, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass
class Trial:
    cwd: Path
    env: dict[str, str]
    proc: subprocess.Popen[str]
    send_line: str
    interrupted_status: int
    interrupted_left: list[str]

    @property
    def data(self) -> Path:
        return self.cwd / "wormhole-data"

    @property
    def url(self) -> str:
        return f"host={self.data / 'socket'} user=wormhole dbname=wormhole"

    def log(self) -> str:
        return (self.cwd / "stack.log").read_text()

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([STACK, *args], cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def trial() -> Iterator[Trial]:
    """A first start interrupted during `initdb`, then a stack with the metrics hosts left to
    the stack and a typo in a WORMHOLE_* variable, through which one file has moved."""
    cwd = Path(tempfile.mkdtemp(prefix="wormhole-stack-"))
    env = {**stack_environment(metrics_host=False), "MAILBOX_WORKERS": "2",
           "WORMHOLE_DATADIR": str(cwd / "elsewhere")}
    try:
        status = interrupt_first_initdb(cwd, env)
        left = sorted(os.listdir(cwd / "wormhole-data"))
        with running_stack(cwd, env) as (proc, send_line):
            trial = Trial(cwd, env, proc, send_line, status, left)
            move_a_file(trial)
            yield trial
    finally:
        shutil.rmtree(cwd, ignore_errors=True)


def move_a_file(trial: Trial) -> None:
    payload = trial.cwd / "outbox" / "hello.bin"
    payload.parent.mkdir()
    payload.write_bytes(os.urandom(300_000))
    received = trial.cwd / "received.bin"
    relay_url = f"ws://127.0.0.1:{trial.env['MAILBOX_PORT']}/v1"
    helper = f"tcp:127.0.0.1:{trial.env['TRANSIT_PORT']}"
    assert trial.send_line == (f"wormhole --relay-url {relay_url} --transit-helper {helper}"
                               " send FILE")
    code = "7-crossover-clockwork"
    clients.transfer(clients.python_send(relay_url, code, path=str(payload), transit=helper),
                     clients.python_receive(relay_url, code, transit=helper,
                                            output=str(received)), cwd=trial.cwd)
    assert hashlib.sha256(received.read_bytes()).digest() == \
        hashlib.sha256(payload.read_bytes()).digest()
    assert clients.relayed_bytes(trial.url)[0][1] >= 300_000


def test_an_interrupted_first_start_exits_0_leaving_no_cluster_and_the_next_one_works(
    trial: Trial,
) -> None:
    assert trial.interrupted_status == 0
    assert trial.interrupted_left == ["socket"]  # no cluster, whole or half-made
    log = trial.log()
    assert log.count("creating a PostgreSQL cluster") == 2
    assert log.count("created a PostgreSQL cluster") == 1
    assert "Traceback" not in log
    assert trial.proc.poll() is None


def test_a_typo_in_a_wormhole_variable_is_warned_about(trial: Trial) -> None:
    assert ("WARNING wormhole_stack: WORMHOLE_DATADIR is not a known setting and is ignored"
            " (did you mean WORMHOLE_DATA_DIR?)\n") in trial.log()
    assert not (trial.cwd / "elsewhere").exists()


def process_uids(pids: list[int]) -> dict[str, set[int]]:
    """The real user ids of the stack's mailbox, relay and PostgreSQL processes."""
    uids: dict[str, set[int]] = {"mailbox": set(), "transit": set(), "postgres": set()}
    for pid in pids:
        try:
            command = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
            status = (Path("/proc") / str(pid) / "status").read_text()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:"))
                  .split()[1])
        for name, found in uids.items():
            if name.encode() in command:
                found.add(uid)
    return uids


def test_the_services_run_as_the_unprivileged_user_of_postgres(trial: Trial) -> None:
    uids = process_uids(descendants(trial.proc.pid))
    expected = os.stat(trial.data / "postgres").st_uid  # nobody as root, else ourselves
    assert uids == {"mailbox": {expected}, "transit": {expected}, "postgres": {expected}}
    assert expected != 0 if os.geteuid() == 0 else expected == os.geteuid()


def listening(pids: list[int]) -> dict[int, str]:
    """Port -> address of every TCP socket the processes `pids` listen on."""
    inodes = set()
    for pid in pids:
        with suppress(OSError):
            for fd in (Path("/proc") / str(pid) / "fd").iterdir():
                with suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = {}
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for row in (Path("/proc/net") / table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            packed = bytes.fromhex(address[:width])
            if width == 8:
                found[int(port, 16)] = socket.inet_ntop(socket.AF_INET, packed[::-1])
            else:
                words = b"".join(packed[i:i + 4][::-1] for i in range(0, 16, 4))
                found[int(port, 16)] = socket.inet_ntop(socket.AF_INET6, words)
    return found


def test_metrics_listen_on_loopback_only_by_default(trial: Trial) -> None:
    ports = listening(descendants(trial.proc.pid))
    metrics = {int(trial.env["MAILBOX_METRICS_PORT"]), int(trial.env["TRANSIT_METRICS_PORT"])}
    public = {int(trial.env["MAILBOX_PORT"]), int(trial.env["TRANSIT_PORT"])}
    assert metrics <= set(ports)
    assert len(ports) == len(public | metrics) + 2  # and a private one per mailbox worker
    assert {ports[port] for port in set(ports) - public} == {"127.0.0.1"}


def mailbox_records(url: str) -> int:
    deadline = time.monotonic() + 30
    while True:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM usage_mailboxes").fetchone()
        if (row and row[0]) or time.monotonic() > deadline:
            return row[0] if row else 0
        time.sleep(0.1)


def test_usage_sums_the_records_by_day_and_mood(trial: Trial) -> None:
    assert mailbox_records(trial.url) == 1
    result = trial.command("usage", "--days", "2")
    assert (result.returncode, result.stderr) == (0, "")
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    lines = result.stdout.splitlines()
    assert lines[0] == "Mailbox: wormhole sessions (usage_mailboxes), last 2 days by day (UTC)" \
        " and mood:"
    assert lines[1].split() == ["day", "total", "happy", "lonely", "scary", "errory", "pruney",
                                "crowded"]
    assert lines[2].split() == [today, "1", "1", "0", "0", "0", "0", "0"]
    assert lines[3].startswith("Relay: connections and bytes relayed")
    assert lines[4].split() == ["day", "total", "happy", "lonely", "redundant", "errory",
                                "jilted", "relayed"]
    day, total, happy, *_, number, unit = lines[5].split()
    assert (day, total, happy, unit) == (today, "1", "1", "KiB")
    assert float(number) >= 292  # 300,000 bytes and the handshakes


def test_psql_is_the_wheels_client_on_the_stacks_database(trial: Trial) -> None:
    result = trial.command("psql", "-A", "-t", "-c",
                           "SELECT current_user, current_database(), result, total_bytes >= 300000"
                           " FROM transit_usage WHERE result = 'happy'")
    assert (result.returncode, result.stdout, result.stderr) == \
        (0, "wormhole|wormhole|happy|t\n", "")
    described = trial.command("psql", "-c", r"\dt")  # fails with an older psql than the server
    assert described.returncode == 0, described.stderr
    assert "transit_usage" in described.stdout


def test_ctrl_c_stops_it_with_exit_0_and_the_next_start_keeps_its_state(trial: Trial) -> None:
    stop_with_ctrl_c(trial.proc, postmaster_pid(trial.data))
    assert not (trial.data / "postgres" / "postmaster.pid").exists()
    with running_stack(trial.cwd, trial.env) as (proc, _):
        with psycopg.connect(trial.url) as conn:
            rows = conn.execute("SELECT result FROM transit_usage").fetchall()
        assert ("happy",) in rows
        stop_with_ctrl_c(proc, postmaster_pid(trial.data))
    log = trial.log()
    assert log.count("created a PostgreSQL cluster") == 1
    assert "Traceback" not in log


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


def test_a_refused_login_through_the_stack_exits_2_with_one_line_each(
    workdir: Path, database_url: str,
) -> None:
    missing = conninfo_to_dict(database_url) | {"dbname": "no_such_database"}
    result = run_stack(workdir, MAILBOX_DATABASE_URL=make_conninfo(**missing))
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert all(line[:4].isdigit() for line in lines), result.stderr  # no continuation lines
    # both services use that database and start together: either may say so first
    assert any("ERROR wormhole_common.lifecycle: the database refused us (" in line
               and "_DATABASE_URL=" in line
               and 'database "no_such_database" does not exist' in line
               for line in lines), result.stderr


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
