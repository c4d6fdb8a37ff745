"""Admission and quotas per client address and in total, with explicit `now`
(docs/mailbox-protocol.md §2.7, §9.3)."""

from __future__ import annotations

import tracemalloc

import pytest
from wormhole_mailbox.core.limits import (
    ANSWERED_REFUSALS,
    REFUSAL_REASONS,
    REFUSALS,
    ClientQuota,
    Connections,
    Limits,
    LimitSettings,
    NameplateHolds,
    Tally,
    TokenBuckets,
    address_key,
)

NOW = 1_700_000_000.0


def test_refusals_are_a_closed_set_with_their_texts() -> None:
    assert tuple(REFUSALS) == REFUSAL_REASONS
    assert {reason: r.text for reason, r in REFUSALS.items()} == {
        "connections_total": "too many connections; try again later",
        "connections_per_address": "too many connections from your address; try again later",
        "allocations_rate": "too many allocations from your address; try again in a minute",
        "mailboxes_rate": "too many new mailboxes from your address; try again in a minute",
        "nameplates_held":
            "too many nameplates held by your address; release some or try again later",
    }
    assert all(r.reason == reason for reason, r in REFUSALS.items())


@pytest.mark.parametrize(("host", "key"), [
    ("192.0.2.1", "192.0.2.1"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb:cccc:dddd:eeee", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("peer-1", "peer-1"),
])
def test_address_key(host: str, key: str) -> None:
    assert address_key(host) == key


# -- connections ------------------------------------------------------------------------------


def test_total_connections() -> None:
    conns = Connections(LimitSettings(max_connections=2))
    assert conns.accept() is None and conns.accept() is None
    assert conns.accept() == REFUSALS["connections_total"]
    conns.closed()
    assert conns.accept() is None
    assert conns.total == 2


def test_connections_per_address_leave_another_address_served() -> None:
    conns = Connections(LimitSettings(max_connections_per_address=3))
    for _ in range(3):
        assert conns.admit("192.0.2.1") is None
    assert conns.admit("192.0.2.1") == REFUSALS["connections_per_address"]
    assert conns.admit("192.0.2.2") is None
    conns.leave("192.0.2.1")
    assert conns.admit("192.0.2.1") is None


def test_per_address_counts_are_forgotten_at_zero() -> None:
    conns = Connections(LimitSettings())
    conns.admit("2001:db8::1")
    assert dict(conns.per_key) == {"2001:db8::/64": 1}
    conns.leave("2001:db8::1")
    assert dict(conns.per_key) == {}


# -- a worker group: the total across workers, each worker's share of an address -------------


def group(workers: int, settings: LimitSettings) -> list[Limits]:
    """The limits of each worker of a group, sharing one tally as the workers share memory."""
    cells = [0] * workers
    return [Limits(settings, Tally(cells, index)) for index in range(workers)]


def test_the_total_is_the_servers_whatever_worker_accepts() -> None:
    first, second = (w.connections for w in group(2, LimitSettings(max_connections=3)))
    assert first.accept() is None and second.accept() is None and first.accept() is None
    assert second.accept() == REFUSALS["connections_total"]
    assert first.accept() == REFUSALS["connections_total"]
    first.closed()
    assert second.accept() is None
    assert (first.total, second.total) == (1, 2)


def test_a_worker_also_stops_at_its_own_descriptors() -> None:
    settings = LimitSettings(max_connections=10, max_process_connections=2)
    first, second = (w.connections for w in group(2, settings))
    assert [first.accept() for _ in range(3)] == [None, None, REFUSALS["connections_total"]]
    assert second.accept() is None


def test_a_dead_workers_zeroed_cell_gives_its_connections_back_to_the_total() -> None:
    cells = [0, 0]
    first = Connections(LimitSettings(max_connections=2), Tally(cells, 0))
    second = Connections(LimitSettings(max_connections=2), Tally(cells, 1))
    first.accept()
    first.accept()
    assert second.accept() == REFUSALS["connections_total"]
    cells[0] = 0  # the supervisor, when worker 0 died
    assert second.accept() is None


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_a_workers_share_never_adds_up_to_more_than_the_cap_rounded(workers: int) -> None:
    settings = LimitSettings(max_connections_per_address=10, allocations_per_minute=6,
                             mailboxes_per_minute=6, nameplates_per_address=100)
    share = settings.shared_by(workers)
    for cap, part in [(10, share.max_connections_per_address),
                      (100, share.nameplates_per_address)]:
        assert cap <= workers * part < cap + workers
    assert share.allocations_per_minute * workers == pytest.approx(6)
    assert share.mailboxes_per_minute * workers == pytest.approx(6)
    assert share.max_connections == settings.max_connections  # counted by the tally instead


def test_each_worker_admits_its_share_of_an_address_and_no_more() -> None:
    settings = LimitSettings(max_connections_per_address=10, allocations_per_minute=6)
    workers = group(2, settings.shared_by(2))
    admitted = sum(w.connections.admit("192.0.2.1") is None for w in workers for _ in range(20))
    allocated = sum(w.client("192.0.2.1").allocate(NOW) is None for w in workers
                    for _ in range(20))
    assert (admitted, allocated) == (10, 6)
    later = sum(w.client("192.0.2.1").allocate(NOW + 60) is None for w in workers
                for _ in range(20))
    assert later == 6  # a minute later, the rate again: each worker refilled its share


def test_a_share_of_a_rate_under_one_a_minute_still_admits_one() -> None:
    buckets = TokenBuckets.per_minute(0.5, max_tracked=10)
    assert buckets.take("a", NOW)
    assert not buckets.take("a", NOW + 60)
    assert buckets.take("a", NOW + 120)


# -- rates ------------------------------------------------------------------------------------


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    buckets = TokenBuckets(capacity=3, per_second=1, max_tracked=10)
    assert [buckets.take("a", NOW) for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b", NOW)  # another address has its own bucket
    assert not buckets.take("a", NOW + 0.5)
    assert buckets.take("a", NOW + 1.5)
    assert not buckets.take("a", NOW + 1.5)


def test_a_refilled_bucket_is_forgotten() -> None:
    buckets = TokenBuckets(capacity=3, per_second=1, max_tracked=10)
    buckets.take("a", NOW)
    buckets.take("b", NOW + 1)
    buckets.take("c", NOW + 3.5)  # a has refilled (3 s), b not yet
    assert list(buckets.buckets) == ["b", "c"]


def test_buckets_are_bounded_least_recently_used_first() -> None:
    buckets = TokenBuckets(capacity=1, per_second=0.001, max_tracked=2)
    buckets.take("a", NOW)
    buckets.take("b", NOW)
    buckets.take("a", NOW)
    buckets.take("c", NOW)
    assert list(buckets.buckets) == ["a", "c"]
    assert buckets.take("b", NOW)  # forgotten: a fresh bucket, never a wrong refusal


def test_a_clock_going_back_adds_no_tokens() -> None:
    buckets = TokenBuckets(capacity=1, per_second=1, max_tracked=10)
    assert buckets.take("a", NOW)
    assert not buckets.take("a", NOW - 100)


# -- nameplates held --------------------------------------------------------------------------


def test_holds_count_live_then_linger_then_expire() -> None:
    holds = NameplateHolds(cap=2, linger=600, max_tracked=10)
    holds.hold("a")
    holds.hold("a")
    assert holds.full("a", NOW)
    holds.release("a")
    assert holds.count("a", NOW) == 1
    holds.linger_from("a", NOW)
    assert holds.count("a", NOW + 599) == 1
    assert holds.count("a", NOW + 660) == 0  # expiry rounded up to a whole minute at most
    assert "a" not in holds.held


def test_lingering_entries_per_address_are_bounded_by_minutes() -> None:
    holds = NameplateHolds(cap=10_000, linger=960, max_tracked=10)
    for i in range(3000):
        holds.hold("a")
        holds.linger_from("a", NOW + i * 0.1)  # 5 minutes of closes
    assert holds.count("a", NOW + 300) == 3000
    assert len(holds.held["a"].lingering) <= 6


def test_release_and_linger_of_unknown_keys_are_harmless() -> None:
    holds = NameplateHolds(cap=2, linger=600, max_tracked=1)
    holds.release("x")
    holds.linger_from("x", NOW)
    holds.hold("a")
    holds.hold("b")  # evicts a
    holds.release("a")
    assert list(holds.held) == ["b"]


# -- one connection's view --------------------------------------------------------------------


def limits(**settings: float) -> Limits:
    return Limits(LimitSettings(**settings))  # type: ignore[arg-type]


def test_an_honest_sender_and_receiver() -> None:
    shared = limits(allocations_per_minute=1, mailboxes_per_minute=1, nameplates_per_address=2)
    sender, receiver = shared.client("192.0.2.1"), shared.client("192.0.2.1")
    assert sender.allocate(NOW) is None
    sender.holding("7")
    assert sender.claim("7", NOW) is None  # its own allocation: free
    sender.holding("7", "mbox")
    assert sender.open("mbox", NOW) is None  # its own claim's mailbox: free
    assert receiver.claim("7", NOW) is None
    receiver.holding("7", "mbox")
    assert receiver.open("mbox", NOW) is None
    assert shared.nameplates.count("192.0.2.1", NOW) == 2
    receiver.released("7")
    sender.released("7")
    sender.close(NOW)
    receiver.close(NOW)
    assert shared.nameplates.count("192.0.2.1", NOW) == 0


def test_allocations_per_minute() -> None:
    shared = limits(allocations_per_minute=2)
    quotas = [shared.client("192.0.2.1") for _ in range(3)]
    assert [q.allocate(NOW) for q in quotas] == [None, None, REFUSALS["allocations_rate"]]
    assert shared.client("192.0.2.2").allocate(NOW) is None
    assert quotas[2].allocate(NOW + 30) is None


def test_new_mailboxes_per_minute_count_claims_and_opens() -> None:
    shared = limits(mailboxes_per_minute=2)
    one, two, three = (shared.client("2001:db8::1") for _ in range(3))
    assert one.claim("5", NOW) is None
    assert two.open("standalone", NOW) is None
    assert three.open("another", NOW) == REFUSALS["mailboxes_rate"]
    assert shared.client("2001:db8::2").open("x", NOW) == REFUSALS["mailboxes_rate"]  # same /64


def test_nameplates_held_cap_holds_across_connections_and_closes() -> None:
    shared = limits(nameplates_per_address=2, nameplate_linger_seconds=600)
    first, second, third = (shared.client("192.0.2.1") for _ in range(3))
    assert first.allocate(NOW) is None
    first.holding("1")
    assert second.claim("2", NOW) is None
    second.holding("2", "m2")
    assert third.allocate(NOW) == REFUSALS["nameplates_held"]
    assert third.claim("3", NOW) == REFUSALS["nameplates_held"]
    first.close(NOW)  # left without releasing: the nameplate lives on
    assert third.claim("3", NOW + 60) == REFUSALS["nameplates_held"]
    second.released("2")
    assert third.claim("3", NOW + 60) is None
    assert shared.client("192.0.2.2").allocate(NOW) is None


def test_a_refused_allocation_costs_no_allocation_token() -> None:
    shared = limits(nameplates_per_address=1, allocations_per_minute=1)
    holder = shared.client("192.0.2.1")
    holder.claim("9", NOW)
    holder.holding("9", "m")
    assert shared.client("192.0.2.1").allocate(NOW) == REFUSALS["nameplates_held"]
    holder.released("9")
    assert shared.client("192.0.2.1").allocate(NOW) is None


def test_holding_the_same_name_twice_counts_once() -> None:
    shared = limits()
    quota: ClientQuota = shared.client("192.0.2.1")
    quota.holding("4")
    quota.holding("4", "m")
    assert shared.nameplates.count("192.0.2.1", NOW) == 1


# -- memory -----------------------------------------------------------------------------------


def test_memory_is_bounded_whatever_the_number_of_addresses() -> None:
    shared = limits(max_tracked=250, nameplate_linger_seconds=960)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1_000):
            quota = shared.client(f"2001:db8:{i:x}::1")
            for name in ("1", "2", "3"):
                quota.claim(name, NOW + i)
                quota.holding(name, "m" + name)
            quota.allocate(NOW + i)
            quota.close(NOW + i)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(shared.allocations.buckets) <= 250
    assert len(shared.mailboxes.buckets) <= 250
    assert len(shared.nameplates.held) <= 250
    assert used < 250 * 3 * 1024  # under 1 KiB per tracked address and kind of state


def test_only_a_few_refused_sockets_are_answered_at_once() -> None:
    connections = Limits(LimitSettings()).connections
    assert [connections.answer_refusal() for _ in range(ANSWERED_REFUSALS + 2)] == (
        [True] * ANSWERED_REFUSALS + [False, False])
    connections.answered()
    assert connections.answer_refusal()
