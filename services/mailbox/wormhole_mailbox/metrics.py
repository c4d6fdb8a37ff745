"""The mailbox server's Prometheus metrics, on a registry of its own.

Every label value comes from a small closed set (`actions.LABELS`, usage results): the session
maps what clients send into those sets before counting. Label children are bound once here, so
the hot path is a dict lookup and an increment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from wormhole_common.observability import (
    HUMAN_BUCKETS,
    DatabaseMetrics,
    build_info,
    package_version,
)

from wormhole_mailbox.core.actions import LABELS, Count, Metric
from wormhole_mailbox.core.usage import MailboxUsage, NameplateUsage

PREFIX = "wormhole_mailbox"

NAMEPLATE_RESULTS = ("happy", "lonely", "pruney", "crowded")
MAILBOX_RESULTS = ("happy", "lonely", "scary", "errory", "pruney", "crowded", "quiet")
CONNECTION_KINDS = ("websocket", "http")


def _labelled(
    registry: CollectorRegistry, name: str, doc: str, label: str, values: Iterable[str],
) -> dict[str, Counter]:
    """A counter with one label, its children for every value bound up front."""
    counter = Counter(f"{PREFIX}_{name}", doc, [label], registry=registry)
    return {value: counter.labels(value) for value in values}


class MailboxMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        p = PREFIX
        self.database = DatabaseMetrics(registry, p)
        build_info(registry, p, package_version())
        self.connections_open = Gauge(
            f"{p}_connections_open", "WebSocket connections open now.", registry=registry)
        self.connections = _labelled(
            registry, "connections_total",
            "Accepted connections by kind: websocket (/v1 upgrades) or plain http requests.",
            "kind", CONNECTION_KINDS)
        self.dropped = _labelled(
            registry, "connections_dropped_total", "Connections the server ended, by reason.",
            "reason", LABELS[Metric.DROPPED])
        self.commands = _labelled(
            registry, "commands_total",
            "Client frames by command type (other: unknown type, invalid: not a JSON object"
            " with a type).", "type", LABELS[Metric.COMMANDS])
        self.refusals = _labelled(
            registry, "refusals_total",
            "Connections and commands refused by a limit or quota, by reason.", "reason",
            LABELS[Metric.REFUSALS])
        self.errors = _labelled(
            registry, "errors_total", "Error frames sent to clients, by kind.", "kind",
            LABELS[Metric.ERRORS])
        self._add_usage_metrics(registry)
        self.messages = Counter(
            f"{p}_messages_relayed_total",
            "Messages stored and forwarded to the mailbox's subscribers.", registry=registry)
        self.prune_runs = _labelled(
            registry, "prune_runs_total",
            "Pruning runs by outcome: ran, skipped (another process held the lock), failed.",
            "outcome", ("ran", "skipped", "failed"))
        self.pruned = _labelled(
            registry, "pruned_total", "What pruning removed, by kind (nameplates, mailboxes).",
            "kind", ("nameplates", "mailboxes"))
        self._counters = {Metric.COMMANDS: self.commands, Metric.ERRORS: self.errors,
                          Metric.MOODS: self.moods, Metric.DROPPED: self.dropped,
                          Metric.REFUSALS: self.refusals}

    def _add_usage_metrics(self, registry: CollectorRegistry) -> None:
        """What the database holds and what retired channels were like."""
        p = PREFIX
        self.nameplates_in_use = Gauge(
            f"{p}_nameplates_in_use",
            "Nameplates in the database at the last scrape (shared by all replicas).",
            registry=registry)
        self.mailboxes_in_use = Gauge(
            f"{p}_mailboxes_in_use",
            "Mailboxes in the database at the last scrape (shared by all replicas).",
            registry=registry)
        self.nameplates = _labelled(
            registry, "nameplates_total", "Retired nameplates by result (usage mood).",
            "result", (*NAMEPLATE_RESULTS, "other"))
        self.mailboxes = _labelled(
            registry, "mailboxes_total", "Retired mailboxes by result (usage mood).", "result",
            (*MAILBOX_RESULTS, "other"))
        self.moods = _labelled(
            registry, "client_moods_total",
            "Moods clients reported when closing a mailbox (unknown moods: other).", "mood",
            LABELS[Metric.MOODS])
        self.pairing = Histogram(
            f"{p}_pairing_seconds",
            "Time from the first side opening a mailbox to the second (time to pair).",
            buckets=HUMAN_BUCKETS, registry=registry)
        self.channel_lifetime = Histogram(
            f"{p}_channel_lifetime_seconds",
            "Time from a mailbox's first side to its retirement.", buckets=HUMAN_BUCKETS,
            registry=registry)

    def watch_connections(self, count: Callable[[], int]) -> None:
        self.connections_open.set_function(lambda: float(count()))

    def count(self, action: Count) -> None:
        self._counters[action.metric][action.label].inc()

    def usage(self, records: Iterable[NameplateUsage | MailboxUsage]) -> None:
        """Count committed usage records (called after their transaction committed)."""
        for record in records:
            if isinstance(record, NameplateUsage):
                self.nameplates.get(record.result, self.nameplates["other"]).inc()
                continue
            self.mailboxes.get(record.result, self.mailboxes["other"]).inc()
            self.channel_lifetime.observe(max(record.total_time, 0.0))
            if record.waiting_time is not None:
                self.pairing.observe(max(record.waiting_time, 0.0))
