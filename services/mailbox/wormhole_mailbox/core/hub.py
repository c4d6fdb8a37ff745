"""Who is subscribed to which mailbox in this process, and live delivery to them.

Messages arrive from this process's own commits and, through LISTEN/NOTIFY, from other
processes, in no guaranteed order between the two. A subscriber that is still replaying holds
live messages; afterwards it delivers each message it has not yet delivered, by storage
sequence number, so nothing is lost or repeated across the replay boundary
(docs/mailbox-protocol.md §5.9) or between the two paths.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from wormhole_mailbox.core.ops import Key, Message


class Subscriber:
    def __init__(self, deliver: Callable[[Message], None]) -> None:
        self._deliver = deliver
        self._replaying = True
        self._through: int | None = None  # while commands are pipelined: held past this seq
        self._held: list[Message] = []
        self._delivered: set[int] = set()

    def offer(self, message: Message) -> None:
        if self._replaying or (self._through is not None and message.seq > self._through):
            self._held.append(message)
        elif message.seq not in self._delivered:
            self._delivered.add(message.seq)
            self._deliver(message)

    def replayed(self, seqs: Iterable[int]) -> None:
        """The replay of `seqs` is written; release what arrived meanwhile."""
        self._replaying = False
        self._delivered.update(seqs)
        self._release()

    def hold(self) -> None:
        """The connection has several commands in the store at once: hold every message
        until `release_through` says which may go, so that each `add`'s copy to its sender
        follows that add's `ack`, as if the commands had run one at a time
        (docs/mailbox-protocol.md §3.3)."""
        self._through = 0

    def release_through(self, seq: int) -> None:
        """Deliver what is held up to `seq`; keep holding what came after."""
        if self._through is not None:
            self._through = max(self._through, seq)
            self._release()

    def stop_holding(self) -> None:
        self._through = None
        self._release()

    def _release(self) -> None:
        held, self._held = self._held, []
        for message in sorted(held, key=lambda m: m.seq):
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

    def is_subscribed(self, key: Key) -> bool:
        return key in self._subscribers

    def subscribed_mailboxes(self) -> list[Key]:
        return list(self._subscribers)

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())
