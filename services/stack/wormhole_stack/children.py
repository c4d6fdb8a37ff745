"""The stack's child processes: start, wait until they listen, stop them in order."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio
from wormhole_common import http

log = logging.getLogger(__name__)


CONFIG_EXIT = 2  # the services' status for a configuration error or a refused login


class ChildFailed(Exception):
    """A child exited when it should not have; `str()` is one line, `code` the stack's exit
    status: the services' 2 (retrying will not help) is passed on, anything else is 1."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = CONFIG_EXIT if status == CONFIG_EXIT else 1


async def spawn(
    name: str, command: Sequence[str], env: dict[str, str], *, log_file: Path | None = None,
    **options: Any,
) -> trio.Process:
    """A child in a session of its own: a terminal's Ctrl-C reaches only the stack, which
    then stops the children in order (the services before their database)."""
    if log_file is not None:
        with log_file.open("ab") as out:
            return await trio.lowlevel.open_process(
                list(command), env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, **options)
    # Their stdout goes to our stderr: our stdout carries only our own lines (the client
    # commands), and a reader of it sees its end when we exit, whatever the children do.
    return await trio.lowlevel.open_process(list(command), env=env, stdin=subprocess.DEVNULL,
                                            stdout=sys.stderr.fileno(), start_new_session=True,
                                            **options)


async def answers(host: str, port: int, path: str | None) -> bool:
    """`host:port` accepts a connection and, given a `path`, answers it with 200 (in 10 s)."""
    with trio.move_on_after(10):
        try:
            if path is None:
                stream = await trio.open_tcp_stream(host, port)
                await stream.aclose()
                return True
            return (await http.get(host, port, path))[0] == 200
        except OSError:
            return False
    return False


async def wait_ready(name: str, proc: trio.Process, host: str, port: int, *, path: str | None,
                     patience: float) -> None:
    """Until `answers(host, port, path)`; `ChildFailed` if `proc` exits first or it is late.

    The services are asked through their `/readyz` where they have one: a bare connection to
    the relay would leave an empty usage record behind.
    """
    with trio.move_on_after(patience):
        while proc.returncode is None:
            if await answers(host, port, path):
                return
            await trio.sleep(0.1)
    if proc.returncode is None:
        raise ChildFailed(f"{name} was not ready on {host}:{port} within {patience:g} s")
    raise ChildFailed(f"{name} exited with status {proc.returncode} while starting",
                      proc.returncode)


