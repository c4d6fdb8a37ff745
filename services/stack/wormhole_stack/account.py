"""The unprivileged account the stack's children run as when it is started as root.

PostgreSQL refuses to run as root, and nothing else needs root either: as root, PostgreSQL,
the mailbox (and its workers), the relay and Prometheus all run as one unprivileged user
(`nobody` unless told otherwise). The directories on the way to what they must read (the
Python installation, the wheel's binaries, the data) are made searchable by that user if they
are not, with a log line each. Ports below the kernel's unprivileged limit (1024 unless the
system lowered it) cannot be bound by that user, so such a port is refused before anything
starts.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from typing import TypedDict

from wormhole_common.settings import ConfigError

log = logging.getLogger(__name__)

UNPRIVILEGED_PORT_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")


def server_user(name: str) -> pwd.struct_passwd | None:
    """The account to run the children as: None when we are not root (run as ourselves)."""
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


def python_files() -> list[Path]:
    """A file in each directory a child Python needs: the interpreter, the standard library,
    the environment's packages (ours may be installed in place, elsewhere)."""
    import wormhole_common  # noqa: PLC0415 - where this installation keeps its packages
    import wormhole_mailbox  # noqa: PLC0415
    import wormhole_transit  # noqa: PLC0415

    paths = sysconfig.get_paths()
    files = [Path(os.path.realpath(sys.executable)), Path(sys.prefix) / "pyvenv.cfg"]
    files += [Path(paths[key]) / "-" for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    files += [Path(module.__file__ or "") for module in
              (wormhole_common, wormhole_mailbox, wormhole_transit)]
    return files


def make_python_reachable(account: pwd.struct_passwd | None) -> None:
    for path in python_files():
        make_reachable(path, account)


class RunAs(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def run_as(account: pwd.struct_passwd | None) -> RunAs:
    """`subprocess` keyword arguments that run a child as `account` (nothing if None)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def unprivileged_port_start() -> int:
    """The lowest port any user may bind (Linux: a sysctl, 0 in Docker containers)."""
    try:
        return int(UNPRIVILEGED_PORT_START.read_text())
    except (OSError, ValueError):
        return 1024


def check_unprivileged_ports(account: pwd.struct_passwd | None,
                             ports: Iterable[tuple[str, str, int | None]],
                             limit: int | None = None) -> None:
    """`ConfigError` for a port `account` may not listen on (`ports`: variable, address,
    port; `limit`: the lowest port it may, by default the system's)."""
    if account is None:
        return
    limit = unprivileged_port_start() if limit is None else limit
    for variable, _, port in ports:
        if port and port < limit:
            raise ConfigError(
                f"{variable}={port}: as root the services run as user {account.pw_name}"
                f" (WORMHOLE_POSTGRES_USER), which may not listen below port {limit}; choose"
                f" a port from {limit} up and forward {port} to it (a firewall rule or a"
                " proxy)")
