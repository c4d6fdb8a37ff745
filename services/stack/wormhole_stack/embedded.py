"""The stack's own PostgreSQL: one cluster in the data directory, a Unix socket, no TCP."""

from __future__ import annotations

import logging
import pwd
import shutil
import signal
import time
from pathlib import Path

import psycopg
import trio
from psycopg import sql
from psycopg.conninfo import make_conninfo
from wormhole_common.startup import failure_reason
from wormhole_common.workers import stop_child

from wormhole_stack.account import make_reachable, run_as
from wormhole_stack.children import ChildFailed, spawn
from wormhole_stack.postgres import (
    PostgresError,
    bin_dir,
    create_cluster,
    incomplete_cluster,
    prepare_directory,
    running_pid,
    server_command,
    socket_directory,
)

log = logging.getLogger(__name__)

DATABASE = "wormhole"
ROLE = "wormhole"


class EmbeddedPostgres:
    """`postgres` as a child of the stack, its data in `<data_dir>/postgres`."""

    def __init__(self, data_dir: Path, account: pwd.struct_passwd | None) -> None:
        self.data_dir = data_dir.resolve()
        self.account = account
        self.pgdata = self.data_dir / "postgres"
        self.sockets = self.data_dir / "socket"
        self.log_file = self.data_dir / "postgres.log"
        self.proc: trio.Process | None = None

    def url(self, dbname: str = DATABASE) -> str:
        return make_conninfo(user=ROLE, dbname=dbname, host=str(self.sockets))

    def prepare(self) -> None:
        """The data and socket directories; an incomplete cluster from an older version goes."""
        self.data_dir.mkdir(mode=0o711 if self.account else 0o700, parents=True, exist_ok=True)
        make_reachable(self.pgdata, self.account)
        make_reachable(bin_dir(), self.account)
        prepare_directory(socket_directory(self.sockets), self.account)
        pid = running_pid(self.pgdata)
        if pid is not None:
            raise PostgresError(f"a PostgreSQL from an earlier run still runs on {self.pgdata}"
                                f" (pid {pid}): stop it first (kill -INT {pid})")
        if incomplete_cluster(self.pgdata):
            log.warning("removing the incomplete PostgreSQL cluster in %s (an interrupted"
                        " first start of an older version); creating it again", self.pgdata)
            shutil.rmtree(self.pgdata)

    async def start(self, patience: float) -> None:
        """Create the cluster (first run), start the server and wait until it answers; create
        the database on first run. Cancellable at every step: `stop` then ends what runs."""
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("creating a PostgreSQL cluster in %s", self.pgdata)
            await create_cluster(self.pgdata, ROLE, self.account)
            log.info("created a PostgreSQL cluster in %s", self.pgdata)
        command = server_command(self.pgdata, self.sockets, {"unix_socket_permissions": "0700"})
        self.proc = await spawn("postgres", command, {}, log_file=self.log_file,
                                **run_as(self.account))
        deadline = time.monotonic() + patience
        while True:
            try:
                await trio.to_thread.run_sync(self._create_database, abandon_on_cancel=True)
                break
            except psycopg.OperationalError as exc:
                if self.proc.returncode is not None:
                    raise ChildFailed(f"PostgreSQL exited with status {self.proc.returncode}:"
                                      f" {self._last_log_line()}") from None
                if time.monotonic() > deadline:
                    raise ChildFailed(f"PostgreSQL did not answer within {patience:g} s:"
                                      f" {failure_reason(exc)}") from None
                await trio.sleep(0.1)
        log.info("PostgreSQL ready on %s (Unix socket only; log: %s)", self.sockets,
                 self.log_file)

    def _create_database(self) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=2) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (DATABASE,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))

    def _last_log_line(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no log"

    async def stop(self) -> None:
        """Fast shutdown (SIGINT): sessions are ended, the data stays consistent."""
        if self.proc is not None:
            await stop_child("PostgreSQL", self.proc, signal.SIGINT, 60)
