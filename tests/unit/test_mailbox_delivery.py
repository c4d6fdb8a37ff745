"""Message announcements between processes (NOTIFY payloads), parsed without a database."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from prometheus_client import CollectorRegistry, Counter
from wormhole_mailbox.core.hub import Hub, Subscriber
from wormhole_mailbox.core.ops import Add, Message
from wormhole_mailbox.delivery import (
    NOTIFY_CHANNEL,
    Announcement,
    local_delivery,
    parse_announcement,
    wanted,
)


def test_the_sql_notifies_the_channel_we_listen_on() -> None:
    sql = resources.files("wormhole_mailbox").joinpath("migrations/0001_initial.sql").read_text()
    assert f"pg_notify('{NOTIFY_CHANNEL}', payload)" in sql


@pytest.mark.parametrize(("payload", "announcement"), [
    ('{"o": "p1", "s": 42, "a": "app", "m": "mb"}', Announcement("p1", 42, ("app", "mb"))),
    ('{"m": "mb", "a": "app", "s": 1, "o": ""}', Announcement("", 1, ("app", "mb"))),
    ('{"o": "p1", "s": 42}', Announcement("p1", 42, None)),  # app and mailbox did not fit
    ('{"o": "p1", "s": 42, "a": "app"}', Announcement("p1", 42, None)),
    ('{"o": "p1", "s": 42, "a": 1, "m": "mb"}', Announcement("p1", 42, None)),
])
def test_announcements_parse(payload: str, announcement: Announcement) -> None:
    assert parse_announcement(payload) == announcement


@pytest.mark.parametrize("payload", [
    "", "not json", "[1]", "null", '{"s": 1}', '{"o": "p1"}', '{"o": "p1", "s": "1"}',
    '{"o": "p1", "s": true}', '{"o": 5, "s": 1}', '{"o": "p1", "s": 1.5}',
])
def test_anything_else_is_ignored(payload: str) -> None:
    assert parse_announcement(payload) is None


def test_payload_size_fallback_mirrors_the_sql() -> None:
    """The SQL drops app and mailbox past 7900 bytes; such a payload still parses."""
    big = json.dumps({"o": "p1", "s": 3, "a": "x" * 8000, "m": "mb"})
    assert parse_announcement(big) == Announcement("p1", 3, ("x" * 8000, "mb"))


def test_only_others_messages_for_followed_mailboxes_are_fetched() -> None:
    followed = {("app", "mb")}
    announcements = [
        Announcement("me", 1, ("app", "mb")),  # delivered at commit already
        Announcement("other", 2, ("app", "mb")),
        Announcement("other", 3, ("app", "elsewhere")),
        Announcement("other", 4, None),  # unknown mailbox: look it up
        Announcement("me", 5, None),
    ]
    assert wanted(announcements, "me", followed.__contains__) == [2, 4]


def test_local_delivery_counts_and_publishes() -> None:
    hub = Hub()
    got: list[Message] = []
    subscriber = Subscriber(got.append)
    subscriber.replayed(())
    hub.subscribe(("app", "mb"), subscriber)
    registry = CollectorRegistry()
    relayed = Counter("relayed", "test", registry=registry)
    deliver = local_delivery(hub, relayed)
    message = Message(1, "s", "p", "b", 1.0, None)
    deliver(Add("app", "s", "mb", "p", "b", 1.0, None), message)
    deliver(Add("app", "s", "other", "p", "b", 1.0, None), Message(2, "s", "p", "b", 1.0, None))
    assert got == [message]
    assert registry.get_sample_value("relayed_total") == 2
