"""Delivery of stored messages to this process's subscribers.

A message this process stored is published at commit (`local_delivery`). A message another
process stored is announced by PostgreSQL NOTIFY (`mb_add` in `migrations/0001_initial.sql`
builds the payload; `parse_announcement` reads it) and fetched by sequence number.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg
import trio
from prometheus_client import Counter
from wormhole_common.database import Database, DatabaseUnavailable, Listener

from wormhole_mailbox.core.hub import Hub
from wormhole_mailbox.core.ops import Add, Key, Message
from wormhole_mailbox.store import Store

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "wormhole_mailbox_messages"  # the channel `mb_add` notifies
RECONNECT_SECONDS = 1


@dataclass(frozen=True)
class Announcement:
    """A message stored by process `origin`; `key` is None when it did not fit the payload."""

    origin: str
    seq: int
    key: Key | None


def parse_announcement(payload: str) -> Announcement | None:
    """`{"o": origin, "s": seq, "a": app, "m": mailbox}` (app and mailbox optional); None if
    the payload is not one."""
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    origin, seq, app, mailbox = (value.get(k) for k in ("o", "s", "a", "m"))
    if not isinstance(origin, str) or not isinstance(seq, int) or isinstance(seq, bool):
        return None
    if isinstance(app, str) and isinstance(mailbox, str):
        return Announcement(origin, seq, (app, mailbox))
    return Announcement(origin, seq, None)


def wanted(
    announcements: Iterable[Announcement], own_origin: str, is_subscribed: Callable[[Key], bool],
) -> list[int]:
    """Sequence numbers worth fetching: others' messages for a mailbox someone here follows
    (or that did not say which mailbox)."""
    return [a.seq for a in announcements
            if a.origin != own_origin and (a.key is None or is_subscribed(a.key))]


def local_delivery(hub: Hub, relayed: Counter) -> Callable[[Add, Message], None]:
    """What the batcher calls for each message this process committed."""
    def deliver(op: Add, message: Message) -> None:
        relayed.inc()
        hub.publish((op.app, op.mailbox), message)
    return deliver


class RemoteDelivery:
    """Delivers messages other processes stored, from LISTEN/NOTIFY."""

    def __init__(self, db: Database, hub: Hub, origin: Callable[[], str]) -> None:
        self.db = db
        self.hub = hub
        # this process's name in announcements now (`Store.origin`): its own are skipped
        self.origin = origin

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; started once the first attempt to listen is over.

        After every (re)connection the subscribed mailboxes are read again, so a message
        announced while the listening connection was down is still delivered.
        """
        started = False
        while True:
            try:
                async with Listener(self.db.url, NOTIFY_CHANNEL) as listener:
                    if not started:
                        task_status.started()
                        started = True
                    await self._catch_up()
                    async for batch in listener.batches():
                        await self.deliver(batch)
            except DatabaseUnavailable as exc:
                log.warning("message notifications interrupted (%s); reconnecting", exc)
            except Exception:
                log.exception("message notifications failed; reconnecting")
            if not started:
                task_status.started()  # serve anyway: delivery within this process works
                started = True
            await trio.sleep(RECONNECT_SECONDS)

    async def deliver(self, notifications: list[psycopg.Notify]) -> None:
        parsed = (parse_announcement(n.payload) for n in notifications)
        seqs = wanted((a for a in parsed if a is not None), self.origin(),
                      self.hub.is_subscribed)
        if not seqs:
            return
        rows = await self.db.run(lambda db_conn: Store.messages_by_seq(db_conn, seqs))
        for app, mailbox, message in rows:
            self.hub.publish((app, mailbox), message)

    async def _catch_up(self) -> None:
        keys = self.hub.subscribed_mailboxes()
        if not keys:
            return

        def read(db_conn: psycopg.Connection) -> list[tuple[Key, list[Message]]]:
            return [(key, Store.messages(db_conn, *key)) for key in keys]

        for key, messages in await self.db.run(read):
            for message in messages:
                self.hub.publish(key, message)
