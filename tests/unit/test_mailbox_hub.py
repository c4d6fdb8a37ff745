"""Live delivery within a process: held during a replay, each message once, in order."""

from __future__ import annotations

from wormhole_mailbox.core.hub import Hub, Subscriber
from wormhole_mailbox.core.ops import Message

KEY = ("app", "mb")


def message(seq: int) -> Message:
    return Message(seq, "s", "p", f"body{seq}", float(seq), None)


def collecting() -> tuple[Subscriber, list[int]]:
    got: list[int] = []
    return Subscriber(lambda m: got.append(m.seq)), got


def test_live_messages_wait_for_the_replay_and_skip_what_it_wrote() -> None:
    subscriber, got = collecting()
    subscriber.offer(message(5))
    subscriber.offer(message(3))  # committed by another process, announced late
    subscriber.offer(message(2))
    assert got == []
    subscriber.replayed([1, 2])
    assert got == [3, 5]


def test_after_the_replay_each_message_is_delivered_once() -> None:
    subscriber, got = collecting()
    subscriber.replayed([1])
    for seq in (1, 2, 2, 3, 2):
        subscriber.offer(message(seq))
    assert got == [2, 3]


def test_publish_reaches_only_that_mailboxs_subscribers() -> None:
    hub = Hub()
    a, got_a = collecting()
    b, got_b = collecting()
    for s in (a, b):
        s.replayed(())
    hub.subscribe(KEY, a)
    hub.subscribe(("app", "other"), b)
    hub.publish(KEY, message(1))
    assert (got_a, got_b) == ([1], [])


def test_subscriptions_are_counted_and_forgotten() -> None:
    hub = Hub()
    a, _ = collecting()
    b, _ = collecting()
    hub.subscribe(KEY, a)
    hub.subscribe(KEY, b)
    hub.subscribe(("app", "other"), b)
    assert hub.is_subscribed(KEY)
    assert sorted(hub.subscribed_mailboxes()) == [KEY, ("app", "other")]
    assert hub.subscriber_count() == 3
    hub.unsubscribe(KEY, a)
    hub.unsubscribe(KEY, a)  # twice is harmless
    hub.unsubscribe(KEY, b)
    hub.unsubscribe(("app", "never"), b)
    assert not hub.is_subscribed(KEY)
    assert hub.subscribed_mailboxes() == [("app", "other")]
    assert hub.subscriber_count() == 1


def test_a_subscriber_may_unsubscribe_while_being_delivered_to() -> None:
    hub = Hub()
    got: list[int] = []

    def deliver(m: Message) -> None:
        got.append(m.seq)
        hub.unsubscribe(KEY, first)

    first = Subscriber(deliver)
    second, got_second = collecting()
    for s in (first, second):
        s.replayed(())
        hub.subscribe(KEY, s)
    hub.publish(KEY, message(1))
    hub.publish(KEY, message(2))
    assert got == [1] and got_second == [1, 2]
