"""Environment-only configuration shared by both services.

`ServiceSettings` holds the fields both services have (database, ports, metrics, log level)
with their validators; each service adds its own fields and defaults. pydantic-settings reads
the variables `<env_prefix><FIELD>` (its environment source) and `<VARIABLE>_FILE` of a secret
(`SecretFiles`); it reports errors by field name, and operators set environment variables, so
`load_settings` translates each error back to the variable, its value (secrets masked) and what
was expected.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from psycopg.conninfo import make_conninfo
from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

S = TypeVar("S", bound="EnvSettings")

MASK = "***"


class ConfigError(Exception):
    """Raised for a configuration that must stop the service at start."""


def _empty_is_unset(value: object) -> object:
    return None if value == "" else value


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


Port = Annotated[int, Field(ge=0, le=65535)]
PoolSize = Annotated[int, Field(ge=1, le=64)]
EmptyIsUnset = BeforeValidator(_empty_is_unset)
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)]

_URL_PASSWORD = re.compile(r"(:)[^:@/?#]*(@)")  # user:password@host, with or without scheme
_KEY_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """A connection string with its password, in any of its forms, shown as `***`."""
    return _KEY_PASSWORD.sub(rf"\g<1>{MASK}", _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<2>", url))


class EnvSettings(BaseSettings):
    """Settings read only from environment variables `<env_prefix><FIELD>` (any case).

    Fields named in `secret_fields` may also be given as a path in `<VARIABLE>_FILE`
    (the Docker secrets convention), which is read at start and wins over the variable
    itself; their values are never shown.
    """

    secret_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment and the secrets' files only: no `.env` file, no secrets directory."""
        return (init_settings, SecretFiles(cls), env_settings)

    @classmethod
    def env_name(cls, field: str) -> str:
        prefix = str(cls.model_config.get("env_prefix", ""))
        return f"{prefix}{field}".upper()

    @classmethod
    def known_variables(cls) -> list[str]:
        names = [cls.env_name(field) for field in cls.model_fields]
        return names + [cls.env_name(field) + "_FILE" for field in cls.secret_fields]

    @classmethod
    def shown(cls, field: str, value: object) -> str:
        """A value as it may appear in an error: secrets masked."""
        if field in cls.secret_fields and isinstance(value, str):
            return repr(mask_url(value) if field.endswith("url") else MASK)
        return repr(value)


class ServiceSettings(EnvSettings):
    """The fields both services have; subclasses set `model_config` with their `env_prefix`
    and `extra="ignore"`, and their own defaults where they differ."""

    secret_fields: ClassVar[tuple[str, ...]] = ("database_url", "database_password")

    database_url: Annotated[str | None, EmptyIsUnset] = Field(
        default=None, description="PostgreSQL URL (postgresql://user@host:port/db) or"
        " key=value connection string")
    database_password: Annotated[str | None, EmptyIsUnset] = Field(
        default=None, description="database password, kept out of the URL (or *_FILE: a file"
        " holding it)")
    database_pool_size: PoolSize = Field(default=4, description="database connections")
    database_startup_timeout_seconds: float = Field(
        default=30, ge=0, description="how long to wait at start for an unreachable database")
    host: str = Field(default="::", description="address to listen on: `::` every address,"
                      " IPv6 and IPv4 (dual stack); an IPv4 address (`0.0.0.0`: every IPv4"
                      " address) or an IPv6 address: that family only")
    port: Port = Field(default=0, description="port to listen on")
    blur_usage_seconds: Annotated[int | None, EmptyIsUnset] = Field(
        default=None, ge=1, description="round recorded times to this many seconds (privacy)")
    shutdown_grace_seconds: float = Field(
        default=3, ge=0, description="on SIGTERM, how long connections may finish")
    metrics_host: str = Field(default="0.0.0.0", description="address of /metrics, /healthz,"
                              " /readyz")
    metrics_port: Port = Field(default=0, description="port of /metrics (0: none)")
    log_level: LogLevel = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR"
                                " (any case)")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value and "=" not in value:
            raise ValueError("expected a PostgreSQL URL (postgresql://user@host/db)"
                             " or a key=value connection string")
        return value

    def database_shown(self) -> str:
        """`<PREFIX>DATABASE_URL=<url>` with its password masked, for messages."""
        return f"{self.env_name('database_url')}={mask_url(self.database_url or '')}"

    def connection_string(self) -> str | None:
        """The database URL with the password from its own variable or file, if given."""
        if self.database_url is None or not self.database_password:
            return self.database_url
        return make_conninfo(self.database_url, password=self.database_password)


def secret_file(cls: type[EnvSettings], field: str) -> tuple[str, str] | None:
    """`<VARIABLE>_FILE` and the path it holds, when it is set (not empty) for `field`."""
    name = cls.env_name(field) + "_FILE"
    path = next((value for key, value in os.environ.items() if key.upper() == name), "")
    return (name, path) if path else None


class SecretFiles(PydanticBaseSettingsSource):
    """The value of each secret field whose `<VARIABLE>_FILE` is set: that file's contents,
    stripped; a file that cannot be read stops the service with `ConfigError`."""

    def __init__(self, settings_cls: type[EnvSettings]) -> None:
        super().__init__(settings_cls)
        self.secrets = settings_cls

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        given = secret_file(self.secrets, field_name)
        if field_name not in self.secrets.secret_fields or given is None:
            return None, field_name, False
        name, path = given
        try:
            return Path(path).read_text(encoding="utf-8").strip(), field_name, False
        except OSError as exc:
            raise ConfigError(f"{name}={path!r}: cannot read the file ({exc.strerror})") from exc

    def __call__(self) -> dict[str, Any]:
        values = {}
        for field_name in self.secrets.secret_fields:
            value, key, _ = self.get_field_value(self.secrets.model_fields[field_name], field_name)
            if value is not None:
                values[key] = value
        return values


def _expected(message: str) -> str:
    """pydantic's message, reworded as what the variable should hold."""
    message = message.removeprefix("Value error, ")
    if message.startswith("Input should be "):
        return "expected " + message.removeprefix("Input should be ")
    return message[:1].lower() + message[1:]


def _given(cls: type[EnvSettings], field: str, validated: object) -> str:
    """Where a field's value came from and that value, as read (before any validator changed
    it; `validated` if no source has it), secrets masked: `<VARIABLE>=<value>:` or
    `<VARIABLE>_FILE=<path>: the file holds <value>,`."""
    info = cls.model_fields.get(field)
    if info is None:
        return f"configuration={validated!r}:"
    from_file = SecretFiles(cls).get_field_value(info, field)[0]
    where = secret_file(cls, field)
    if from_file is not None and where is not None:
        return f"{where[0]}={where[1]!r}: the file holds {cls.shown(field, from_file)},"
    value = EnvSettingsSource(cls).get_field_value(info, field)[0]
    return f"{cls.env_name(field)}={cls.shown(field, validated if value is None else value)}:"


def describe_errors(cls: type[EnvSettings], error: ValidationError) -> list[str]:
    """One phrase per problem, naming the environment variable rather than the field."""
    lines = []
    for item in error.errors():
        loc = item.get("loc") or ()
        field = str(loc[0]) if loc else ""
        if item.get("type") == "missing":
            lines.append(f"{cls.env_name(field)} is not set: it is required")
        else:
            lines.append(f"{_given(cls, field, item.get('input'))} {_expected(item['msg'])}")
    return lines


def load_settings(cls: type[S]) -> S:
    """Build settings from the environment or raise `ConfigError` naming the variables."""
    try:
        return cls()
    except ValidationError as exc:
        raise ConfigError("; ".join(describe_errors(cls, exc))) from None


def unknown_variables(cls: type[EnvSettings], environ: Mapping[str, str],
                      others: Collection[str] = ()) -> list[str]:
    """A warning per variable with the service's prefix that no setting knows (`others`:
    names with that prefix known to belong to other programs, not warned about)."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    known = cls.known_variables()
    warnings = []
    for name in sorted(environ):
        if not name.upper().startswith(prefix) or name.upper() in known or name in others:
            continue
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"{name} is not a known setting and is ignored{hint}")
    return warnings
