"""Replay of a mailbox of big messages under a raised byte cap: memory, and every opener served.

Starts a durable PostgreSQL and `wormhole-mailbox` with `MAILBOX_MAILBOX_MAX_BYTES` raised,
fills one mailbox with `--messages` bodies of `--size` octets (random hex, like encrypted
messages, so PostgreSQL cannot compress them away), then has `--openers` connections open it
at once and read it all. Prints what each opener got (and how it was closed, if it was) and the
server's resident memory (the process and its workers) before and at peak.

    python bench/replay_bench.py            # 150 x 1 MB to 4 openers; target growth < 256 MiB
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailbox_bench import ONE_ADDRESS, peak_rss_during, running_mailbox  # noqa: E402 - bench/ is the script's folder

MAILBOX = "bigmailbox"


async def fill(url: str, messages: int, size: int) -> None:
    """Add `messages` bodies of `size` octets, each acknowledged by its echo."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()  # welcome
        await ws.send(json.dumps({"type": "bind", "appid": "bench", "side": "writer"}))
        await ws.send(json.dumps({"type": "open", "mailbox": MAILBOX}))
        for i in range(messages):
            body = secrets.token_hex(size // 2)
            await ws.send(json.dumps({"type": "add", "phase": str(i), "body": body, "id": i}))
            while True:
                reply = json.loads(await ws.recv())
                if reply["type"] == "error":
                    raise SystemExit(f"add {i} refused: {reply['error']}")
                if reply["type"] == "message" and reply["phase"] == str(i):
                    break


async def replay(url: str, expected: int) -> tuple[int, bool, str]:
    """(messages received, all in order, how it ended)."""
    phases: list[str] = []
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "bind", "appid": "bench", "side": "reader"}))
        await ws.send(json.dumps({"type": "open", "mailbox": MAILBOX}))
        try:
            while len(phases) < expected:
                reply = json.loads(await ws.recv())
                if reply["type"] == "message":
                    phases.append(reply["phase"])
                elif reply["type"] == "error":
                    return len(phases), False, f"error {reply['error']!r}"
        except websockets.ConnectionClosed as closed:
            rcvd = closed.rcvd
            how = f"closed {rcvd.code} {rcvd.reason!r}" if rcvd else "closed without a frame"
            return len(phases), False, how
    return len(phases), phases == [str(i) for i in range(expected)], "complete"


def measure(url: str, pid: int, openers: int, expected: int) -> int:
    """Replay to `openers` at once; returns the peak RSS growth in bytes."""
    time.sleep(1)
    started = time.monotonic()

    async def all_openers() -> list[tuple[int, bool, str]]:
        return list(await asyncio.gather(*(replay(url, expected) for _ in range(openers))))

    results, before, peak = peak_rss_during(pid, lambda: asyncio.run(all_openers()))
    seconds = time.monotonic() - started
    for n, (got, in_order, how) in enumerate(results):
        order = "in order" if in_order else "NOT in order"
        print(f"  opener {n}: {got}/{expected} messages, {order}, {how}")
    print(f"  replayed in {seconds:.1f} s")
    print(f"  server RSS {before / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB:"
          f" growth {(peak - before) / 2**20:.0f} MiB (target < 256)")
    return peak - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=150)
    parser.add_argument("--size", type=int, default=1_000_000, help="octets of each body")
    parser.add_argument("--openers", type=int, default=4)
    parser.add_argument("--max-bytes", type=int, default=200_000_000,
                        help="MAILBOX_MAILBOX_MAX_BYTES")
    parser.add_argument("--workers", help="MAILBOX_WORKERS (default: the server's default)")
    args = parser.parse_args()
    variables = {"MAILBOX_MAILBOX_MAX_BYTES": str(args.max_bytes), **ONE_ADDRESS}
    if args.workers:
        variables["MAILBOX_WORKERS"] = args.workers
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp, running_mailbox(
            Path(tmp) / "mailbox.log", **variables) as ours:
        url = f"ws://127.0.0.1:{ours.port}/v1"
        print(f"filling: {args.messages} x {args.size} octets")
        asyncio.run(fill(url, args.messages, args.size))
        print(f"replay to {args.openers} openers")
        measure(url, ours.proc.pid, args.openers, args.messages)

if __name__ == "__main__":
    main()
