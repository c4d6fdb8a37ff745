"""`wormhole-stack`: PostgreSQL, the mailbox and the relay in one supervised process tree.

With no configuration it keeps everything in `./wormhole-data` and needs no database server;
with `MAILBOX_DATABASE_URL` it uses that database instead. Every `MAILBOX_*`/`TRANSIT_*`
variable applies to its service. Ctrl-C or SIGTERM stops the services, then PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

import trio
from wormhole_common.cli import config_exit, parse_command_line
from wormhole_common.logs import configure_logging
from wormhole_common.settings import ConfigError, load_settings
from wormhole_common.startup import StartupError, check_port
from wormhole_mailbox.settings import MailboxSettings
from wormhole_transit.settings import TransitSettings

from wormhole_stack.children import ChildFailed, spawn, stop, wait_ready
from wormhole_stack.embedded import EmbeddedPostgres
from wormhole_stack.postgres import PostgresError, server_user
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


def service_environment(environ: dict[str, str], embedded_url: str | None) -> dict[str, str]:
    """The children's environment: the operator's, plus the database they share."""
    env = dict(environ)
    if embedded_url is not None:
        env["MAILBOX_DATABASE_URL"] = embedded_url
        env.setdefault("TRANSIT_DATABASE_URL", embedded_url)
    elif not (env.get("TRANSIT_DATABASE_URL") or env.get("TRANSIT_DATABASE_URL_FILE")):
        for name in DATABASE_VARIABLES:
            if f"MAILBOX_{name}" in env:
                env[f"TRANSIT_{name}"] = env[f"MAILBOX_{name}"]
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def public_host(stack: StackSettings, mailbox: MailboxSettings) -> str:
    if stack.public_host:
        return stack.public_host
    if mailbox.host not in ("0.0.0.0", "::", ""):
        return mailbox.host
    return socket.gethostname()


def local(host: str) -> str:
    """Where to check that a service listens (`::` takes IPv4 too, and is 0.0.0.0 where the
    machine has no IPv6)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def client_commands(host: str, mailbox: MailboxSettings, transit: TransitSettings) -> str:
    base = (f"wormhole --relay-url ws://{host}:{mailbox.port}/v1"
            f" --transit-helper tcp:{host}:{transit.port}")
    lines = [f"{PROG} is ready. Clients:", f"  {base} send FILE", f"  {base} receive"]
    for name, settings in (("mailbox", mailbox), ("transit", transit)):
        if settings.metrics_port:
            lines.append(f"  {name} metrics: http://{host}:{settings.metrics_port}/metrics")
    return "\n".join(lines)


class Stack:
    """Starts the children in order, watches them, stops them in reverse order."""

    def __init__(self, stack: StackSettings, mailbox: MailboxSettings,
                 transit: TransitSettings, env: dict[str, str],
                 database: EmbeddedPostgres | None) -> None:
        self.stack, self.mailbox, self.transit = stack, mailbox, transit
        self.env = env
        self.database = database
        self.services: dict[str, trio.Process] = {}
        self.helpers: dict[str, trio.Process] = {}  # stopped with the services
        self.failure: str | None = None
        self.done = trio.Event()

    async def run(self) -> int:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signals)
            try:
                await self._start(nursery)
                print(client_commands(public_host(self.stack, self.mailbox), self.mailbox,
                                      self.transit), flush=True)
                await self.done.wait()
            except (ChildFailed, PostgresError) as exc:
                self.failure = str(exc)
            finally:
                with trio.CancelScope(shield=True):
                    await self._stop()
                nursery.cancel_scope.cancel()
        if self.failure is not None:
            log.error("%s", self.failure)
            return 1
        return 0

    async def _start(self, nursery: trio.Nursery) -> None:
        timeout = self.stack.startup_timeout_seconds
        if self.database is not None:
            await self.database.start(timeout)
        for name, module in (("mailbox", "wormhole_mailbox"), ("transit", "wormhole_transit")):
            proc = await spawn(name, [sys.executable, "-m", module], self.env)
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
        proc = await start_prometheus(self.stack.data_dir, port, targets, self.env)
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
        if not self.done.is_set():
            self.failure = f"the {name} exited with status {status}: stopping the stack"
            self.done.set()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s: stopping the services, then PostgreSQL",
                         signal.Signals(signum).name)
                self.done.set()
                return

    async def _stop(self) -> None:
        self.done.set()
        graces = {"mailbox": self.mailbox.shutdown_grace_seconds,
                  "transit": self.transit.shutdown_grace_seconds}
        async with trio.open_nursery() as nursery:
            for name, proc in self.services.items():
                nursery.start_soon(stop, name, proc, signal.SIGTERM, graces[name] + 10)
            for name, proc in self.helpers.items():
                nursery.start_soon(stop, name, proc, signal.SIGTERM, 30)
        if self.database is not None:
            await self.database.stop()


def load(environ: dict[str, str]) -> tuple[StackSettings, EmbeddedPostgres | None,
                                          dict[str, str], MailboxSettings, TransitSettings]:
    stack = load_settings(StackSettings, environ)
    external = environ.get("MAILBOX_DATABASE_URL") or environ.get("MAILBOX_DATABASE_URL_FILE")
    database = None
    if not external:
        database = EmbeddedPostgres(stack.data_dir, server_user(stack.postgres_user))
    env = service_environment(environ, database.url() if database else None)
    mailbox = load_settings(MailboxSettings, env)
    transit = load_settings(TransitSettings, env)
    for name, port in (("MAILBOX_PORT", mailbox.port), ("TRANSIT_PORT", transit.port)):
        if port == 0:
            raise ConfigError(f"{name}=0: the stack needs a fixed port to tell clients")
    return stack, database, env, mailbox, transit


def check_ports(stack: StackSettings, mailbox: MailboxSettings,
                transit: TransitSettings) -> None:
    """Every port the stack will use, before anything is created or started."""
    check_port("MAILBOX_PORT", mailbox.host, mailbox.port)
    check_port("MAILBOX_METRICS_PORT", mailbox.metrics_host, mailbox.metrics_port)
    check_port("TRANSIT_PORT", transit.host, transit.port)
    if transit.websocket_port is not None:
        check_port("TRANSIT_WEBSOCKET_PORT", transit.host, transit.websocket_port)
    check_port("TRANSIT_METRICS_PORT", transit.metrics_host, transit.metrics_port)
    check_port("WORMHOLE_PROMETHEUS_PORT", "127.0.0.1", stack.prometheus_port)


def main(argv: Sequence[str] | None = None) -> int:
    parse_command_line(PROG, SUMMARY, [StackSettings, MailboxSettings, TransitSettings], argv,
                       extra=EXTRA)
    configure_logging("INFO")
    try:
        stack, database, env, mailbox, transit = load(dict(os.environ))
        check_ports(stack, mailbox, transit)
        if database is not None:
            database.prepare()
    except ConfigError as exc:
        raise config_exit(PROG, str(exc)) from None
    except StartupError as exc:
        log.error("%s", exc)
        return exc.code
    except PostgresError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while the cluster was being created: nothing runs yet
        return 130
    return trio.run(Stack(stack, mailbox, transit, env, database).run)


if __name__ == "__main__":
    raise SystemExit(main())
