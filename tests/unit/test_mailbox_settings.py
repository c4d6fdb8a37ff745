"""`MAILBOX_*` environment variables: parsing, defaults, errors naming the variable, secrets."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from wormhole_common.settings import ConfigError
from wormhole_mailbox.settings import MailboxSettings

from tests.support.environment import settings_from

URL = "postgresql://mailbox@db.example/mailbox"


def load(**env: str) -> MailboxSettings:
    environ = {"MAILBOX_DATABASE_URL": URL}
    environ.update({f"MAILBOX_{k.upper()}": v for k, v in env.items()})
    return settings_from(MailboxSettings, environ)


def test_defaults() -> None:
    s = load()
    assert s.database_url == URL
    assert s.database_password is None
    assert s.database_pool_size == 4
    assert s.database_startup_timeout_seconds == 30
    assert (s.host, s.port) == ("::", 4000)
    assert (s.motd, s.advertise_version, s.signal_error) == (None, None, None)
    assert s.allow_list is True
    assert s.channel_expiry_seconds == 660
    assert s.prune_interval_seconds == 300
    assert s.blur_usage_seconds is None
    assert s.trusted_proxies == ()
    assert s.permissions == "none"
    assert s.hashcash is None
    assert s.hashcash_bits == 20
    assert s.websocket_ping_interval_seconds == 60
    assert s.websocket_ping_timeout_seconds == 600
    assert s.shutdown_grace_seconds == 3
    assert s.log_level == "INFO"
    assert s.connection_string() == URL


def test_every_variable_is_parsed() -> None:
    s = load(
        database_password="pw", database_pool_size="9", database_startup_timeout_seconds="0",
        host="0.0.0.0", port="14004",
        motd="Welcome!", advertise_version="0.24.0", signal_error="maintenance",
        allow_list="false", channel_expiry_seconds="4", prune_interval_seconds="0.5",
        blur_usage_seconds="3600", trusted_proxies="10.0.0.0/8, fd00::/8,192.0.2.1",
        permissions="hashcash", hashcash_bits="12", websocket_ping_interval_seconds="30",
        websocket_ping_timeout_seconds="90", shutdown_grace_seconds="0", log_level="DEBUG",
    )
    assert s.database_password == "pw"
    assert s.database_pool_size == 9
    assert s.database_startup_timeout_seconds == 0
    assert (s.host, s.port) == ("0.0.0.0", 14004)
    assert (s.motd, s.advertise_version, s.signal_error) == ("Welcome!", "0.24.0", "maintenance")
    assert s.allow_list is False
    assert s.channel_expiry_seconds == 4
    assert s.prune_interval_seconds == 0.5
    assert s.blur_usage_seconds == 3600
    assert s.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"),
        ipaddress.ip_network("192.0.2.1/32"),
    )
    assert s.permissions == "hashcash"
    assert s.hashcash == 12
    assert s.websocket_ping_interval_seconds == 30
    assert s.websocket_ping_timeout_seconds == 90
    assert s.shutdown_grace_seconds == 0
    assert s.log_level == "DEBUG"
    assert "password=pw" in s.connection_string()


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("yes", True),
                                                 ("false", False), ("0", False), ("no", False)])
def test_allow_list_booleans(value: str, expected: bool) -> None:
    assert load(allow_list=value).allow_list is expected


def test_empty_optional_strings_are_unset() -> None:
    s = load(motd="", advertise_version="", signal_error="", blur_usage_seconds="",
             database_password="", trusted_proxies="")
    assert (s.motd, s.advertise_version, s.signal_error) == (None, None, None)
    assert s.blur_usage_seconds is None
    assert s.database_password is None
    assert s.trusted_proxies == ()


def test_non_cidr_host_bits_are_accepted() -> None:
    assert load(trusted_proxies="10.1.2.3/8").trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
    )


def test_hashcash_bits_only_count_with_hashcash_permissions() -> None:
    assert load(hashcash_bits="9").hashcash is None
    assert load(permissions="hashcash", hashcash_bits="9").hashcash == 9


def test_key_value_connection_string_is_accepted() -> None:
    assert load(database_url="host=/tmp dbname=x").database_url == "host=/tmp dbname=x"


def test_unrelated_variables_are_ignored() -> None:
    s = settings_from(MailboxSettings, {"MAILBOX_DATABASE_URL": URL, "MAILBOX_NOPE": "1",
                                                "TRANSIT_PORT": "x"})
    assert s.port == 4000


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_POOL_SIZE", "0"),
        ("DATABASE_POOL_SIZE", "65"),
        ("DATABASE_POOL_SIZE", "four"),
        ("DATABASE_STARTUP_TIMEOUT_SECONDS", "-1"),
        ("DATABASE_STARTUP_TIMEOUT_SECONDS", "forever"),
        ("PORT", "65536"),
        ("PORT", "-1"),
        ("PORT", "http"),
        ("ALLOW_LIST", "maybe"),
        ("CHANNEL_EXPIRY_SECONDS", "0"),
        ("CHANNEL_EXPIRY_SECONDS", "soon"),
        ("PRUNE_INTERVAL_SECONDS", "-5"),
        ("BLUR_USAGE_SECONDS", "0"),
        ("BLUR_USAGE_SECONDS", "1.5"),
        ("TRUSTED_PROXIES", "10.0.0.0/8,not-a-network"),
        ("PERMISSIONS", "password"),
        ("HASHCASH_BITS", "0"),
        ("HASHCASH_BITS", "65"),
        ("WEBSOCKET_PING_INTERVAL_SECONDS", "0"),
        ("WEBSOCKET_PING_TIMEOUT_SECONDS", "-1"),
        ("SHUTDOWN_GRACE_SECONDS", "-1"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(**{variable.lower(): value})
    message = str(info.value)
    assert f"MAILBOX_{variable}=" in message
    assert value in message


def test_missing_database_url_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="MAILBOX_DATABASE_URL is not set"):
        settings_from(MailboxSettings, {})


@pytest.mark.parametrize("value", ["", "not a url"])
def test_bad_database_url_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="MAILBOX_DATABASE_URL"):
        settings_from(MailboxSettings, {"MAILBOX_DATABASE_URL": value})


def test_several_problems_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        load(port="x", log_level="LOUD")
    assert "MAILBOX_PORT=" in str(info.value) and "MAILBOX_LOG_LEVEL=" in str(info.value)


def test_database_url_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text(URL + "\n", encoding="utf-8")
    s = settings_from(MailboxSettings, {"MAILBOX_DATABASE_URL_FILE": str(secret)})
    assert s.database_url == URL


def test_database_password_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n", encoding="utf-8")
    s = load(database_password_file=str(secret))
    assert s.database_password == "s3cret"
    assert "password=s3cret" in s.connection_string()
    assert "s3cret" not in s.database_url


def test_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError, match="MAILBOX_DATABASE_URL_FILE") as info:
        settings_from(MailboxSettings, {"MAILBOX_DATABASE_URL_FILE": str(missing)})
    assert str(missing) in str(info.value)


def test_empty_secret_file_variable_is_ignored() -> None:
    assert load(database_url_file="").database_url == URL


def test_secret_file_wins_over_the_plain_variable(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("postgresql://from@file/db", encoding="utf-8")
    s = load(database_url_file=str(secret))
    assert s.database_url == "postgresql://from@file/db"
