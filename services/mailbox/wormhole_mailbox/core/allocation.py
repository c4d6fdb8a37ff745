"""Nameplate names: what a valid one looks like.

Choosing a free one to allocate is done by the database under the app's allocation lock
(`mb_choose_nameplate` in `migrations/0004_one_statement.sql`, docs/mailbox-protocol.md §5.6):
the narrowest width with a free number, a free number chosen at random within it.
"""

from __future__ import annotations

import re

# ASCII digits only: the reference's `\d` also admits other scripts' digits
# (docs/mailbox-protocol.md §6.1).
_NAMEPLATE = re.compile(r"[0-9]{1,40}")


def is_valid_nameplate(name: str) -> bool:
    return _NAMEPLATE.fullmatch(name) is not None
