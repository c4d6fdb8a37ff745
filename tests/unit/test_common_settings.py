"""The settings base both services share: one-line errors, masked secrets, typo warnings."""

from __future__ import annotations

from pathlib import Path

import pytest
from wormhole_common.cli import default_text, variables_help
from wormhole_common.settings import (
    ConfigError,
    ServiceSettings,
    load_settings,
    mask_url,
    unknown_variables,
)
from wormhole_mailbox.settings import MailboxSettings
from wormhole_transit.settings import TransitSettings

from tests.support.environment import settings_from

URL = "postgresql://mailbox@db.example/mailbox"
SERVICES: list[type[ServiceSettings]] = [MailboxSettings, TransitSettings]


def error(cls: type[ServiceSettings], **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        settings_from(cls, env)
    return str(info.value)


@pytest.mark.parametrize("cls", SERVICES)
@pytest.mark.parametrize("value", ["info", "Info", "INFO", "debug", "Warning", "error"])
def test_log_level_is_case_insensitive(cls: type[ServiceSettings], value: str) -> None:
    prefix = cls.env_name("")
    settings = settings_from(cls, {f"{prefix}DATABASE_URL": URL,
                                           f"{prefix}LOG_LEVEL": value})
    assert settings.log_level == value.upper()


@pytest.mark.parametrize("cls", SERVICES)
def test_bad_log_level_says_what_is_expected(cls: type[ServiceSettings]) -> None:
    prefix = cls.env_name("")
    message = error(cls, **{f"{prefix}DATABASE_URL": URL, f"{prefix}LOG_LEVEL": "loud"})
    assert message == (f"{prefix}LOG_LEVEL='loud': expected 'DEBUG', 'INFO', 'WARNING'"
                       " or 'ERROR'")


def test_bad_url_with_a_password_variable_shows_neither_password() -> None:
    message = error(MailboxSettings, MAILBOX_DATABASE_URL="foo", MAILBOX_DATABASE_PASSWORD="s3")
    assert message == ("MAILBOX_DATABASE_URL='foo': expected a PostgreSQL URL"
                       " (postgresql://user@host/db) or a key=value connection string")


def test_password_in_a_bad_url_is_masked() -> None:
    message = error(TransitSettings, TRANSIT_DATABASE_URL="postgres:s3cret@db",
                    TRANSIT_PORT="x")
    assert message == (
        "TRANSIT_DATABASE_URL='postgres:***@db': expected a PostgreSQL URL"
        " (postgresql://user@host/db) or a key=value connection string;"
        " TRANSIT_PORT='x': expected a valid integer, unable to parse string as an integer"
    )


def test_password_variable_value_is_never_shown() -> None:
    message = error(MailboxSettings, MAILBOX_DATABASE_URL=URL,
                    MAILBOX_DATABASE_PASSWORD="s3cret", MAILBOX_PORT="http")
    assert message == "MAILBOX_PORT='http': expected a valid integer, unable to parse string as" \
        " an integer"


def test_bad_url_from_a_file_masks_the_file_contents(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("root:s3cret@db\n")
    message = error(MailboxSettings, MAILBOX_DATABASE_URL_FILE=str(secret))
    assert message == (
        f"MAILBOX_DATABASE_URL_FILE='{secret}': the file holds 'root:***@db', expected a"
        " PostgreSQL URL (postgresql://user@host/db) or a key=value connection string"
    )


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:pw@h:5432/d", "postgresql://u:***@h:5432/d"),
    ("postgresql://u@h/d?password=pw&sslmode=require",
     "postgresql://u@h/d?password=***&sslmode=require"),
    ("postgresql://u:pw@[::1]:5432/d", "postgresql://u:***@[::1]:5432/d"),
    ("host=h password=pw dbname=d", "host=h password=*** dbname=d"),
    ("host=h password='p w' dbname=d", "host=h password=*** dbname=d"),
    ("postgresql://u@h/d", "postgresql://u@h/d"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_a_typo_gets_a_warning_with_the_closest_name() -> None:
    env = {"MAILBOX_LOG_LEVL": "DEBUG", "MAILBOX_PORT": "1", "MAILBOX_DATABASE_URL_FILE": "f",
           "MAILBOX_SOMETHING_ELSE": "1", "TRANSIT_PORTT": "1"}
    assert unknown_variables(MailboxSettings, env) == [
        "MAILBOX_LOG_LEVL is not a known setting and is ignored (did you mean MAILBOX_LOG_LEVEL?)",
        "MAILBOX_SOMETHING_ELSE is not a known setting and is ignored",
    ]
    assert unknown_variables(TransitSettings, env) == [
        "TRANSIT_PORTT is not a known setting and is ignored (did you mean TRANSIT_PORT?)",
    ]


def test_shared_fields_have_each_services_defaults() -> None:
    mailbox = settings_from(MailboxSettings, {"MAILBOX_DATABASE_URL": URL})
    transit = settings_from(TransitSettings, {})
    assert (mailbox.port, mailbox.metrics_port, mailbox.database_pool_size) == (4000, 9410, 4)
    assert (transit.port, transit.metrics_port, transit.database_pool_size) == (4001, 9411, 2)
    assert (mailbox.shutdown_grace_seconds, transit.shutdown_grace_seconds) == (3, 10)
    assert mailbox.database_startup_timeout_seconds == transit.database_startup_timeout_seconds


def test_the_process_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSIT_PORT", "1234")
    monkeypatch.setenv("transit_log_level", "debug")  # names in any case, as pydantic-settings
    settings = load_settings(TransitSettings)
    assert (settings.port, settings.log_level) == (1234, "DEBUG")


def test_defaults_as_shown() -> None:
    assert default_text(MailboxSettings, "database_url") == "required"
    assert default_text(MailboxSettings, "motd") == "unset"
    assert default_text(MailboxSettings, "trusted_proxies") == "empty"
    assert default_text(MailboxSettings, "allow_list") == "true"
    assert default_text(MailboxSettings, "channel_expiry_seconds") == "660"
    assert default_text(TransitSettings, "log_level") == "INFO"


@pytest.mark.parametrize("cls", SERVICES)
def test_help_lists_every_variable_with_default_and_meaning(cls: type[ServiceSettings]) -> None:
    text = variables_help(cls)
    for field, info in cls.model_fields.items():
        assert f"  {cls.env_name(field)}" in text
        assert info.description, f"{field} has no description"
    assert f"{cls.env_name('port')}  [default: {default_text(cls, 'port')}]" in text
