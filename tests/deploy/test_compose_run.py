"""The mailbox and transit containers as compose.yaml defines them, run without Docker.

For each service: the Dockerfile's ENTRYPOINT (the console script) with exactly the
environment the container would get (the image's ENV, then compose's `environment` as
Compose's loader resolves it with .env.example). Only what Docker itself would provide is
replaced: the host `postgres` becomes the test cluster (its database is a fresh one owned by
the compose user), the secrets directory becomes a scratch one filled by the `secrets-init`
command, and a container port that is already taken on this host moves to a free one. Then
the image's HEALTHCHECK command must succeed, real clients move a file through both, and
SIGTERM ends both with exit 0.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.deploy.stack import (
    BIN,
    ROOT,
    dockerfile_stages,
    image_env,
    resolved_compose,
)
from tests.deploy.test_compose import raw_compose
from tests.support import clients
from tests.support.postgres import free_port

# Container ports by the variable that moves them (the settings' defaults, or compose's value).
PORT_VARIABLES = {
    "mailbox": {"MAILBOX_PORT": 4000, "MAILBOX_METRICS_PORT": 9410},
    "transit": {"TRANSIT_PORT": 4001, "TRANSIT_WEBSOCKET_PORT": 4002,
                "TRANSIT_METRICS_PORT": 9411},
}
HEALTHY_WITHIN = 30


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def materialise_secrets(directory: Path) -> None:
    """Run compose's `secrets-init` command against a scratch directory."""
    directory.mkdir()
    script = raw_compose()["services"]["secrets-init"]["command"][0].replace("$$", "$")
    script = script.replace("/secrets/", f"{directory}/")
    if os.geteuid() != 0:
        script = re.sub(r"chown \d+:\d+", "true", script)
    subprocess.run(["sh", "-c", script], check=True, timeout=10)


def adopt_database(database_url: str, compose_url: str) -> str:
    """The compose URL pointed at the test cluster's host, port and this test's database,
    which is handed to the compose role (created if missing)."""
    ours, theirs = conninfo_to_dict(database_url), conninfo_to_dict(compose_url)
    assert theirs["host"] == "postgres" and theirs.get("port", "5432") == "5432", compose_url
    role = str(theirs["user"])
    with psycopg.connect(database_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(str(ours["dbname"])), sql.Identifier(role)))
    return make_conninfo(compose_url, host=ours["host"], port=ours["port"],
                         dbname=ours["dbname"])


class Container:
    def __init__(self, service: str, compose: dict[str, Any], database_url: str,
                 secrets: Path, log: Path) -> None:
        self.service = service
        runtime = dockerfile_stages(ROOT / f"Dockerfile.{service}")[-1]
        self.entrypoint = runtime.exec_form("ENTRYPOINT")
        self.healthcheck = runtime.exec_form("HEALTHCHECK")
        definition = compose["services"][service]
        env = image_env(runtime)
        env["PATH"] = f"{BIN}:/usr/local/bin:/usr/bin:/bin"  # the image's venv is ours here
        env.update({k: str(v) for k, v in definition["environment"].items()})
        mounts = [v for v in definition.get("volumes", []) if v["type"] == "bind"]
        for key, value in env.items():
            for mount in mounts:
                if value.startswith(mount["target"] + "/"):
                    assert Path(mount["source"]).name == "secrets", mount
                    env[key] = str(secrets / value.removeprefix(mount["target"] + "/"))
            if key.endswith("_DATABASE_URL"):
                env[key] = adopt_database(database_url, value)
        self.ports: dict[str, int] = {}
        for variable, default in PORT_VARIABLES[service].items():
            port = int(env.get(variable, default))
            if not port_is_free(port):
                port = free_port()
                env[variable] = str(port)
            self.ports[variable] = port
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [str(BIN / self.entrypoint[0]), *self.entrypoint[1:]]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(command, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def wait_healthy(self) -> None:
        """Run the image's HEALTHCHECK command (it reads the metrics port from the env)."""
        assert self.proc is not None
        deadline = time.monotonic() + HEALTHY_WITHIN
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            check = subprocess.run(self.healthcheck, env=self.env, capture_output=True,
                                   timeout=10, check=False)
            if check.returncode == 0:
                return
            time.sleep(0.3)
        raise AssertionError(f"{self.service} not healthy: {check.stderr!r}\n{self.output()}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running(container: Container) -> Iterator[Container]:
    container.start()
    try:
        yield container
    finally:
        if container.proc is not None and container.proc.poll() is None:
            container.proc.kill()
            container.proc.wait()


def test_compose_services_serve_a_real_transfer(database_url: str, tmp_path: Path) -> None:
    compose = resolved_compose()
    secrets = tmp_path / "secrets"
    materialise_secrets(secrets)
    mailbox = Container("mailbox", compose, database_url, secrets, tmp_path / "mailbox.log")
    transit = Container("transit", compose, database_url, secrets, tmp_path / "transit.log")
    for name in ("MAILBOX_DATABASE_PASSWORD_FILE",):
        assert Path(mailbox.env[name]).read_text().strip()
    assert transit.env["TRANSIT_DATABASE_PASSWORD_FILE"] == mailbox.env[
        "MAILBOX_DATABASE_PASSWORD_FILE"]

    payload = tmp_path / "outbox" / "hello.bin"
    payload.parent.mkdir()
    data = os.urandom(200_000)
    payload.write_bytes(data)
    received = tmp_path / "received.bin"

    with ExitStack() as stack:
        stack.enter_context(running(mailbox))
        stack.enter_context(running(transit))
        mailbox.wait_healthy()
        transit.wait_healthy()
        with socket.create_connection(("127.0.0.1", transit.ports["TRANSIT_WEBSOCKET_PORT"]),
                                      timeout=5):
            pass  # compose's TRANSIT_WEBSOCKET_PORT is listening too

        url = f"ws://127.0.0.1:{mailbox.ports['MAILBOX_PORT']}/v1"
        helper = f"tcp:127.0.0.1:{transit.ports['TRANSIT_PORT']}"
        code = "7-compose-stack"
        clients.transfer(clients.python_send(url, code, path=str(payload), transit=helper),
                         clients.python_receive(url, code, transit=helper, output=str(received)),
                         cwd=tmp_path)
        assert hashlib.sha256(received.read_bytes()).digest() == hashlib.sha256(data).digest()
        rows = clients.relayed_bytes(database_url)
        assert len(rows) == 1 and rows[0][1] >= len(data), rows

        assert mailbox.stop() == 0, mailbox.output()
        assert transit.stop() == 0, transit.output()
