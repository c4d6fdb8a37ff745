"""Settings as a process with exactly a given environment would read them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

import pytest
from wormhole_common.settings import EnvSettings, load_settings

S = TypeVar("S", bound=EnvSettings)

PREFIXES = ("MAILBOX_", "TRANSIT_", "WORMHOLE_")


def settings_from(cls: type[S], environ: Mapping[str, str]) -> S:
    """`load_settings(cls)` with the services' variables of this process replaced by `environ`
    for the call (pydantic-settings reads `os.environ`)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith(PREFIXES):
                patch.delenv(name)
        for name, value in environ.items():
            patch.setenv(name, value)
        return load_settings(cls)
