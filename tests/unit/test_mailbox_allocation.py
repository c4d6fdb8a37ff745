"""Nameplate validation (docs/mailbox-protocol.md §6.1). Choosing one to allocate is SQL: its
tests are in tests/integration/test_mailbox_sql_rules.py."""

from __future__ import annotations

import pytest
from wormhole_mailbox.core.allocation import is_valid_nameplate


@pytest.mark.parametrize("name", ["0", "7", "07", "123", "9" * 40])
def test_valid(name: str) -> None:
    assert is_valid_nameplate(name)


@pytest.mark.parametrize(
    "name", ["", "9" * 41, "a", "1a", "+1", "-1", "1.0", " 1", "1\n", "\u0663", "\u0967\u0968",
             "\uff17", "\u00b2"],
)
def test_invalid(name: str) -> None:
    assert not is_valid_nameplate(name)
