"""Who is subscribed to which mailbox in this process, and live delivery to them.

A subscriber that is still replaying buffers live messages; once the replay is written it
keeps only those newer than the last replayed one, so nothing is lost or repeated across the
boundary (spec 4.5).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from wormhole_mailbox.ops import Message

Key = tuple[str, str]  # (app, mailbox)


class Subscriber:
    def __init__(self, deliver: Callable[[Message], None]) -> None:
        self._deliver = deliver
        self._replaying = True
        self._held: list[Message] = []
        self._floor = 0

    def offer(self, message: Message) -> None:
        if self._replaying:
            self._held.append(message)
        elif message.seq > self._floor:
            self._floor = message.seq
            self._deliver(message)

    def replayed(self, last_seq: int) -> None:
        """The replay up to `last_seq` is written; release what arrived meanwhile."""
        self._replaying = False
        self._floor = last_seq
        held, self._held = self._held, []
        for message in held:
            self.offer(message)


class Hub:
    def __init__(self) -> None:
        self._subscribers: dict[Key, set[Subscriber]] = defaultdict(set)

    def subscribe(self, key: Key, subscriber: Subscriber) -> None:
        self._subscribers[key].add(subscriber)

    def unsubscribe(self, key: Key, subscriber: Subscriber) -> None:
        subs = self._subscribers.get(key)
        if subs is None:
            return
        subs.discard(subscriber)
        if not subs:
            del self._subscribers[key]

    def publish(self, key: Key, message: Message) -> None:
        for subscriber in list(self._subscribers.get(key, ())):
            subscriber.offer(message)

    def subscribed_mailboxes(self) -> list[Key]:
        return list(self._subscribers)

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())
