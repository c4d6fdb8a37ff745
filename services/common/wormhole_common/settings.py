"""Environment-only configuration shared by both services.

`ServiceSettings` holds the fields both services have (database, ports, metrics, log level)
with their validators; each service adds its own fields and defaults. pydantic-settings
reports errors by field name; operators set environment variables, so `load_settings`
translates each error back to the variable, its value (secrets masked) and what was expected.
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
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

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
    """Settings read only from environment variables `<env_prefix><FIELD>` by `load_settings`.

    Fields named in `secret_fields` may also be given as a path in `<VARIABLE>_FILE`
    (the Docker secrets convention), which is read at start; their values are never shown.
    """

    secret_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what `load_settings` passes: it reads the environment itself, once."""
        return (init_settings,)

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


def _secrets_from_files(cls: type[EnvSettings], env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in cls.secret_fields:
        name = cls.env_name(field) + "_FILE"
        path = env.get(name)
        if not path:
            continue
        try:
            values[field] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}={path!r}: cannot read the file ({exc.strerror})") from exc
    return values


def _expected(message: str) -> str:
    """pydantic's message, reworded as what the variable should hold."""
    message = message.removeprefix("Value error, ")
    if message.startswith("Input should be "):
        return "expected " + message.removeprefix("Input should be ")
    return message[:1].lower() + message[1:]


def describe_errors(
    cls: type[EnvSettings], error: ValidationError, env: Mapping[str, str],
    from_files: Mapping[str, object],
) -> list[str]:
    """One phrase per problem, naming the environment variable rather than the field."""
    lines = []
    for item in error.errors():
        loc = item.get("loc") or ()
        field = str(loc[0]) if loc else ""
        name = cls.env_name(field) if field else "configuration"
        if item.get("type") == "missing":
            lines.append(f"{name} is not set: it is required")
            continue
        if field in from_files:
            file_name = f"{name}_FILE"
            lines.append(f"{file_name}={env.get(file_name, '')!r}: the file holds"
                         f" {cls.shown(field, from_files[field])}, {_expected(item['msg'])}")
            continue
        value = env.get(name, item.get("input"))
        lines.append(f"{name}={cls.shown(field, value)}: {_expected(item['msg'])}")
    return lines


def load_settings(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Build settings from the environment or raise `ConfigError` naming the variables."""
    env = os.environ if environ is None else environ
    overrides = _secrets_from_files(cls, env)
    values = {field: env[cls.env_name(field)] for field in cls.model_fields
              if cls.env_name(field) in env}
    try:
        return cls(**{**values, **overrides})
    except ValidationError as exc:
        raise ConfigError("; ".join(describe_errors(cls, exc, env, overrides))) from None


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
