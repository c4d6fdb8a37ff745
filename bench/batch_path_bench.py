"""The batcher's one statement, sent three ways: CPU and wall time per batch.

    python bench/batch_path_bench.py --batches 300 --pairs 4 --rounds 3

- `direct`: `Database.statement`, what the batcher uses: a dedicated autocommit connection
  driven from trio through libpq's non-blocking API, no thread;
- `thread`: the same statement on an autocommit connection, through a worker thread
  (`trio.to_thread`, one hop per statement): the cost of the hop alone;
- `thread+tx`: `Database.run`, the thread pool inside a transaction (BEGIN, the statement,
  COMMIT), as the batcher ran before.

Each batch holds the whole lifecycle of `--pairs` channels (claim, open, add, release and close
for two sides: 10 ops a pair), on a durable PostgreSQL (fsync and synchronous commit on).
CPU counts this process and the PostgreSQL backends; the modes alternate for `--rounds`.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wormhole_common.database import Database  # noqa: E402
from wormhole_common.migrations import migrate  # noqa: E402
from wormhole_mailbox.core.ops import Add, Claim, Close, Op, Open, Release  # noqa: E402
from wormhole_mailbox.core.paging import PageBounds  # noqa: E402
from wormhole_mailbox.core.sqlbatch import BATCH_SQL, BatchSettings, Statement  # noqa: E402

from bench.mailbox_bench import postgres_cpu  # noqa: E402
from tests.support.postgres import TestCluster  # noqa: E402

SETTINGS = BatchSettings(origin="bench", max_messages=1000, max_bytes=1 << 22,
                         pages=PageBounds(), blur_seconds=None)
THREAD_SQL = ("SELECT mb_batch(%s, %s, %s::integer, %s::bigint, %s::integer, %s::bigint,"
              " %s::float8, %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
              " %s::text[], %s::text[])")
_names = itertools.count(1)


def lifecycles(pairs: int) -> list[Op]:
    ops: list[Op] = []
    for _ in range(pairs):
        n = next(_names)
        name, mailbox = str(n), f"mb{n}"
        for side in ("a", "b"):
            ops += [Claim("bench", side, name, 1.0), Open("bench", side, mailbox, 2.0),
                    Add("bench", side, mailbox, "pake", "x" * 100, 3.0, n)]
        ops += [Release("bench", side, name, 4.0) for side in ("a", "b")]
        ops += [Close("bench", side, mailbox, "happy", 5.0, False) for side in ("a", "b")]
    return ops


def text(params: list[bytes | None]) -> tuple[Any, ...]:
    return tuple(None if p is None else p.decode() for p in params)


async def run_mode(mode: str, url: str, batches: int, pairs: int,
                   postmaster: int) -> dict[str, float]:
    db = Database(url, size=1)
    thread_conn = psycopg.connect(url, autocommit=True)
    send: Callable[[list[bytes | None]], Awaitable[Any]]
    if mode == "direct":
        async def send(params: list[bytes | None]) -> Any:
            return await db.statement(BATCH_SQL, params)
    elif mode == "thread":
        async def send(params: list[bytes | None]) -> Any:
            return await trio.to_thread.run_sync(
                lambda: thread_conn.execute(THREAD_SQL, text(params)).fetchone())
    else:
        async def send(params: list[bytes | None]) -> Any:
            return await db.run(lambda conn: conn.execute(THREAD_SQL, text(params)).fetchone())
    try:
        await send(Statement(lifecycles(1), SETTINGS).params)  # connected, warm
        cpu0, pg0, wall0 = time.process_time(), postgres_cpu(postmaster), time.perf_counter()
        for _ in range(batches):
            await send(Statement(lifecycles(pairs), SETTINGS).params)
        wall = time.perf_counter() - wall0
        cpu, pg = time.process_time() - cpu0, postgres_cpu(postmaster) - pg0
    finally:
        thread_conn.close()
        db.close()
    return {"client_ms": 1000 * cpu / batches, "postgres_ms": 1000 * pg / batches,
            "wall_ms": 1000 * wall / batches}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cluster = TestCluster(durable=True)
    cluster.start()
    try:
        db = Database(cluster.url, size=2)
        await migrate(db, "mailbox", "wormhole_mailbox")
        db.close()
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        print(f"{args.batches} batches of {args.pairs * 10} ops per mode and round")
        for r in range(args.rounds):
            for mode in ("direct", "thread", "thread+tx"):
                f = await run_mode(mode, cluster.url, args.batches, args.pairs, postmaster)
                print(f"round {r + 1} {mode:10} client {f['client_ms']:.3f} ms/batch,"
                      f" postgres {f['postgres_ms']:.3f} ms/batch, wall {f['wall_ms']:.3f}"
                      f" ms/batch", flush=True)
    finally:
        cluster.stop()


if __name__ == "__main__":
    trio.run(main)
