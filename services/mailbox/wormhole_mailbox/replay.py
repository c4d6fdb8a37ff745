"""Replaying a mailbox in pages, so its size never decides how much memory a replay takes."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from functools import partial

from wormhole_common.database import Database

from wormhole_mailbox.core.ops import Message
from wormhole_mailbox.core.paging import PageBounds
from wormhole_mailbox.store import Store


async def pages(
    db: Database, app: str, mailbox: str, *, after: int = 0,
    bounds: PageBounds | None = None,
) -> AsyncGenerator[list[Message], None]:
    """The mailbox's messages after seq `after`, page by page (keyset on seq), each page
    within `bounds` but for a message bigger than a page, which comes alone.

    The next page is read only when the consumer asks for it, so a slow reader holds one page,
    never the mailbox. Messages stored meanwhile are included until a page says none follow
    it (later ones reach a subscriber live).
    """
    while True:
        page = await db.run(partial(Store.page, app=app, mailbox=mailbox, after=after,
                                    bounds=bounds))
        yield page.messages
        if not page.more or not page.messages:
            return
        after = page.messages[-1].seq
