"""`wormhole-stack`'s set-up decisions, without starting anything: which cluster is incomplete,
which ports an unprivileged user may not take, what the children and the operator are told."""

from __future__ import annotations

import pwd
import socket
from pathlib import Path

import pytest
from wormhole_common.cli import variables_help
from wormhole_common.settings import ConfigError, unknown_variables
from wormhole_mailbox.settings import MailboxSettings
from wormhole_stack import account
from wormhole_stack.__main__ import (
    HELP_DEFAULTS,
    OTHER_PROGRAMS,
    client_commands,
    public_host,
    route_address,
    service_environment,
)
from wormhole_stack.postgres import incomplete_cluster
from wormhole_stack.settings import StackSettings
from wormhole_transit.settings import TransitSettings

from tests.support.environment import settings_from

URL = "host=/data/socket user=wormhole dbname=wormhole"


def cluster(path: Path, *databases: str, control: bool = True) -> Path:
    """What `initdb` leaves on disk, as far as `incomplete_cluster` looks."""
    (path / "global").mkdir(parents=True)
    (path / "PG_VERSION").write_text("18\n")
    if control:
        (path / "global" / "pg_control").write_bytes(b"")
    for oid in databases:
        (path / "base" / oid).mkdir(parents=True)
    return path


def test_no_cluster_is_not_an_incomplete_one(tmp_path: Path) -> None:
    assert not incomplete_cluster(tmp_path / "postgres")
    assert not incomplete_cluster(tmp_path)


@pytest.mark.parametrize(("databases", "control"), [
    ((), False),  # killed while bootstrapping
    (("1",), True),  # killed after bootstrap
    (("1", "4"), True),  # killed before the postgres database was made
])
def test_an_interrupted_initdb_is_incomplete(tmp_path: Path, databases: tuple[str, ...],
                                             control: bool) -> None:
    assert incomplete_cluster(cluster(tmp_path / "postgres", *databases, control=control))


def test_a_cluster_holding_a_database_of_ours_is_never_incomplete(tmp_path: Path) -> None:
    assert not incomplete_cluster(cluster(tmp_path / "postgres", "1", "16384", control=False))


def test_a_wormhole_typo_names_the_closest_variable_and_other_programs_are_left_alone() -> None:
    env = {"WORMHOLE_DATADIR": "/x", "WORMHOLE_RELAY_URL": "ws://x/v1", "WORMHOLE_DATA_DIR": "y",
           "WORMHOLE_TEST_DATABASE_URL": URL}
    assert unknown_variables(StackSettings, env, OTHER_PROGRAMS) == [
        "WORMHOLE_DATADIR is not a known setting and is ignored (did you mean"
        " WORMHOLE_DATA_DIR?)"]


def test_the_children_get_the_database_and_metrics_on_loopback_unless_told() -> None:
    env = service_environment({"TRANSIT_METRICS_HOST": "0.0.0.0"}, URL)
    assert (env["MAILBOX_DATABASE_URL"], env["TRANSIT_DATABASE_URL"]) == (URL, URL)
    assert (env["MAILBOX_METRICS_HOST"], env["TRANSIT_METRICS_HOST"]) == \
        ("127.0.0.1", "0.0.0.0")


def test_help_shows_the_stacks_own_defaults() -> None:
    text = variables_help(MailboxSettings, HELP_DEFAULTS) + variables_help(TransitSettings,
                                                                           HELP_DEFAULTS)
    assert "required" not in text
    assert "MAILBOX_DATABASE_URL (or MAILBOX_DATABASE_URL_FILE)  [default: the embedded" \
           " PostgreSQL]" in text
    assert "  MAILBOX_METRICS_HOST  [default: 127.0.0.1]" in text
    assert text.count("half the CPUs available") == 1


def settings(**env: str) -> tuple[StackSettings, MailboxSettings, TransitSettings]:
    full = service_environment(env, URL)
    return (settings_from(StackSettings, full), settings_from(MailboxSettings, full),
            settings_from(TransitSettings, full))


def test_the_printed_host_is_the_operators_name_else_the_one_address_listened_on() -> None:
    stack, mailbox, _ = settings(WORMHOLE_PUBLIC_HOST="wormhole.example", MAILBOX_HOST="::1")
    assert public_host(stack, mailbox) == "wormhole.example"
    stack, mailbox, transit = settings(MAILBOX_HOST="::1")
    assert public_host(stack, mailbox) == "::1"
    assert client_commands("::1", mailbox, transit).splitlines()[1:] == [
        "  wormhole --relay-url ws://[::1]:4000/v1 --transit-helper tcp:[::1]:4001 send FILE",
        "  wormhole --relay-url ws://[::1]:4000/v1 --transit-helper tcp:[::1]:4001 receive",
        "  mailbox metrics: http://127.0.0.1:9410/metrics",
        "  transit metrics: http://127.0.0.1:9411/metrics",
    ]


def test_on_every_address_the_printed_host_is_the_default_routes_or_loopback() -> None:
    stack, mailbox, _ = settings(MAILBOX_HOST="0.0.0.0")
    route = route_address([socket.AF_INET])
    assert public_host(stack, mailbox) == (route or "127.0.0.1")
    if route is not None:
        assert socket.inet_pton(socket.AF_INET, route)  # an address, not a host name


def nobody() -> pwd.struct_passwd:
    return pwd.struct_passwd(("nobody", "x", 65534, 65534, "", "/", "/bin/false"))


def test_ports_below_the_unprivileged_start_are_refused_for_the_user() -> None:
    ports = [("MAILBOX_PORT", "0.0.0.0", 4000), ("TRANSIT_WEBSOCKET_PORT", "0.0.0.0", None),
             ("TRANSIT_PORT", "0.0.0.0", 443)]
    account.check_unprivileged_ports(None, ports, 1024)  # not root: the ports are ours to try
    account.check_unprivileged_ports(nobody(), ports, 0)  # as in a Docker container
    with pytest.raises(ConfigError) as info:
        account.check_unprivileged_ports(nobody(), ports, 1024)
    assert str(info.value) == (
        "TRANSIT_PORT=443: as root the services run as user nobody (WORMHOLE_POSTGRES_USER),"
        " which may not listen below port 1024; choose a port from 1024 up and forward 443 to"
        " it (a firewall rule or a proxy)")


def test_the_systems_unprivileged_start_is_read() -> None:
    assert 0 <= account.unprivileged_port_start() <= 65536
