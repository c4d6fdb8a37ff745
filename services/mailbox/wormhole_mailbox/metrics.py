"""The mailbox server's Prometheus metrics, on a registry of its own.

Every label value comes from a small closed set (command types, error kinds, results, moods);
free strings from clients are mapped to `other`. Label children are bound once here, so the hot
path is a dict lookup and an increment.
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

from wormhole_mailbox.usage import MailboxUsage, NameplateUsage

PREFIX = "wormhole_mailbox"

COMMANDS = ("ping", "bind", "list", "allocate", "claim", "release", "open", "add", "close",
            "submit-permissions", "other", "invalid")
NAMEPLATE_RESULTS = ("happy", "lonely", "pruney", "crowded")
MAILBOX_RESULTS = ("happy", "lonely", "scary", "errory", "pruney", "crowded", "quiet")
CLIENT_MOODS = ("happy", "lonely", "errory", "scary", "unwelcome", "none", "other")
DROP_REASONS = ("handshake_timeout", "too_slow", "ping_timeout", "permission_denied",
                "database")
CONNECTION_KINDS = ("websocket", "http")

# (kind, what the error text starts with or contains); first match wins, else "other".
_ERROR_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("permission_denied", ("permission denied",)),
    ("crowded", ("crowded",)),
    ("reclaimed", ("reclaimed",)),
    ("unbound", ("must bind first",)),
    ("unknown_type", ("unknown type",)),
    ("invalid_nameplate", ("invalid nameplate",)),
    ("exhausted", ("no free nameplate",)),
    ("gone", ("mailbox is gone",)),
    ("internal", ("internal server error",)),
    ("malformed", ("not valid JSON", "must be a JSON object", "missing '", "requires '",
                   "must be a string", "must not contain NUL", "must be valid Unicode",
                   "must be a list")),
    ("sequence", ("only one ", "already ", "must follow", "must use same", "don't be greedy",
                  "must open mailbox")),
)
ERROR_KINDS = (*(kind for kind, _ in _ERROR_KINDS), "other")


def error_kind(text: object) -> str:
    """Map an `error` frame's text to one of `ERROR_KINDS`."""
    if not isinstance(text, str):
        return "other"
    for kind, needles in _ERROR_KINDS:
        if any(needle in text for needle in needles):
            return kind
    return "other"


def _children(metric: Counter, values: Iterable[str]) -> dict[str, Counter]:
    return {value: metric.labels(value) for value in values}


class MailboxMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        p = PREFIX
        self.database = DatabaseMetrics(registry, p)
        build_info(registry, p, package_version())
        self.connections_open = Gauge(
            f"{p}_connections_open", "WebSocket connections open now.", registry=registry)
        connections = Counter(
            f"{p}_connections_total",
            "Accepted connections by kind: websocket (/v1 upgrades) or plain http requests.",
            ["kind"], registry=registry)
        self.connections = _children(connections, CONNECTION_KINDS)
        dropped = Counter(
            f"{p}_connections_dropped_total",
            "Connections the server ended, by reason.", ["reason"], registry=registry)
        self.dropped = _children(dropped, DROP_REASONS)
        commands = Counter(
            f"{p}_commands_total",
            "Client frames by command type (other: unknown type, invalid: not a JSON object"
            " with a type).", ["type"], registry=registry)
        self.commands = _children(commands, COMMANDS)
        errors = Counter(
            f"{p}_errors_total", "Error frames sent to clients, by kind.", ["kind"],
            registry=registry)
        self.errors = _children(errors, ERROR_KINDS)
        self.nameplates_in_use = Gauge(
            f"{p}_nameplates_in_use",
            "Nameplates in the database at the last scrape (shared by all replicas).",
            registry=registry)
        self.mailboxes_in_use = Gauge(
            f"{p}_mailboxes_in_use",
            "Mailboxes in the database at the last scrape (shared by all replicas).",
            registry=registry)
        nameplates = Counter(
            f"{p}_nameplates_total", "Retired nameplates by result (usage mood).", ["result"],
            registry=registry)
        self.nameplates = _children(nameplates, (*NAMEPLATE_RESULTS, "other"))
        mailboxes = Counter(
            f"{p}_mailboxes_total", "Retired mailboxes by result (usage mood).", ["result"],
            registry=registry)
        self.mailboxes = _children(mailboxes, (*MAILBOX_RESULTS, "other"))
        moods = Counter(
            f"{p}_client_moods_total",
            "Moods clients reported when closing a mailbox (unknown moods: other).", ["mood"],
            registry=registry)
        self.moods = _children(moods, CLIENT_MOODS)
        self.pairing = Histogram(
            f"{p}_pairing_seconds",
            "Time from the first side opening a mailbox to the second (time to pair).",
            buckets=HUMAN_BUCKETS, registry=registry)
        self.channel_lifetime = Histogram(
            f"{p}_channel_lifetime_seconds",
            "Time from a mailbox's first side to its retirement.", buckets=HUMAN_BUCKETS,
            registry=registry)
        self.messages = Counter(
            f"{p}_messages_relayed_total",
            "Messages stored and forwarded to the mailbox's subscribers.", registry=registry)
        prune_runs = Counter(
            f"{p}_prune_runs_total",
            "Pruning runs by outcome: ran, skipped (another process held the lock), failed.",
            ["outcome"], registry=registry)
        self.prune_runs = _children(prune_runs, ("ran", "skipped", "failed"))
        pruned = Counter(
            f"{p}_pruned_total", "What pruning removed, by kind (nameplates, mailboxes).",
            ["kind"], registry=registry)
        self.pruned = _children(pruned, ("nameplates", "mailboxes"))

    def watch_connections(self, count: Callable[[], int]) -> None:
        self.connections_open.set_function(lambda: float(count()))

    def command(self, kind: object) -> None:
        counter = self.commands.get(kind) if isinstance(kind, str) else None
        if counter is None:
            counter = self.commands["other" if isinstance(kind, str) else "invalid"]
        counter.inc()

    def error(self, text: object) -> None:
        self.errors[error_kind(text)].inc()

    def client_mood(self, mood: str | None) -> None:
        self.moods.get("none" if mood is None else mood, self.moods["other"]).inc()

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
