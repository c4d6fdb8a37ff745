"""Replaying a mailbox in pages, so its size never decides how much memory a replay takes."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from functools import partial

from wormhole_common.database import Database

from wormhole_mailbox.ops import Message
from wormhole_mailbox.store import Store

DEFAULT_PAGE_SIZE = 100


async def pages(
    db: Database, app: str, mailbox: str, *, after: int = 0,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> AsyncGenerator[list[Message], None]:
    """The mailbox's messages after seq `after`, page by page (keyset on seq).

    The next page is read only when the consumer asks for it, so a slow reader holds one page,
    never the mailbox. Messages stored meanwhile are included; the last page is shorter than
    `page_size` (possibly empty).
    """
    if page_size < 1:
        raise ValueError("page size must be at least 1")
    while True:
        page = await db.run(partial(Store.messages, app=app, mailbox=mailbox, after=after,
                                    limit=page_size))
        yield page
        if len(page) < page_size:
            return
        after = page[-1].seq
