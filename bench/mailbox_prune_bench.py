"""How long honest commands stall while a large pruning backlog is retired.

Starts a durable PostgreSQL, fills it with a backlog of abandoned channels (about `--rows`
rows: mailboxes with a side, half of them with a nameplate and its claim), then retires it
while honest exchanges (claim, open, two adds, release, close) run through the group-commit
batcher on their own connection pool, and prints the longest command latency seen during the
pruning and how many exchanges completed meanwhile.

    python bench/mailbox_prune_bench.py --rows 50000 --batch-size 500
    python bench/mailbox_prune_bench.py --rows 15000 --single   # one transaction

`--single` retires the whole backlog in one transaction: past roughly ten thousand mailboxes
its advisory locks exhaust PostgreSQL's shared lock table ("out of shared memory"), which
fails concurrent commands too; that is why pruning runs in batches.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wormhole_common.database import Database  # noqa: E402
from wormhole_common.migrations import migrate  # noqa: E402
from wormhole_mailbox.batcher import Batcher  # noqa: E402
from wormhole_mailbox.core.ops import Add, Claim, Close, Op, Open, Release  # noqa: E402
from wormhole_mailbox.pruning import prune_in_batches  # noqa: E402
from wormhole_mailbox.store import Store  # noqa: E402

from tests.support.postgres import TestCluster  # noqa: E402

BACKLOG_SQL = """
INSERT INTO mailboxes (app_id, id, for_nameplate, updated)
    SELECT 'app', 'old' || i, i %% 2 = 0, 1.0 FROM generate_series(1, %(n)s) AS i;
INSERT INTO mailbox_sides (app_id, mailbox_id, side, opened, added)
    SELECT 'app', 'old' || i, 'side', true, 1.0 FROM generate_series(1, %(n)s) AS i;
INSERT INTO nameplates (app_id, name, mailbox_id)
    SELECT 'app', 'old' || i, 'old' || i FROM generate_series(2, %(n)s, 2) AS i;
INSERT INTO nameplate_sides (app_id, name, side, claimed, added)
    SELECT 'app', 'old' || i, 'side', true, 1.0 FROM generate_series(2, %(n)s, 2) AS i;
"""


class Stalls:
    def __init__(self) -> None:
        self.pruning = False
        self.longest = 0.0
        self.exchanges = 0

    async def timed(self, batcher: Batcher, op: Op) -> None:
        started = time.perf_counter()
        await batcher.submit(op)
        if self.pruning:
            self.longest = max(self.longest, time.perf_counter() - started)


async def exchange(batcher: Batcher, stalls: Stalls, n: int) -> None:
    now = time.time()
    name, a, b = f"live{n}", f"a{n}", f"b{n}"
    for side in (a, b):
        await stalls.timed(batcher, Claim("app", side, name, now))
    mailbox = await batcher.submit(Claim("app", a, name, now))
    assert isinstance(mailbox, str)
    for side in (a, b):
        await stalls.timed(batcher, Open("app", side, mailbox, now))
        await stalls.timed(batcher, Add("app", side, mailbox, "p", "body", now, "id"))
    for side in (a, b):
        await stalls.timed(batcher, Release("app", side, name, now))
        await stalls.timed(batcher, Close("app", side, mailbox, "happy", now, False))
    if stalls.pruning:
        stalls.exchanges += 1


async def honest(batcher: Batcher, stalls: Stalls, pairs: int, done: trio.Event) -> None:
    counter = 0

    async def pair(k: int) -> None:
        nonlocal counter
        while not done.is_set():
            counter += 1
            await exchange(batcher, stalls, counter * 1000 + k)

    async with trio.open_nursery() as nursery:
        for k in range(pairs):
            nursery.start_soon(pair, k)


async def run(url: str, args: argparse.Namespace) -> None:
    setup = Database(url, size=1)
    await migrate(setup, "mailbox", "wormhole_mailbox")
    n = args.rows // 3
    def fill(conn: psycopg.Connection) -> None:
        for statement in BACKLOG_SQL.split(";"):
            if statement.strip():
                conn.execute(statement, {"n": n})

    await setup.run(fill)
    commands = Database(url, size=2)
    pruning = Database(url, size=1, deadline_seconds=600)
    store = Store(blur_seconds=None)
    batcher = Batcher(commands, store, on_message=lambda op, m: None)
    stalls = Stalls()
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        nursery.start_soon(honest, batcher, stalls, args.pairs, done)
        await trio.sleep(1)  # warm up
        stalls.pruning = True
        started = time.perf_counter()
        # one transaction: a batch that holds the whole backlog
        report = await prune_in_batches(pruning, store.pruner, now=time.time(), cutoff=100.0,
                                        subscribed=[],
                                        batch_size=n if args.single else args.batch_size)
        took = time.perf_counter() - started
        stalls.pruning = False
        done.set()
        nursery.cancel_scope.cancel()
    mode = "one transaction" if args.single else f"batches of {args.batch_size}"
    print(f"backlog {n} mailboxes ({args.rows} rows), pruned in {mode}: "
          f"{report.mailboxes} mailboxes, {report.nameplates} nameplates in {took:.2f} s")
    print(f"honest pairs: {args.pairs}; exchanges completed meanwhile: {stalls.exchanges}; "
          f"longest command latency during pruning: {stalls.longest * 1000:.0f} ms")
    for db in (setup, commands, pruning):
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--single", action="store_true",
                        help="prune the whole backlog in one transaction")
    parser.add_argument("--database-url", help="use this database instead of starting one")
    args = parser.parse_args()
    if args.database_url:
        trio.run(run, args.database_url, args)
        return
    cluster = TestCluster(durable=True)
    cluster.start()
    try:
        trio.run(run, cluster.url, args)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
