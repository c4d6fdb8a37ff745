"""The pending table's pairing rules (docs/transit-protocol.md §4.1)."""

from __future__ import annotations

import pytest
from wormhole_transit.core.handshake import Handshake
from wormhole_transit.core.pairing import Paired, PairingTable, Waiting

T = b"t" * 64
U = b"u" * 64


def hs(side: bytes | None, token: bytes = T) -> Handshake:
    return Handshake(token, side)


def test_different_sides_pair() -> None:
    table: PairingTable[str] = PairingTable()
    assert table.arrive("a", hs(b"1" * 16)) == Waiting()
    assert table.waiting_tokens == 1
    assert table.arrive("b", hs(b"2" * 16)) == Paired("a", [])
    assert table.waiting_tokens == 0
    assert not table.leave("a")  # no longer waiting


@pytest.mark.parametrize(("first", "second"), [
    (None, None), (None, b"2" * 16), (b"1" * 16, None),
])
def test_legacy_pairs_with_anything(first: bytes | None, second: bytes | None) -> None:
    table: PairingTable[str] = PairingTable()
    table.arrive("a", hs(first))
    assert table.arrive("b", hs(second)) == Paired("a", [])


def test_same_side_waits_then_third_picks_one_and_drops_the_other() -> None:
    table: PairingTable[str] = PairingTable()
    same = b"1" * 16
    assert table.arrive("a", hs(same)) == Waiting()
    assert table.arrive("b", hs(same)) == Waiting()
    assert table.waiting_tokens == 1
    assert table.waiting_connections == 2
    result = table.arrive("c", hs(b"3" * 16))
    assert isinstance(result, Paired)
    assert {result.partner, *result.redundant} == {"a", "b"}
    assert len(result.redundant) == 1
    assert table.waiting_connections == 0


def test_token_forgotten_after_pairing_third_waits_afresh() -> None:
    table: PairingTable[str] = PairingTable()
    table.arrive("a", hs(b"1" * 16))
    table.arrive("b", hs(b"2" * 16))
    assert table.arrive("c", hs(b"3" * 16)) == Waiting()
    assert table.arrive("d", hs(b"4" * 16)) == Paired("c", [])


def test_tokens_are_case_sensitive_and_sides_are_per_token() -> None:
    table: PairingTable[str] = PairingTable()
    table.arrive("a", hs(b"1" * 16, b"a" * 64))
    assert table.arrive("b", hs(b"2" * 16, b"A" * 64)) == Waiting()
    assert table.arrive("c", hs(b"1" * 16, U)) == Waiting()
    assert table.waiting_tokens == 3


def test_departed_connection_does_not_pair() -> None:
    table: PairingTable[str] = PairingTable()
    table.arrive("a", hs(b"1" * 16))
    assert table.leave("a")
    assert not table.leave("a")
    assert table.waiting_tokens == 0
    assert table.arrive("b", hs(b"2" * 16)) == Waiting()


def test_leave_keeps_other_waiters() -> None:
    table: PairingTable[str] = PairingTable()
    table.arrive("a", hs(b"1" * 16))
    table.arrive("b", hs(b"1" * 16))
    table.leave("a")
    assert table.arrive("c", hs(b"2" * 16)) == Paired("b", [])
