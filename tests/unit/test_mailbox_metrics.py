"""Label values stay in small closed sets whatever clients send."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from wormhole_mailbox.core.actions import LABELS, Count, Metric, command_label, mood_label
from wormhole_mailbox.core.errors import ErrorKind
from wormhole_mailbox.metrics import MailboxMetrics


def samples(metrics: MailboxMetrics, name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value
            for f in metrics.registry.collect() for s in f.samples if s.name == name}


def test_free_strings_from_clients_become_other() -> None:
    metrics = MailboxMetrics(CollectorRegistry())
    for mood in ("happy", "side-1234", None, "x" * 500):
        metrics.count(Count(Metric.MOODS, mood_label(mood)))
    for kind in ("add", "../../etc", 7, None):
        metrics.count(Count(Metric.COMMANDS, command_label(kind)))
    assert samples(metrics, "wormhole_mailbox_client_moods_total", "mood") == {
        "happy": 1, "lonely": 0, "errory": 0, "scary": 0, "unwelcome": 0, "none": 1, "other": 2}
    commands = samples(metrics, "wormhole_mailbox_commands_total", "type")
    assert {k: v for k, v in commands.items() if v} == {"add": 1, "other": 1, "invalid": 2}


def test_every_error_kind_is_a_label_of_its_own() -> None:
    metrics = MailboxMetrics(CollectorRegistry())
    for kind in ErrorKind:
        metrics.count(Count(Metric.ERRORS, kind.value))
    errors = samples(metrics, "wormhole_mailbox_errors_total", "kind")
    assert errors == {kind.value: 1 for kind in ErrorKind}
    assert set(errors) == set(LABELS[Metric.ERRORS])


def test_drop_reasons_are_all_exported_at_zero() -> None:
    metrics = MailboxMetrics(CollectorRegistry())
    metrics.count(Count(Metric.DROPPED, "too_slow"))
    dropped = samples(metrics, "wormhole_mailbox_connections_dropped_total", "reason")
    assert dropped == {"handshake_timeout": 0, "bad_upgrade": 0, "head_too_large": 0,
                       "too_slow": 1, "write_timeout": 0, "ping_timeout": 0,
                       "permission_denied": 0, "database": 0, "command_timeout": 0,
                       "protocol_error": 0, "invalid_utf8": 0, "too_big": 0}
