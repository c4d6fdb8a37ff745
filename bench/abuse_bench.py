"""The mailbox under hostile clients: memory, honest throughput, stalls while pruning.

Starts a durable PostgreSQL and our `wormhole-mailbox` (default settings but for a short prune
interval) and measures, against it:

1. replay memory: one mailbox filled until the server refuses more (`mailbox is full`), then
   opened by 4 connections at once that each read it all; the server's RSS before and at peak;
2. honest throughput: `mailbox_load.py` with 10 pairs alone, then with 4 clients sending
   hostile values (oversized fields, `1e400`, deep nesting, invalid UTF-8) the whole time;
3. pruning stall: 50,000 expired channels (100,000 rows) written straight into the database,
   then the longest message latency of honest pairs while the server prunes them.

    python bench/abuse_bench.py            # targets: RSS growth < 256 MiB, >= 80 %, < 1 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailbox_bench import ONE_ADDRESS, SOURCES, peak_rss_during, running_mailbox  # noqa: E402 - bench/ is the script's folder

BODY = "ab" * 4096  # 8 KiB of hex, like an encrypted message
HOSTILE = [
    {"type": "bind", "appid": "a" * 100_000, "side": "s"},
    {"type": "bind", "appid": "app", "side": "x" * 100_000},
    {"type": "ping", "ping": 1e400},
    {"type": "ping", "ping": 1},
]


async def command(ws: websockets.ClientConnection, **msg: object) -> dict[str, object]:
    """Send one command; the first reply after its ack."""
    await ws.send(json.dumps(msg))
    while True:
        reply = json.loads(await ws.recv())
        if reply["type"] not in ("ack", "welcome", "message"):
            return dict(reply)
        if reply["type"] == "message" and msg["type"] == "add":
            return dict(reply)


async def fill_mailbox(url: str, cap: int) -> tuple[str, int]:
    """Open a mailbox and add until refused (or `cap`); returns (mailbox, messages stored)."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()  # welcome
        await ws.send(json.dumps({"type": "bind", "appid": "fill", "side": "f1"}))
        mailbox = "bigmailbox"
        await ws.send(json.dumps({"type": "open", "mailbox": mailbox}))
        stored = 0
        while stored < cap:
            reply = await command(ws, type="add", phase=str(stored), body=BODY)
            if reply["type"] == "error":
                print(f"  filled: {stored} messages, refused with {reply['error']!r}")
                break
            stored += 1
        else:
            print(f"  never refused: stopped at {cap} messages")
        return mailbox, stored


async def replay(url: str, mailbox: str, expected: int) -> int:
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "bind", "appid": "fill", "side": "r"}))
        await ws.send(json.dumps({"type": "open", "mailbox": mailbox}))
        got = 0
        while got < expected:
            if json.loads(await ws.recv())["type"] == "message":
                got += 1
        return got


def measure_replay(url: str, pid: int, cap: int) -> None:
    mailbox, stored = asyncio.run(fill_mailbox(url, cap))
    async def four() -> list[int]:
        return list(await asyncio.gather(*(replay(url, mailbox, stored) for _ in range(4))))

    received, before, peak = peak_rss_during(pid, lambda: asyncio.run(four()))
    print(f"  replayed to 4 openers: {received} messages each")
    print(f"  server RSS {before / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB:"
          f" growth {(peak - before) / 2**20:.0f} MiB (target < 256)")


async def hostile_client(url: str, seconds: float) -> int:
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            async with websockets.connect(url, max_size=None) as ws:
                await ws.recv()
                while time.monotonic() < deadline:
                    for frame in HOSTILE:
                        await ws.send(json.dumps(frame))
                        await ws.recv()
                        sent += 1
                    await ws.send(b"\xff\xfe not utf-8")
                    sent += 1
                    await ws.send("[" * 5000 + "]" * 5000)
                    await ws.recv()
                    sent += 1
        except (websockets.ConnectionClosed, OSError):
            continue
    return sent


def run_load(url: str, pairs: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mailbox_load.py"), url,
         "--pairs", str(pairs), "--seconds", str(seconds), "--sources", str(SOURCES)],
        check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure_hostile(url: str, seconds: float) -> None:
    alone = run_load(url, 10, seconds)
    hostile = subprocess.Popen([sys.executable, __file__, "--hostile", url,
                                "--seconds", str(seconds + 2)])
    try:
        time.sleep(1)
        attacked = run_load(url, 10, seconds)
    finally:
        hostile.wait()
    ratio = attacked["pairs_per_s"] / alone["pairs_per_s"]
    print(f"  honest pairs/s alone {alone['pairs_per_s']:.1f}, with 4 hostile clients"
          f" {attacked['pairs_per_s']:.1f}: {100 * ratio:.0f} % (target >= 80 %);"
          f" honest errors {attacked['errors']:.0f}")


def write_backlog(database_url: str, channels: int) -> None:
    old = time.time() - 86_400
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO mailboxes (app_id, id, for_nameplate, updated)"
            " SELECT 'backlog', 'm' || i, false, %s FROM generate_series(1, %s) i",
            (old, channels))
        conn.execute(
            "INSERT INTO mailbox_sides (app_id, mailbox_id, side, opened, added)"
            " SELECT 'backlog', 'm' || i, 's', true, %s FROM generate_series(1, %s) i",
            (old, channels))


def measure_prune_stall(url: str, database_url: str, log: Path, seconds: float) -> None:
    """Honest pairs run for `seconds` while the backlog is pruned; the backlog shrinks as
    the server prunes it, which is timed from here by polling."""
    write_backlog(database_url, 50_000)
    started, finished = time.monotonic(), None
    load = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "mailbox_load.py"), url, "--pairs", "5",
         "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True)
    with psycopg.connect(database_url, autocommit=True) as conn:
        while load.poll() is None:
            row = conn.execute(
                "SELECT count(*) FROM mailboxes WHERE app_id = 'backlog'").fetchone()
            if finished is None and row is not None and row[0] == 0:
                finished = time.monotonic() - started
            time.sleep(0.2)
    assert load.stdout is not None
    result = json.loads(load.stdout.read().strip().splitlines()[-1])
    took = f"pruned in {finished:.1f} s" if finished is not None else "NOT pruned in time"
    print(f"  50,000 expired channels {took}; honest message latency meanwhile:"
          f" p99 {result['p99_ms']:.0f} ms, longest {result['max_ms']:.0f} ms (target < 1000);"
          f" errors {result['errors']:.0f}")
    pruned = [line for line in log.read_text().splitlines() if "pruned" in line]
    print(f"  server log: {len(pruned)} pruning lines")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--prune-seconds", type=float, default=40,
                        help="how long honest pairs run while the backlog is pruned")
    parser.add_argument("--max-fill", type=int, default=20_000,
                        help="stop filling the mailbox here if the server never refuses")
    parser.add_argument("--hostile", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hostile:
        async def four() -> None:
            await asyncio.gather(*(hostile_client(args.hostile, args.seconds) for _ in range(4)))
        asyncio.run(four())
        return
    with tempfile.TemporaryDirectory(prefix="abuse-bench-") as tmp:
        log = Path(tmp) / "mailbox.log"
        with running_mailbox(log, MAILBOX_PRUNE_INTERVAL_SECONDS="3",
                             MAILBOX_CHANNEL_EXPIRY_SECONDS="600", **ONE_ADDRESS) as ours:
            url = f"ws://127.0.0.1:{ours.port}/v1"
            print("1. replay of a full mailbox to 4 openers")
            measure_replay(url, ours.proc.pid, args.max_fill)
            print("2. honest throughput with hostile clients")
            measure_hostile(url, args.seconds)
            print("3. pruning a backlog")
            measure_prune_stall(url, ours.cluster.url, log, args.prune_seconds)

if __name__ == "__main__":
    main()
