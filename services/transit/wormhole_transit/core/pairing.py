"""The pending table: which waiting connection a new handshake pairs with
(docs/transit-protocol.md §4.1).

Only token and side matching lives here; what each connection's arrival means for its mood is
decided by the state machine (`machine.py`) through `rendezvous.py`. Connections are opaque
keys of type `C`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from wormhole_transit.core.handshake import Handshake

C = TypeVar("C")


@dataclass
class Paired(Generic[C]):
    """The arriving connection paired with `partner`; `redundant` must be closed silently."""

    partner: C
    redundant: list[C] = field(default_factory=list)


@dataclass(frozen=True)
class Waiting:
    pass


class PairingTable(Generic[C]):
    """Pending connections by token.

    A token is forgotten as soon as it pairs, so a later connection on it starts a fresh wait.
    """

    def __init__(self) -> None:
        self._pending: dict[bytes, dict[C, bytes | None]] = {}
        self._token_of: dict[C, bytes] = {}

    def arrive(self, conn: C, handshake: Handshake) -> Paired[C] | Waiting:
        waiting = self._pending.get(handshake.token)
        if waiting:
            for other, side in waiting.items():
                if side is None or handshake.side is None or side != handshake.side:
                    del self._pending[handshake.token]
                    redundant = [c for c in waiting if c is not other]
                    for c in waiting:
                        del self._token_of[c]
                    return Paired(other, redundant)
        self._pending.setdefault(handshake.token, {})[conn] = handshake.side
        self._token_of[conn] = handshake.token
        return Waiting()

    def leave(self, conn: C) -> bool:
        """Forget a waiting connection (closed, impatient, timed out); False if not waiting."""
        token = self._token_of.pop(conn, None)
        if token is None:
            return False
        waiting = self._pending[token]
        del waiting[conn]
        if not waiting:
            del self._pending[token]
        return True

    @property
    def waiting_tokens(self) -> int:
        """Tokens with someone waiting: the reference's `current.waiting`."""
        return len(self._pending)

    @property
    def waiting_connections(self) -> int:
        return len(self._token_of)
