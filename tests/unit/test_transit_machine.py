"""The connection state machine and the rendezvous, with explicit times (docs/transit-protocol.md
§3.3-§4.4, §8)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from wormhole_transit.core.handshake import Handshake
from wormhole_transit.core.machine import Ended, InvalidInput, Machine, State
from wormhole_transit.core.rendezvous import Cause, Pair, Rendezvous, Wait
from wormhole_transit.core.usage import Mood, Usage

TOKEN = b"t" * 64


def waiting(started: float = 10.0) -> Machine:
    machine = Machine(started)
    machine.handshake_ok()
    return machine


def single(mood: Mood, started: float, now: float, left: State) -> Ended:
    return Ended(mood, Usage(started, now - started, None, 0, mood), left)


def test_bad_line_is_errory() -> None:
    machine = Machine(10.0)
    assert machine.handshake_bad(12.5) == single(Mood.ERRORY, 10.0, 12.5, State.HANDSHAKING)
    assert (machine.state, machine.mood) == (State.DONE, Mood.ERRORY)


def test_overlong_line_is_empty() -> None:
    machine = Machine(10.0)
    assert machine.handshake_overlong(11.0) == single(Mood.EMPTY, 10.0, 11.0,
                                                      State.HANDSHAKING)


@pytest.mark.parametrize("end", ["lost", "timeout"])
def test_ending_before_a_handshake_is_empty(end: str) -> None:
    machine = Machine(10.0)
    ended = machine.lost(14.0) if end == "lost" else machine.timeout(14.0)
    assert ended == single(Mood.EMPTY, 10.0, 14.0, State.HANDSHAKING)


@pytest.mark.parametrize("end", ["lost", "timeout"])
def test_ending_while_waiting_is_lonely(end: str) -> None:
    machine = waiting()
    ended = machine.lost(70.0) if end == "lost" else machine.timeout(70.0)
    assert ended == single(Mood.LONELY, 10.0, 70.0, State.WAITING)


def test_data_while_waiting_is_impatient() -> None:
    assert waiting().early_data(11.0) == single(Mood.IMPATIENT, 10.0, 11.0, State.WAITING)


def test_redundant_waiter() -> None:
    assert waiting().redundant(11.0) == single(Mood.REDUNDANT, 10.0, 11.0, State.WAITING)


def test_a_pair_is_recorded_once_by_the_first_side() -> None:
    first, second = waiting(10.0), waiting(13.0)
    first.partner(13.0, first=True)
    second.partner(10.0, first=False)
    assert first.state is second.state is State.RELAYING
    assert second.lost(20.0, 500) == Ended(Mood.JILTED, None, State.RELAYING)
    assert first.lost(20.0, 500) == Ended(
        Mood.HAPPY, Usage(started=10.0, total_time=10.0, waiting_time=3.0, total_bytes=500,
                          mood=Mood.HAPPY), State.RELAYING)
    assert first.lost(21.0) is None  # already decided: nothing more to record


def test_blurring_applies_to_the_records() -> None:
    machine = Machine(7201.5, blur_seconds=3600)
    ended = machine.handshake_bad(7202.0)
    assert ended.usage is not None
    assert ended.usage.started == 7200.0


@pytest.mark.parametrize(("prepare", "feed", "message"), [
    (lambda m: None, lambda m: m.early_data(1.0), "expected waiting, was handshaking"),
    (lambda m: None, lambda m: m.partner(1.0, first=True), "expected waiting, was handshaking"),
    (lambda m: m.handshake_ok(), lambda m: m.handshake_ok(), "expected handshaking, was waiting"),
    (lambda m: m.handshake_bad(1.0), lambda m: m.timeout(2.0), "timeout while done"),
])
def test_inputs_a_state_does_not_accept_are_bugs(
    prepare: Callable[[Machine], object], feed: Callable[[Machine], object], message: str,
) -> None:
    machine = Machine(0.0)
    prepare(machine)
    with pytest.raises(InvalidInput) as raised:
        feed(machine)
    assert str(raised.value) == message


def test_relaying_has_no_timer() -> None:
    machine = waiting()
    machine.partner(11.0, first=True)
    with pytest.raises(InvalidInput) as raised:
        machine.timeout(12.0)
    assert str(raised.value) == "timeout while relaying"


# -- the rendezvous ----------------------------------------------------------------------------

@dataclass(eq=False)
class Conn:
    name: str
    machine: Machine = field(default_factory=lambda: Machine(10.0))


def hs(side: bytes | None) -> Handshake:
    return Handshake(TOKEN, side)


def test_second_side_pairs_with_the_waiter() -> None:
    meet: Rendezvous[Conn] = Rendezvous()
    a, b = Conn("a"), Conn("b", Machine(12.0))
    assert meet.arrive(a, hs(b"1" * 16), 11.0) == Wait()
    assert (meet.waiting_connections, meet.waiting_tokens) == (1, 1)
    assert meet.arrive(b, hs(b"2" * 16), 12.0) == Pair(a, b, [])
    assert a.machine.state is b.machine.state is State.RELAYING
    assert meet.waiting_connections == 0
    assert b.machine.lost(15.0, 7) == Ended(Mood.JILTED, None, State.RELAYING)
    ended = a.machine.lost(15.0, 7)
    assert ended is not None and ended.usage == Usage(10.0, 5.0, 2.0, 7, Mood.HAPPY)


def test_bytes_with_the_line_go_to_a_waiting_partner_not_impatient() -> None:
    meet: Rendezvous[Conn] = Rendezvous()
    a, b = Conn("a"), Conn("b")
    meet.arrive(a, hs(None), 11.0)
    assert isinstance(meet.arrive(b, hs(None), 12.0, early=True), Pair)


def test_bytes_with_the_line_and_nobody_waiting_are_impatient() -> None:
    meet: Rendezvous[Conn] = Rendezvous()
    a = Conn("a")
    assert meet.arrive(a, hs(None), 11.0, early=True) == single(Mood.IMPATIENT, 10.0, 11.0,
                                                                State.WAITING)
    assert meet.waiting_connections == 0


def test_same_side_duplicate_becomes_redundant_when_a_third_pairs() -> None:
    meet: Rendezvous[Conn] = Rendezvous()
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    meet.arrive(a, hs(b"1" * 16), 11.0)
    meet.arrive(b, hs(b"1" * 16), 11.0)
    outcome = meet.arrive(c, hs(b"3" * 16), 12.0)
    assert isinstance(outcome, Pair)
    [(dropped, ended)] = outcome.redundant
    assert {outcome.first, dropped} == {a, b}
    assert ended == single(Mood.REDUNDANT, 10.0, 12.0, State.WAITING)
    assert dropped.machine.lost(13.0) is None  # its end was decided by the pairing


def test_leaving_forgets_the_waiter() -> None:
    meet: Rendezvous[Conn] = Rendezvous()
    a, b = Conn("a"), Conn("b")
    meet.arrive(a, hs(b"1" * 16), 11.0)
    assert meet.end(a, Cause.LOST, 20.0) == single(Mood.LONELY, 10.0, 20.0, State.WAITING)
    assert meet.arrive(b, hs(b"2" * 16), 21.0) == Wait()


def test_timeout_and_early_data_leave_the_table() -> None:
    meet: Rendezvous[Conn] = Rendezvous()
    a, b = Conn("a"), Conn("b")
    meet.arrive(a, hs(b"1" * 16), 11.0)
    meet.arrive(b, hs(b"1" * 16), 11.0)
    assert meet.end(a, Cause.TIMEOUT, 40.0) == single(Mood.LONELY, 10.0, 40.0, State.WAITING)
    assert meet.end(b, Cause.EARLY_DATA, 41.0) == single(Mood.IMPATIENT, 10.0, 41.0,
                                                         State.WAITING)
    assert (meet.waiting_connections, meet.waiting_tokens) == (0, 0)


@pytest.mark.parametrize(("cause", "mood"), [(Cause.BAD_LINE, Mood.ERRORY),
                                             (Cause.OVERLONG_LINE, Mood.EMPTY),
                                             (Cause.TIMEOUT, Mood.EMPTY),
                                             (Cause.LOST, Mood.EMPTY)])
def test_each_cause_ends_a_handshaking_connection(cause: Cause, mood: Mood) -> None:
    meet: Rendezvous[Conn] = Rendezvous()
    a = Conn("a")
    assert meet.end(a, cause, 12.0) == single(mood, 10.0, 12.0, State.HANDSHAKING)
    assert meet.end(a, Cause.LOST, 13.0) is None  # the socket closes after every end


def test_a_pair_ends_happy_once_through_its_first_side() -> None:
    meet: Rendezvous[Conn] = Rendezvous()
    a, b = Conn("a"), Conn("b", Machine(12.0))
    meet.arrive(a, hs(None), 11.0)
    meet.arrive(b, hs(None), 12.0)
    assert meet.end(a, Cause.LOST, 20.0, 5) == Ended(
        Mood.HAPPY, Usage(10.0, 10.0, 2.0, 5, Mood.HAPPY), State.RELAYING)
    assert meet.end(b, Cause.LOST, 20.0, 5) == Ended(Mood.JILTED, None, State.RELAYING)
    assert meet.end(a, Cause.LOST, 21.0) is meet.end(b, Cause.LOST, 21.0) is None
