"""The configuration reference's variable tables and the settings classes (the one source of
truth) agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from wormhole_common.cli import default_text
from wormhole_common.settings import EnvSettings
from wormhole_mailbox.settings import MailboxSettings
from wormhole_stack.settings import StackSettings
from wormhole_transit.settings import TransitSettings

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
ROW = re.compile(r"^\| `([A-Z_]+)`[^|]* \| ([^|]+) \|")


def readme_rows(prefix: str) -> dict[str, str]:
    rows = {}
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match and match.group(1).startswith(prefix):
            default = match.group(2).strip().split(" (", 1)[0].strip("`")
            rows[match.group(1)] = default
    return rows


@pytest.mark.parametrize("cls", [MailboxSettings, TransitSettings, StackSettings])
def test_readme_table_lists_every_variable_with_its_default(cls: type[EnvSettings]) -> None:
    prefix = cls.env_name("")
    expected = {cls.env_name(field): default_text(cls, field) for field in cls.model_fields}
    assert readme_rows(prefix) == expected
