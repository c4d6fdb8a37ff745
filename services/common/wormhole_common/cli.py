"""The console scripts' front door: `--help`, `--version`, configuration errors, warnings.

Everything here works without any configuration: `--help` lists every environment variable
with its default and meaning, generated from the settings class (the one source of truth).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import TypeVar

from pydantic_core import PydanticUndefined

from wormhole_common.core.logs import configure_logging
from wormhole_common.observability import package_version
from wormhole_common.settings import (
    ConfigError,
    EnvSettings,
    ServiceSettings,
    load_settings,
    unknown_variables,
)

S = TypeVar("S", bound=ServiceSettings)

CONFIG_EXIT = 2  # the process cannot start as configured; retrying will not help


def default_text(cls: type[EnvSettings], field: str) -> str:
    """A field's default as docs/configuration.md and `--help` show it (a computed default says how
    it is computed in `json_schema_extra={"shown_default": ...}`)."""
    info = cls.model_fields[field]
    if isinstance(info.json_schema_extra, dict) and "shown_default" in info.json_schema_extra:
        return str(info.json_schema_extra["shown_default"])
    default = info.default
    if default is PydanticUndefined:
        return "required"
    if default is None:
        return "unset"
    if default == ():
        return "empty"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def variables_help(cls: type[EnvSettings], defaults: Mapping[str, str] | None = None) -> str:
    """One entry per environment variable: name, default, meaning; `defaults` replaces the
    shown default of a variable (by name) where the caller supplies another one."""
    lines = []
    for field, info in cls.model_fields.items():
        name = cls.env_name(field)
        default = (defaults or {}).get(name) or default_text(cls, field)
        if field in cls.secret_fields:
            name += f" (or {name}_FILE)"
        lines.append(f"  {name}  [default: {default}]")
        lines.extend(textwrap.wrap(info.description or "", 88, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6))
    return "\n".join(lines)


def parser(prog: str, summary: str, epilog: str) -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog=prog, description=textwrap.fill(summary, 88), epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    result.add_argument("--version", action="version",
                        version=f"{prog} {package_version()}")
    return result


def parse_command_line(
    prog: str, summary: str, classes: Sequence[type[EnvSettings]],
    argv: Sequence[str] | None = None, *, extra: str = "",
    defaults: Mapping[str, str] | None = None, preface: str = "",
) -> None:
    """Handle `--help` and `--version` (both exit 0); the scripts take no other argument.

    `preface` (preformatted) comes before the variables in the help."""
    epilog = "\n\n".join(
        ([preface] if preface else [])
        + [textwrap.fill(f"Environment variables (all optional unless marked required){extra}:",
                         88)]
        + [variables_help(cls, defaults) for cls in classes]
    )
    parser(prog, summary, epilog).parse_args(argv)


def config_exit(prog: str, message: str) -> SystemExit:
    """Print one line for a configuration problem; the caller raises the result."""
    print(f"{prog}: configuration error: {message}", file=sys.stderr, flush=True)
    return SystemExit(CONFIG_EXIT)


def start(
    cls: type[S], prog: str, summary: str, argv: Sequence[str] | None = None,
) -> S:
    """Command line, settings (or exit 2 with one line), logging, warnings for typos."""
    parse_command_line(prog, summary, [cls], argv)
    try:
        settings = load_settings(cls)
    except ConfigError as exc:
        raise config_exit(prog, str(exc)) from None
    configure_logging(settings.log_level)
    for warning in unknown_variables(cls, os.environ):
        logging.getLogger(prog).warning("%s", warning)
    return settings
