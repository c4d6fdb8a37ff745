"""Start-up checks that turn the usual first-contact failures into one honest line each.

A port in use is found before the service starts (by binding each configured address as the
server will, then letting go), so the message can name the variable. The database is tried
before anything else: a refused password or a missing database is a configuration error,
told from an outage by SQLSTATE (`pgprobe`: libpq reports connection failures as text in the
server's language), and an unreachable server is retried with one progress line every few
seconds.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict

from wormhole_common.listening import DUAL_STACK, IPV4_ANY, dual_stack_socket, endpoint
from wormhole_common.pgprobe import Verdict, probe

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 5
class StartupError(Exception):
    """The service cannot start: `str()` is the one line to print, `code` the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _address(addr: tuple[Any, ...]) -> str:
    return endpoint(str(addr[0]), int(addr[1]))


def check_port(variable: str, host: str, port: int) -> None:
    """Raise `StartupError` naming `variable` if `host:port` cannot be listened on now."""
    if port == 0:
        return
    if host == DUAL_STACK:  # as `open_listeners` will: IPv6 and IPv4 on one socket
        try:
            probe = dual_stack_socket(port)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise StartupError(f"cannot listen on {endpoint(host, port)} ({variable}={port}):"
                               f" {reason}") from None
        if probe is not None:
            probe.close()
            return
        host = IPV4_ANY  # no IPv6 here: `open_listeners` falls back to this
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}:{port} ({variable}={port}):"
                           f" {exc.strerror}", 2) from None
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(addr)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                raise StartupError(f"cannot listen on {_address(addr)} ({variable}={port}):"
                                   f" {reason}") from None


def failure_reason(exc: BaseException) -> str:
    """libpq's message without its hints, on one line, without 'connection failed:'."""
    first = str(exc).strip().split("\n", 1)[0]
    text = " ".join(first.split()).removeprefix("connection failed: ")
    return text or type(exc).__name__


def _try_connect(url: str, timeout: float) -> None:
    """Connect once; `Refused` if the server said no to who we are or what we asked for."""
    try:
        with psycopg.connect(url, connect_timeout=max(2, int(timeout)),
                             autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        if exc.sqlstate is None:  # a failed connection: ask the server why
            params = conninfo_to_dict(url)
            verdict = probe({k: str(v) for k, v in params.items()}, max(1.0, timeout))
            if verdict is Verdict.REFUSED:
                raise Refused(failure_reason(exc)) from exc
        raise


class Refused(Exception):
    """The database refused the connection: retrying cannot help."""


async def wait_for_database(url: str, shown: str, patience: float) -> str | None:
    """None once the database answers; the last reason if it stays unreachable `patience` s.

    Raises `StartupError` (exit 2) at once when the server refuses the credentials or the
    database. `shown` names the variable and its value, password masked, for the messages.
    """
    deadline = time.monotonic() + patience
    next_progress = time.monotonic()
    while True:
        left = deadline - time.monotonic()
        try:
            await trio.to_thread.run_sync(_try_connect, url, min(left, PROGRESS_SECONDS),
                                          abandon_on_cancel=True)
            return None
        except Refused as exc:
            raise StartupError(f"the database refused us ({shown}): {exc}", 2) from None
        except psycopg.Error as exc:
            reason = failure_reason(exc)
        left = deadline - time.monotonic()
        if left <= 0:
            return reason
        if time.monotonic() >= next_progress:
            log.warning("waiting for the database (%s): %s; giving up in %.0f s",
                        shown, reason, left)
            next_progress = time.monotonic() + PROGRESS_SECONDS
        await trio.sleep(min(1.0, left))
