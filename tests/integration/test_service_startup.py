"""First contact as operators meet it: every start-up failure is one line, no traceback.

Both console scripts run as real processes: configuration errors (exit 2, secrets masked),
a port in use (exit 1, naming the variable), a refused login or a missing database (exit 2 at
once), an unreachable database (progress lines, then exit 1; the relay carries on).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.postgres import PASSWORD_ROLE, free_port
from tests.support.processes import wait_for_port

BIN = Path(sys.executable).parent
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (\w+) ([\w.-]+): (.*)$")
SECRET = "s3cret-do-not-show"


def run(script: str, timeout: float = 60, **env: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MAILBOX_", "TRANSIT_"))}
    result = subprocess.run([str(BIN / script)], env={**clean, **env}, capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert "Traceback" not in result.stderr + result.stdout
    assert SECRET not in result.stderr + result.stdout
    return result.returncode, result.stderr


def logged(stderr: str, level: str) -> list[str]:
    """The messages of the log lines at `level` (libpq's hint lines in others are skipped)."""
    found = []
    for line in stderr.splitlines():
        match = LOG_LINE.match(line)
        if match and match.group(1) == level:
            found.append(match.group(3))
    return found


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def with_database(url: str, **changes: str) -> str:
    params = conninfo_to_dict(url)
    params.update(changes)
    return make_conninfo(**params)


UNREACHABLE_PORT = free_port()
UNREACHABLE = f"postgresql://wormhole:{SECRET}@127.0.0.1:{UNREACHABLE_PORT}/wormhole"
SHOWN = UNREACHABLE.replace(SECRET, "***")
CONFIG = "configuration error: {}_DATABASE_URL='foo': expected a PostgreSQL URL" \
    " (postgresql://user@host/db) or a key=value connection string\n"


@pytest.mark.parametrize(("script", "prefix"), [("wormhole-mailbox", "MAILBOX"),
                                                ("wormhole-transit", "TRANSIT")])
def test_bad_url_is_one_line_without_the_password(script: str, prefix: str) -> None:
    code, stderr = run(script, **{f"{prefix}_DATABASE_URL": "foo",
                                  f"{prefix}_DATABASE_PASSWORD": SECRET})
    assert code == 2
    assert stderr == f"{script}: " + CONFIG.format(prefix)


def test_bad_url_in_a_password_file_is_masked(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text(f"wormhole:{SECRET}@db\n")
    code, stderr = run("wormhole-transit", TRANSIT_DATABASE_URL_FILE=str(secret))
    assert code == 2
    assert stderr == (
        f"wormhole-transit: configuration error: TRANSIT_DATABASE_URL_FILE='{secret}': the file"
        " holds 'wormhole:***@db', expected a PostgreSQL URL (postgresql://user@host/db) or a"
        " key=value connection string\n"
    )


def test_missing_url_is_named() -> None:
    code, stderr = run("wormhole-mailbox")
    assert (code, stderr) == (2, "wormhole-mailbox: configuration error: MAILBOX_DATABASE_URL"
                                 " is not set: it is required\n")


@pytest.mark.parametrize(("script", "prefix"), [("wormhole-mailbox", "MAILBOX"),
                                                ("wormhole-transit", "TRANSIT")])
@pytest.mark.parametrize("which", ["PORT", "METRICS_PORT"])
def test_port_in_use_names_the_variable_and_address(
    script: str, prefix: str, which: str, busy_port: int,
) -> None:
    env = {f"{prefix}_DATABASE_URL": UNREACHABLE, f"{prefix}_HOST": "127.0.0.1",
           f"{prefix}_PORT": str(free_port()), f"{prefix}_METRICS_HOST": "127.0.0.1",
           f"{prefix}_METRICS_PORT": "0", f"{prefix}_LOG_LEVL": "debug"}
    env[f"{prefix}_{which}"] = str(busy_port)
    code, stderr = run(script, **env)
    assert code == 1
    assert logged(stderr, "ERROR") == [
        f"cannot listen on 127.0.0.1:{busy_port} ({prefix}_{which}={busy_port}):"
        " address already in use"
    ]
    assert f"{prefix}_LOG_LEVL is not a known setting and is ignored (did you mean" \
        f" {prefix}_LOG_LEVEL?)" in logged(stderr, "WARNING")


@pytest.fixture
def password_role(server_database_url: str) -> Iterator[str]:
    """A URL for a role that must give a password (the test cluster's pg_hba asks for one)."""
    if os.environ.get("WORMHOLE_TEST_DATABASE_URL"):
        pytest.skip("needs the test cluster's pg_hba.conf")
    with psycopg.connect(server_database_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {PASSWORD_ROLE}")
        conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right'")
    yield with_database(server_database_url, user=PASSWORD_ROLE, password=SECRET)


@pytest.mark.parametrize(("script", "prefix"), [("wormhole-mailbox", "MAILBOX"),
                                                ("wormhole-transit", "TRANSIT")])
def test_wrong_password_is_a_configuration_error_at_once(
    script: str, prefix: str, password_role: str,
) -> None:
    params = conninfo_to_dict(password_role)
    code, stderr = run(script, timeout=20, **{
        f"{prefix}_DATABASE_URL": password_role, f"{prefix}_PORT": "0",
        f"{prefix}_METRICS_PORT": "0", f"{prefix}_DATABASE_STARTUP_TIMEOUT_SECONDS": "600"})
    assert code == 2
    assert logged(stderr, "ERROR") == [
        f"the database refused us ({prefix}_DATABASE_URL={mask(password_role)}): connection to"
        f' server at "127.0.0.1", port {params["port"]} failed: FATAL: password authentication'
        f' failed for user "{PASSWORD_ROLE}"'
    ]


def mask(url: str) -> str:
    return url.replace(SECRET, "***")


@pytest.mark.parametrize(("script", "prefix"), [("wormhole-mailbox", "MAILBOX"),
                                                ("wormhole-transit", "TRANSIT")])
def test_missing_database_is_a_configuration_error_at_once(
    script: str, prefix: str, server_database_url: str,
) -> None:
    url = with_database(server_database_url, dbname="no_such_database")
    port = conninfo_to_dict(url)["port"]
    code, stderr = run(script, timeout=20, **{
        f"{prefix}_DATABASE_URL": url, f"{prefix}_PORT": "0", f"{prefix}_METRICS_PORT": "0",
        f"{prefix}_DATABASE_STARTUP_TIMEOUT_SECONDS": "600"})
    assert code == 2
    assert logged(stderr, "ERROR") == [
        f"the database refused us ({prefix}_DATABASE_URL={url}): connection to server at"
        f' "127.0.0.1", port {port} failed: FATAL: database "no_such_database" does not exist'
    ]


def test_unreachable_database_stops_the_mailbox_after_the_timeout() -> None:
    port = UNREACHABLE_PORT
    code, stderr = run("wormhole-mailbox", MAILBOX_DATABASE_URL=UNREACHABLE, MAILBOX_PORT="0",
                       MAILBOX_METRICS_PORT="0", MAILBOX_DATABASE_STARTUP_TIMEOUT_SECONDS="2")
    reason = f'connection to server at "127.0.0.1", port {port} failed: Connection refused'
    assert code == 1
    assert logged(stderr, "WARNING") == [
        f"waiting for the database (MAILBOX_DATABASE_URL={SHOWN}): {reason}; giving up in 2 s"
    ]
    assert logged(stderr, "ERROR") == [
        f"cannot reach the database (MAILBOX_DATABASE_URL={SHOWN}) within 2 s: {reason}"
    ]


def test_unreachable_database_lets_the_relay_relay_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    db_port = UNREACHABLE_PORT
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRANSIT_")}
    log = tmp_path / "transit.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "wormhole-transit")], stdout=out, stderr=subprocess.STDOUT,
            env={**clean, "TRANSIT_DATABASE_URL": UNREACHABLE, "TRANSIT_HOST": "127.0.0.1",
                 "TRANSIT_PORT": str(port), "TRANSIT_METRICS_PORT": "0",
                 "TRANSIT_DATABASE_STARTUP_TIMEOUT_SECONDS": "1"})
    try:
        wait_for_port(port, proc=proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    output = log.read_text()
    assert "Traceback" not in output
    assert SECRET not in output
    reason = f'connection to server at "127.0.0.1", port {db_port} failed: Connection refused'
    assert (f"the database (TRANSIT_DATABASE_URL={SHOWN}) is unreachable ({reason}): relaying"
            " without usage records until it answers") in logged(output, "WARNING")


@pytest.mark.parametrize("script", ["wormhole-mailbox", "wormhole-transit"])
def test_help_and_version_need_no_configuration(script: str) -> None:
    help_run = subprocess.run([str(BIN / script), "--help"], capture_output=True, text=True,
                              check=False, timeout=30, env={"PATH": os.environ["PATH"]})
    assert help_run.returncode == 0
    assert help_run.stdout.startswith(f"usage: {script} [-h] [--version]\n")
    prefix = script.removeprefix("wormhole-").upper()
    assert f"  {prefix}_PORT  [default: {4000 if prefix == 'MAILBOX' else 4001}]\n" \
        in help_run.stdout
    version = subprocess.run([str(BIN / script), "--version"], capture_output=True, text=True,
                             check=False, timeout=30, env={"PATH": os.environ["PATH"]})
    assert (version.returncode, version.stdout) == (0, f"{script} 0.1.0\n")
