"""The pieces of a worker group that need no process: metrics merging and restart backoff."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from wormhole_common.group_metrics import GroupCollector, merge_expositions
from wormhole_common.workers import RestartPolicy


def worker_page(connections: float, frames: int, waits: list[float]) -> str:
    registry = CollectorRegistry()
    Gauge("conns_open", "Open connections.", registry=registry).set(connections)
    Counter("frames", "Frames.", ["kind"], registry=registry).labels("text").inc(frames)
    histogram = Histogram("wait_seconds", "Waits.", buckets=(1, 10), registry=registry)
    for wait in waits:
        histogram.observe(wait)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_sample_is_kept_and_labelled_by_its_worker() -> None:
    pages = {"0": worker_page(3, 5, [0.5]), "1": worker_page(4, 7, [5, 20])}
    registry = CollectorRegistry()
    collector = GroupCollector()
    registry.register(collector)
    collector.update(pages)
    merged = samples(generate_latest(registry).decode())
    assert merged[("conns_open", frozenset({("worker", "0")}))] == 3
    assert merged[("conns_open", frozenset({("worker", "1")}))] == 4
    assert merged[("frames_total", frozenset({("kind", "text"), ("worker", "1")}))] == 7
    assert merged[("wait_seconds_bucket", frozenset({("le", "1.0"), ("worker", "0")}))] == 1
    assert merged[("wait_seconds_bucket", frozenset({("le", "10.0"), ("worker", "1")}))] == 1
    assert merged[("wait_seconds_count", frozenset({("worker", "1")}))] == 2


def test_a_family_appears_once_with_its_type_and_help() -> None:
    one = worker_page(1, 1, [])
    families = merge_expositions({"0": one, "1": worker_page(2, 2, [])})
    names = [family.name for family in families]
    assert sorted(names) == sorted(f.name for f in text_string_to_metric_families(one))
    assert len(names) == len(set(names))
    by_name = {family.name: family for family in families}
    assert by_name["frames"].type == "counter"
    assert by_name["wait_seconds"].type == "histogram"
    assert by_name["conns_open"].documentation == "Open connections."


def test_no_scrape_yet_means_an_empty_page() -> None:
    registry = CollectorRegistry()
    registry.register(GroupCollector())
    assert generate_latest(registry) == b""


def test_a_crashing_worker_waits_longer_each_time_up_to_the_cap() -> None:
    policy = RestartPolicy(first=0.5, cap=4, stable=60)
    delays = [policy.delay(0, started=t, now=t + 1) for t in range(0, 50, 10)]
    assert delays == [0.5, 1, 2, 4, 4]


def test_a_worker_that_ran_long_enough_starts_again_from_the_first_delay() -> None:
    policy = RestartPolicy(first=0.5, cap=30, stable=60)
    assert policy.delay(0, started=0, now=1) == 0.5
    assert policy.delay(0, started=1, now=2) == 1
    assert policy.delay(0, started=2, now=100) == 0.5


def test_workers_back_off_independently() -> None:
    policy = RestartPolicy(first=0.5, cap=30, stable=60)
    policy.delay(0, started=0, now=1)
    policy.delay(0, started=1, now=2)
    assert policy.delay(1, started=0, now=1) == 0.5
