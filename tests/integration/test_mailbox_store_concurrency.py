"""Writers of several processes share the tables without a global lock and never deadlock.

Each Batcher here has its own connection pool, as a separate process would: the database sees
independent transactions. Random ops on a small set of nameplates and mailboxes make their
batches overlap in every order; PostgreSQL's deadlock detector (set to react quickly) would
fail an op, so no op may fail.
"""

from __future__ import annotations

import random

import psycopg
import pytest
import trio
from psycopg.conninfo import conninfo_to_dict
from wormhole_common.database import Database
from wormhole_mailbox.batcher import Batcher
from wormhole_mailbox.core.ops import (
    Add,
    Allocate,
    Claim,
    Close,
    Message,
    Op,
    Open,
    Refused,
    Release,
)
from wormhole_mailbox.pruning import Pruner, prune_in_batches
from wormhole_mailbox.store import Store

from tests.integration.mailbox_helpers import query
from tests.integration.test_mailbox_store import database

WRITERS = 4
CLIENTS = 6
OPS = 30
APPS = ("a1", "a2")


def random_op(rng: random.Random, side: str, now: float) -> Op:
    app = rng.choice(APPS)
    name = str(rng.randint(1, 6))
    mailbox = f"m{rng.randint(1, 6)}"
    match rng.randint(0, 6):
        case 0:
            return Allocate(app, side, now)
        case 1:
            return Claim(app, side, name, now)
        case 2:
            return Release(app, side, name, now)
        case 3:
            return Open(app, side, mailbox, now)
        case 4 | 5:
            return Add(app, side, mailbox, "p", "body", now, "id")
        case _:
            return Close(app, side, mailbox, rng.choice(["happy", None]), now,
                         implicit_open=rng.random() < 0.5)


async def fast_deadlock_detection(url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]

    def alter() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET deadlock_timeout = \'50ms\'')

    await trio.to_thread.run_sync(alter)


@pytest.mark.parametrize("seed", range(8))
async def test_overlapping_writers_never_deadlock(database_url: str, seed: int) -> None:
    rng = random.Random(seed)
    async with database(database_url) as setup_db:
        await fast_deadlock_detection(database_url)
        setup_db.close()
    results: list[object] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            batchers = []
            dbs = [Database(database_url, size=1) for _ in range(WRITERS + 1)]
            for db in dbs[:WRITERS]:
                batcher = Batcher(db, Store(blur_seconds=None), on_message=lambda op, m: None)
                batchers.append(batcher)
                nursery.start_soon(batcher.run)

            async def client(batcher: Batcher, side: str, seed: int) -> None:
                crng = random.Random(seed)
                for step in range(OPS):
                    results.append(await batcher.submit(random_op(crng, side, 1000.0 + step)))

            async def prune() -> None:
                pruner = Pruner(blur_seconds=None)
                for _ in range(10):
                    await prune_in_batches(dbs[-1], pruner, now=2000.0, cutoff=1010.0,
                                           subscribed=[("a1", "m1")], batch_size=2)

            async with trio.open_nursery() as clients:
                for w, batcher in enumerate(batchers):
                    for c in range(CLIENTS):
                        clients.start_soon(client, batcher, f"s{w}{c}", rng.random())
                clients.start_soon(prune)
            nursery.cancel_scope.cancel()
            for db in dbs:
                db.close()
    assert len(results) == WRITERS * CLIENTS * OPS  # StoreFailed would have ended the test
    assert any(isinstance(r, Message) for r in results)
    assert any(isinstance(r, Refused) for r in results)
    await assert_consistent(database_url)


async def assert_consistent(url: str) -> None:
    crowded_np = await query(url, "SELECT app_id, name FROM nameplate_sides WHERE claimed"
                             " GROUP BY app_id, name HAVING count(*) > 2")
    assert crowded_np == []
    crowded_mb = await query(url, "SELECT app_id, mailbox_id FROM mailbox_sides"
                             " GROUP BY app_id, mailbox_id HAVING count(*) > 2")
    assert crowded_mb == []
    orphans = await query(url, "SELECT count(*) FROM messages m WHERE NOT EXISTS"
                          " (SELECT 1 FROM mailboxes b WHERE b.app_id = m.app_id"
                          " AND b.id = m.mailbox_id)")
    assert orphans == [(0,)]
