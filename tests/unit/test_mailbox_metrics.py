"""Label values stay in small closed sets whatever clients send."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from wormhole_mailbox.metrics import ERROR_KINDS, MailboxMetrics, error_kind


@pytest.mark.parametrize(("text", "kind"), [
    ("message is not valid JSON", "malformed"),
    ("message must be a JSON object", "malformed"),
    ("missing 'type'", "malformed"),
    ("bind requires 'appid'", "malformed"),
    ("'side' must be a string", "malformed"),
    ("'client_version' must be a list of [implementation, version]", "malformed"),
    ("must bind first", "unbound"),
    ("unknown type", "unknown_type"),
    ("you already allocated one, don't be greedy", "sequence"),
    ("only one claim per connection", "sequence"),
    ("release and claim must use same nameplate", "sequence"),
    ("close without mailbox must follow open", "sequence"),
    ("must open mailbox before adding", "sequence"),
    ("invalid nameplate", "invalid_nameplate"),
    ("crowded", "crowded"),
    ("reclaimed", "reclaimed"),
    ("no free nameplate", "exhausted"),
    ("mailbox is gone", "gone"),
    ("permission denied: stamp expired", "permission_denied"),
    ("internal server error", "internal"),
    ("something new", "other"),
    (None, "other"),
])
def test_error_texts_map_to_a_fixed_set_of_kinds(text: str | None, kind: str) -> None:
    assert error_kind(text) == kind
    assert kind in ERROR_KINDS


def test_free_strings_from_clients_become_other() -> None:
    metrics = MailboxMetrics(CollectorRegistry())
    for mood in ("happy", "side-1234", None, "x" * 500):
        metrics.client_mood(mood)
    for kind in ("add", "../../etc", 7, None):
        metrics.command(kind)
    moods = {s.labels["mood"]: s.value
             for f in metrics.registry.collect() for s in f.samples
             if s.name == "wormhole_mailbox_client_moods_total"}
    assert moods == {"happy": 1, "lonely": 0, "errory": 0, "scary": 0, "unwelcome": 0,
                     "none": 1, "other": 2}
    commands = {s.labels["type"]: s.value
                for f in metrics.registry.collect() for s in f.samples
                if s.name == "wormhole_mailbox_commands_total" and s.value}
    assert commands == {"add": 1, "other": 1, "invalid": 2}
