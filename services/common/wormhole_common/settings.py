"""Environment-only configuration shared by both services.

pydantic-settings reports errors by field name; operators set environment variables, so
`load_settings` translates each error back to the variable, its value and what was expected,
and stops the process with one line per problem.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound="ServiceSettings")


class ConfigError(Exception):
    """Raised for a configuration that must stop the service at start."""


class ServiceSettings(BaseSettings):
    """Base class: subclasses set `model_config` with their `env_prefix`.

    Fields named in `secret_fields` may also be given as a path in `<VARIABLE>_FILE`
    (the Docker secrets convention), which is read at start.
    """

    secret_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def env_name(cls, field: str) -> str:
        prefix = str(cls.model_config.get("env_prefix", ""))
        return f"{prefix}{field}".upper()


def _secrets_from_files(cls: type[ServiceSettings], environ: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in cls.secret_fields:
        name = cls.env_name(field) + "_FILE"
        path = environ.get(name)
        if not path:
            continue
        try:
            values[field] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}={path!r}: cannot read the file ({exc.strerror})") from exc
    return values


def describe_errors(cls: type[ServiceSettings], error: ValidationError) -> list[str]:
    """One line per problem, naming the environment variable rather than the field."""
    lines = []
    for item in error.errors():
        loc = item.get("loc") or ()
        field = str(loc[0]) if loc else ""
        name = cls.env_name(field) if field else "configuration"
        message = item.get("msg", "invalid value")
        if item.get("type") == "missing":
            lines.append(f"{name} is not set: it is required")
            continue
        value = os.environ.get(name, item.get("input"))
        lines.append(f"{name}={value!r}: {message}")
    return lines


def load_settings(cls: type[S], environ: dict[str, str] | None = None) -> S:
    """Build settings from the environment or raise `ConfigError` naming the variables."""
    env = dict(os.environ if environ is None else environ)
    overrides = _secrets_from_files(cls, env)
    try:
        if environ is None:
            return cls(**overrides)
        return cls(**{**_from_mapping(cls, env), **overrides})
    except ValidationError as exc:
        raise ConfigError("; ".join(describe_errors(cls, exc))) from exc


def _from_mapping(cls: type[ServiceSettings], env: dict[str, str]) -> dict[str, Any]:
    """Pick a class's variables out of an explicit mapping (tests pass one)."""
    values: dict[str, Any] = {}
    for field in cls.model_fields:
        name = cls.env_name(field)
        if name in env:
            values[field] = env[name]
    return values


def load_or_exit(cls: type[S]) -> S:
    """`load_settings` for a console script: print the problem and exit 2."""
    try:
        return load_settings(cls)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
