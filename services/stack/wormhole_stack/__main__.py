"""`wormhole-stack`: PostgreSQL, the mailbox and the relay in one supervised process tree.

With no configuration it keeps everything in `./wormhole-data` and needs no database server;
with `MAILBOX_DATABASE_URL` it uses that database instead. Every `MAILBOX_*`/`TRANSIT_*`
variable applies to its service; the metrics listen on 127.0.0.1 unless told otherwise. As
root every child runs as one unprivileged user. Ctrl-C or SIGTERM, at any moment (even while
the cluster is being created), stops the services, then PostgreSQL, and exits 0.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import trio
from wormhole_common.cli import config_exit, parse_command_line
from wormhole_common.core.logs import configure_logging
from wormhole_common.settings import ConfigError, load_settings, unknown_variables
from wormhole_common.startup import StartupError, check_port
from wormhole_common.workers import stop_child
from wormhole_mailbox.settings import MailboxSettings
from wormhole_transit.settings import TransitSettings

from wormhole_stack import commands
from wormhole_stack.account import (
    check_unprivileged_ports,
    make_python_reachable,
    run_as,
    server_user,
)
from wormhole_stack.children import ChildFailed, spawn, wait_ready
from wormhole_stack.embedded import EmbeddedPostgres
from wormhole_stack.postgres import PostgresError
from wormhole_stack.prometheus import start_prometheus
from wormhole_stack.settings import StackSettings

log = logging.getLogger("wormhole_stack")

PROG = "wormhole-stack"
SUMMARY = ("The whole Magic Wormhole server stack in one command: an embedded PostgreSQL"
           " (no database server needed), the mailbox and the transit relay with their"
           " metrics. Ctrl-C stops it.")
EXTRA = ("; MAILBOX_DATABASE_URL set: use that database, not the embedded one (the relay"
         " uses it too unless TRANSIT_DATABASE_URL is set)")
DATABASE_VARIABLES = ("DATABASE_URL", "DATABASE_URL_FILE", "DATABASE_PASSWORD",
                      "DATABASE_PASSWORD_FILE")
METRICS_HOST = "127.0.0.1"  # a trial publishes its metrics to this machine only
# What the stack's --help shows where its default differs from the service's own.
HELP_DEFAULTS = {"MAILBOX_DATABASE_URL": "the embedded PostgreSQL",
                 "TRANSIT_DATABASE_URL": "the mailbox's database",
                 "MAILBOX_METRICS_HOST": METRICS_HOST, "TRANSIT_METRICS_HOST": METRICS_HOST}
# WORMHOLE_* variables of other programs (the wormhole client, compose, the tests): not typos.
OTHER_PROGRAMS = frozenset({
    "WORMHOLE_RELAY_URL", "WORMHOLE_TRANSIT_HELPER", "WORMHOLE_QR", "WORMHOLE_ACCEPT_FILE",
    "WORMHOLE_REGISTRY", "WORMHOLE_VERSION", "WORMHOLE_SECRETS_DIR",
    "WORMHOLE_TEST_DATABASE_URL", "WORMHOLE_CI_UNPACK",
})


def service_environment(environ: Mapping[str, str], embedded_url: str | None) -> dict[str, str]:
    """The children's environment: the operator's, plus the database they share."""
    env = dict(environ)
    if embedded_url is not None:
        env["MAILBOX_DATABASE_URL"] = embedded_url
        env.setdefault("TRANSIT_DATABASE_URL", embedded_url)
    elif not (env.get("TRANSIT_DATABASE_URL") or env.get("TRANSIT_DATABASE_URL_FILE")):
        for name in DATABASE_VARIABLES:
            if f"MAILBOX_{name}" in env:
                env[f"TRANSIT_{name}"] = env[f"MAILBOX_{name}"]
    for prefix in ("MAILBOX", "TRANSIT"):
        env.setdefault(f"{prefix}_METRICS_HOST", METRICS_HOST)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


WILDCARDS = ("0.0.0.0", "::", "")
# Documentation addresses (RFC 5737, RFC 3849): connecting a UDP socket to one sends nothing
# and tells which local address the kernel would use to go there, by the default route.
ROUTE_PROBES = ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1"))


def route_address(families: Sequence[int]) -> str | None:
    """The address of the default route's interface, if there is a default route."""
    for family, probe in ROUTE_PROBES:
        if family not in families:
            continue
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                udp.connect((probe, 9))
                return str(udp.getsockname()[0])
        except OSError:
            continue
    return None


def public_host(stack: StackSettings, mailbox: MailboxSettings) -> str:
    """What the printed client commands name: the operator's name, the one address the
    mailbox listens on, the address other machines reach this one by (its default route's
    interface), or, with no route out, 127.0.0.1."""
    if stack.public_host:
        return stack.public_host
    if mailbox.host not in WILDCARDS:
        return mailbox.host
    ipv4_only = mailbox.host == "0.0.0.0"
    families = [socket.AF_INET] if ipv4_only else [socket.AF_INET, socket.AF_INET6]
    return route_address(families) or "127.0.0.1"


def in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def local(host: str) -> str:
    """Where to check that a service listens (`::` takes IPv4 too, and is 0.0.0.0 where the
    machine has no IPv6)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def client_commands(host: str, mailbox: MailboxSettings, transit: TransitSettings) -> str:
    base = (f"wormhole --relay-url ws://{in_url(host)}:{mailbox.port}/v1"
            f" --transit-helper tcp:{in_url(host)}:{transit.port}")
    lines = [f"{PROG} is ready. Clients:", f"  {base} send FILE", f"  {base} receive"]
    for name, settings in (("mailbox", mailbox), ("transit", transit)):
        if settings.metrics_port:
            where = host if settings.metrics_host in WILDCARDS else settings.metrics_host
            lines.append(f"  {name} metrics: http://{in_url(where)}:{settings.metrics_port}"
                         "/metrics")
    return "\n".join(lines)


class Loaded(NamedTuple):
    stack: StackSettings
    database: EmbeddedPostgres | None
    env: dict[str, str]
    mailbox: MailboxSettings
    transit: TransitSettings
    account: pwd.struct_passwd | None


class Stack:
    """Starts the children in order, watches them, stops them in reverse order.

    A signal at any moment cancels what is starting (creating the cluster, waiting for a
    child) and stops whatever runs; that is a requested stop, exit 0.
    """

    def __init__(self, loaded: Loaded) -> None:
        self.stack, self.mailbox, self.transit = loaded.stack, loaded.mailbox, loaded.transit
        self.env = loaded.env
        self.database = loaded.database
        self.account = loaded.account
        self.services: dict[str, trio.Process] = {}
        self.helpers: dict[str, trio.Process] = {}  # stopped with the services
        self.failure: ChildFailed | PostgresError | None = None
        self.starting = trio.CancelScope()
        self.done = trio.Event()

    async def run(self) -> int:
        async with trio.open_nursery() as nursery:
            await nursery.start(self._signals)
            try:
                with self.starting:
                    await self._start(nursery)
                if not self.done.is_set():
                    print(client_commands(public_host(self.stack, self.mailbox), self.mailbox,
                                          self.transit), flush=True)
                    await self.done.wait()
            except (ChildFailed, PostgresError) as exc:
                self._fail(exc)
            finally:
                with trio.CancelScope(shield=True):
                    await self._stop()
                nursery.cancel_scope.cancel()
        if self.failure is not None:
            log.error("%s", self.failure)
            return self.failure.code if isinstance(self.failure, ChildFailed) else 1
        return 0

    def _fail(self, failure: ChildFailed | PostgresError) -> None:
        """The first failure wins; whatever is still starting is given up."""
        if self.failure is None and not self.done.is_set():
            self.failure = failure
        self.done.set()
        self.starting.cancel()

    async def _start(self, nursery: trio.Nursery) -> None:
        timeout = self.stack.startup_timeout_seconds
        if self.database is not None:
            await self.database.start(timeout)
        for name, module in (("mailbox", "wormhole_mailbox"), ("transit", "wormhole_transit")):
            proc = await spawn(name, [sys.executable, "-m", module], self.env,
                               **run_as(self.account))
            self.services[name] = proc
            nursery.start_soon(self._watch, name, proc)
        await self._start_prometheus(nursery)
        for name, settings in (("mailbox", self.mailbox), ("transit", self.transit)):
            if settings.metrics_port:
                host, port, path = settings.metrics_host, settings.metrics_port, "/readyz"
            else:
                host, port, path = settings.host, settings.port, None
            await wait_ready(f"the {name}", self.services[name], local(host), port, path=path,
                             patience=timeout)

    async def _start_prometheus(self, nursery: trio.Nursery) -> None:
        port = self.stack.prometheus_port
        if not port:
            return
        targets = {name: f"{local(s.metrics_host)}:{s.metrics_port}"
                   for name, s in (("mailbox", self.mailbox), ("transit", self.transit))
                   if s.metrics_port}
        self.stack.data_dir.mkdir(parents=True, exist_ok=True)
        proc = await start_prometheus(self.stack.data_dir, port, targets, self.env,
                                      self.account)
        if proc is None:
            log.warning("WORMHOLE_PROMETHEUS_PORT=%d: no prometheus on PATH, not starting one",
                        port)
            return
        self.helpers["prometheus"] = proc
        nursery.start_soon(self._watch, "prometheus", proc)
        log.info("Prometheus on http://127.0.0.1:%d (log: %s)", port,
                 self.stack.data_dir / "prometheus.log")

    async def _watch(self, name: str, proc: trio.Process) -> None:
        status = await proc.wait()
        service = name in self.services  # a helper's status means nothing to the operator
        self._fail(ChildFailed(f"the {name} exited with status {status}: stopping the stack",
                               status if service else None))

    async def _signals(self, task_status: trio.TaskStatus[None]) -> None:
        """Open until the stack has stopped: a second Ctrl-C must not cut the stopping short."""
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.done.is_set():
                    log.info("received %s: already stopping", name)
                    continue
                self.done.set()
                self.starting.cancel()
                log.info("received %s: stopping the services, then PostgreSQL", name)

    async def _stop(self) -> None:
        self.done.set()
        graces = {"mailbox": self.mailbox.shutdown_grace_seconds,
                  "transit": self.transit.shutdown_grace_seconds}
        async with trio.open_nursery() as nursery:
            for name, proc in self.services.items():
                nursery.start_soon(stop_child, name, proc, signal.SIGTERM, graces[name] + 10)
            for name, proc in self.helpers.items():
                nursery.start_soon(stop_child, name, proc, signal.SIGTERM, 30)
        if self.database is not None:
            await self.database.stop()


def load() -> Loaded:
    """The stack's settings and its children's. The children inherit the stack's environment,
    so theirs is set here first and their settings are read from it as they will read them."""
    stack = load_settings(StackSettings)
    account = server_user(stack.postgres_user)
    database = None
    if not commands.external_database():
        database = EmbeddedPostgres(stack.data_dir, account)
    os.environ.update(service_environment(os.environ, database.url() if database else None))
    mailbox = load_settings(MailboxSettings)
    transit = load_settings(TransitSettings)
    for name, port in (("MAILBOX_PORT", mailbox.port), ("TRANSIT_PORT", transit.port)):
        if port == 0:
            raise ConfigError(f"{name}=0: the stack needs a fixed port to tell clients")
    check_unprivileged_ports(account, listen_ports(stack, mailbox, transit))
    return Loaded(stack, database, dict(os.environ), mailbox, transit, account)


def listen_ports(stack: StackSettings, mailbox: MailboxSettings,
                 transit: TransitSettings) -> list[tuple[str, str, int | None]]:
    """Every port the stack's children listen on: variable, address, port."""
    return [("MAILBOX_PORT", mailbox.host, mailbox.port),
            ("MAILBOX_METRICS_PORT", mailbox.metrics_host, mailbox.metrics_port),
            ("TRANSIT_PORT", transit.host, transit.port),
            ("TRANSIT_WEBSOCKET_PORT", transit.host, transit.websocket_port),
            ("TRANSIT_METRICS_PORT", transit.metrics_host, transit.metrics_port),
            ("WORMHOLE_PROMETHEUS_PORT", "127.0.0.1", stack.prometheus_port)]


def check_ports(ports: list[tuple[str, str, int | None]]) -> None:
    """Every port the stack will use, before anything is created or started."""
    for variable, host, port in ports:
        if port is not None:
            check_port(variable, host, port)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["psql"]:
        return commands.psql(args[1:])
    if args[:1] == ["usage"]:
        return commands.usage(args[1:])
    parse_command_line(PROG, SUMMARY, [StackSettings, MailboxSettings, TransitSettings], args,
                       extra=EXTRA, defaults=HELP_DEFAULTS, preface=commands.PREFACE)
    configure_logging("INFO")
    try:
        loaded = load()
        for warning in unknown_variables(StackSettings, os.environ, OTHER_PROGRAMS):
            log.warning("%s", warning)
        check_ports(listen_ports(loaded.stack, loaded.mailbox, loaded.transit))
        make_python_reachable(loaded.account)
        if loaded.database is not None:
            loaded.database.prepare()
        return trio.run(Stack(loaded).run)
    except ConfigError as exc:
        raise config_exit(PROG, str(exc)) from None
    except StartupError as exc:
        log.error("%s", exc)
        return exc.code
    except PostgresError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:  # before the stack's own handler, or after it: nothing runs
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
