"""The transit relay's Prometheus metrics, on a registry of its own.

Most values are counts the shell keeps anyway in a `TransitStats` (moods, refusals, timeouts,
live pairs, bytes of running pairs); they are read at scrape time by a collector, so the
relay's hot path pays nothing for them. Labels come from closed sets: moods, refusal reasons,
timeout phases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from wormhole_common.observability import (
    HUMAN_BUCKETS,
    DatabaseMetrics,
    build_info,
    package_version,
)

from wormhole_transit.core.stats import TransitStats
from wormhole_transit.core.usage import Mood

PREFIX = "wormhole_transit"
REFUSAL_REASONS = ("max_connections", "max_connections_per_ip", "accept_failed")
TIMEOUT_PHASES = ("handshake", "lonely")
CONNECTION_KINDS = ("tcp", "websocket")
# A pair's lifetime: from a blink to a long transfer.
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600)


class TransitMetrics:
    def __init__(
        self, stats: TransitStats, *, max_connections: int, max_connections_per_ip: int,
        usage_dropped: Callable[[], int], registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        p = PREFIX
        self.database = DatabaseMetrics(registry, p)
        build_info(registry, p, package_version())
        connections = Counter(
            f"{p}_connections_total", "Accepted connections by kind (tcp, websocket).",
            ["kind"], registry=registry)
        self.connections = {k: connections.labels(k) for k in CONNECTION_KINDS}
        self.waiting = Histogram(
            f"{p}_waiting_seconds",
            "How long the first side of a pair waited for its partner.",
            buckets=HUMAN_BUCKETS, registry=registry)
        self.pair_duration = Histogram(
            f"{p}_pair_duration_seconds", "How long a pair relayed, from pairing to its end.",
            buckets=DURATION_BUCKETS, registry=registry)
        limit = Gauge(
            f"{p}_max_connections", "The configured limit on open connections"
            " (TRANSIT_MAX_CONNECTIONS).", registry=registry)
        limit.set(max_connections)
        per_ip = Gauge(
            f"{p}_max_connections_per_ip", "The configured limit on open connections from one"
            " address (TRANSIT_MAX_CONNECTIONS_PER_IP).", registry=registry)
        per_ip.set(max_connections_per_ip)
        registry.register(_StatsCollector(stats, usage_dropped))


class _StatsCollector(Collector):
    """Counts the shell keeps itself, read at scrape time."""

    def __init__(self, stats: TransitStats, usage_dropped: Callable[[], int]) -> None:
        self.stats = stats
        self.usage_dropped = usage_dropped

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s, p = self.stats, PREFIX
        yield GaugeMetricFamily(f"{p}_connections_open", "Connections open now.",
                                value=s.connections_open)
        yield GaugeMetricFamily(f"{p}_pairs_active", "Pairs relaying now.", value=len(s.pairs))
        yield GaugeMetricFamily(f"{p}_waiting_sides",
                                "Connections with a valid handshake waiting for their partner.",
                                value=s.waiting_sides)
        yield GaugeMetricFamily(f"{p}_buffered_bytes",
                                "Payload bytes the relay holds in memory now.",
                                value=s.buffered_bytes)
        yield CounterMetricFamily(
            f"{p}_bytes_relayed", "Payload bytes received from clients and relayed"
            " (running pairs included).", value=s.finished_bytes + s.live_bytes)
        moods = CounterMetricFamily(
            f"{p}_outcomes", "Finished connections by mood; a pair counts once as happy.",
            labels=["mood"])
        for mood in Mood:
            if mood is not Mood.JILTED:
                moods.add_metric([mood.value], s.moods[mood])
        yield moods
        refused = CounterMetricFamily(
            f"{p}_connections_refused", "Connections closed at once, by reason (limits).",
            labels=["reason"])
        for reason in REFUSAL_REASONS:
            refused.add_metric([reason], s.refused[reason])
        yield refused
        timeouts = CounterMetricFamily(
            f"{p}_timeouts", "Connections closed by a timeout, by phase (handshake, lonely).",
            labels=["phase"])
        for phase in TIMEOUT_PHASES:
            timeouts.add_metric([phase], s.timeouts[phase])
        yield timeouts
        yield CounterMetricFamily(f"{p}_usage_records_dropped",
                                  "Usage records dropped because the queue was full.",
                                  value=self.usage_dropped())
