"""Load generator for the mailbox: N concurrent pairs, each repeating one rendezvous cycle.

One cycle = two new connections. A binds, allocates, claims, opens; B binds, claims, opens;
each adds `pake` and `version` (64 hex digits); each releases on the peer's first message and
closes `happy` after the peer's two; both disconnect. Latency is from just before an `add` is
written to the other side's receipt of that message.

The client is raw sockets (asyncio streams and a few lines of RFC 6455: frames masked with a
zero key, which is a valid key and spares the XOR), so the generator takes a fraction of a core
and the server, not the generator, is what a run measures.

    python bench/mailbox_load.py ws://127.0.0.1:4000/v1 --pairs 50 --seconds 20

With several URLs (several mailbox processes sharing a database) the two sides of each pair
use different ones, so every message crosses processes. `--sources N` connects each side from
one of N loopback addresses (127.0.0.1 upwards; Linux routes all of 127.0.0.0/8 to the
loopback), as users come from many addresses: a worker group sends each address to one worker.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

APPID = "bench.example/load"
BODY = "ab" * 32


@dataclass
class Stats:
    cycles: int = 0
    errors: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    # each latency in three parts, from the message's `server_rx` and `server_tx` (wall
    # clock, one machine): to the server's reading of the add, in the server until the
    # copy is written, and on to the receiving client
    parts: dict[str, list[float]] = field(
        default_factory=lambda: {"to_server": [], "in_server": [], "to_client": []})


class RawWebSocket:
    """Just enough of a WebSocket client: upgrade, masked text frames out, frames in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, url: str, source: str | None = None) -> RawWebSocket:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(
            parts.hostname, parts.port, local_addr=(source, 0) if source else None)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                     .encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        return cls(reader, writer)

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        self.writer.write(head + b"\0\0\0\0" + payload)  # a zero mask leaves it as it is

    async def recv(self) -> str:
        while True:
            first, second = await self.reader.readexactly(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(n)
            opcode = first & 0x0F
            if opcode == 0x1:
                return payload.decode()
            if opcode == 0x8:
                raise RuntimeError(f"closed by the server: {payload[2:].decode()}")
            if opcode == 0x9:  # a ping: its pong (masked with a zero key)
                self.writer.write(struct.pack("!BB", 0x8A, 0x80 | n) + b"\0\0\0\0" + payload)

    async def close(self) -> None:
        self.writer.write(b"\x88\x82\0\0\0\0\x03\xe8")  # 1000
        try:
            while True:  # the server's close, then the end of the stream
                first, second = await self.reader.readexactly(2)
                await self.reader.readexactly(second & 0x7F)
                if first & 0x0F == 0x8:
                    break
        except (asyncio.IncompleteReadError, OSError):
            pass
        self.writer.close()


class Side:
    def __init__(self, url: str, side: str, stats: Stats, source: str | None = None) -> None:
        self.url = url
        self.side = side
        self.source = source
        self.stats = stats
        self.ws: RawWebSocket | None = None
        self.sent_at: dict[str, float] = {}
        self.sent_wall: dict[str, float] = {}

    async def send(self, **msg: object) -> None:
        assert self.ws is not None
        self.ws.send(json.dumps(msg))

    async def recv(self, kind: str) -> dict[str, object]:
        assert self.ws is not None
        while True:
            msg = json.loads(await self.ws.recv())
            if msg["type"] == kind:
                return msg
            if msg["type"] == "error":
                raise RuntimeError(msg["error"])


async def run_side(me: Side, peer: Side, name_box: asyncio.Future[str], allocate: bool) -> None:
    me.ws = ws = await RawWebSocket.connect(me.url, me.source)
    try:
        await me.recv("welcome")
        await me.send(type="bind", appid=APPID, side=me.side, id="0001")
        if allocate:
            await me.send(type="allocate", id="0002")
            name = str((await me.recv("allocated"))["nameplate"])
            name_box.set_result(name)
        else:
            name = await name_box
        await me.send(type="claim", nameplate=name, id="0003")
        mailbox = (await me.recv("claimed"))["mailbox"]
        await me.send(type="open", mailbox=mailbox, id="0004")
        for phase in ("pake", "version"):
            me.sent_at[phase], me.sent_wall[phase] = time.perf_counter(), time.time()
            await me.send(type="add", phase=phase, body=BODY, id=phase[:4])
        seen = 0
        while seen < 2:
            msg = await me.recv("message")
            if msg["side"] == me.side:
                continue
            me.stats.latencies.append(time.perf_counter() - peer.sent_at[str(msg["phase"])])
            rx, tx = float(msg["server_rx"]), float(msg["server_tx"])  # type: ignore[arg-type]
            parts = me.stats.parts
            parts["to_server"].append(rx - peer.sent_wall[str(msg["phase"])])
            parts["in_server"].append(tx - rx)
            parts["to_client"].append(time.time() - tx)
            seen += 1
            if seen == 1:
                await me.send(type="release", nameplate=name, id="0005")
        await me.send(type="close", mailbox=mailbox, mood="happy", id="0006")
        await me.recv("closed")
    finally:
        await ws.close()


def source(number: int, sources: int) -> str | None:
    """The loopback address of user `number` (None: the system's choice, 127.0.0.1)."""
    if sources <= 1:
        return None
    host = 1 + number % sources
    return f"127.0.{host // 256}.{host % 256}"


async def pair_loop(
    urls: list[str], index: int, stats: Stats, stop_at: float, sources: int = 1,
) -> None:
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        # with several servers the two sides of a pair talk to different ones
        a = Side(urls[index % len(urls)], f"a{index:04x}{n:05x}", stats,
                 source(2 * index, sources))
        b = Side(urls[(index + 1) % len(urls)], f"b{index:04x}{n:05x}", stats,
                 source(2 * index + 1, sources))
        name_box: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(
                asyncio.gather(run_side(a, b, name_box, True), run_side(b, a, name_box, False)),
                timeout=30,
            )
            stats.cycles += 1
        except (OSError, RuntimeError, TimeoutError, asyncio.IncompleteReadError) as exc:
            stats.errors += 1
            reason = f"{type(exc).__name__}: {exc}"[:80]
            stats.reasons[reason] = stats.reasons.get(reason, 0) + 1


async def run_load(
    urls: list[str], pairs: int, seconds: float, sources: int = 1,
) -> tuple[Stats, float]:
    stats = Stats()
    start = time.monotonic()
    await asyncio.gather(*(pair_loop(urls, i, stats, start + seconds, sources)
                           for i in range(pairs)))
    return stats, time.monotonic() - start


def summarise(stats: Stats, elapsed: float) -> dict[str, object]:
    return {
        "cycles": stats.cycles,
        "errors": stats.errors,
        "error_reasons": stats.reasons,
        "seconds": elapsed,
        "pairs_per_s": stats.cycles / elapsed,
        **percentiles(stats.latencies),
        **{f"{name}_{key}": value for name, values in stats.parts.items()
           for key, value in percentiles(values).items()},
    }


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 and the maximum of `values` (seconds), in milliseconds."""
    ordered = sorted(values) or [float("nan")]
    q = statistics.quantiles(ordered, n=100) if len(ordered) > 1 else [ordered[0]] * 99
    return {"p50_ms": q[49] * 1000, "p90_ms": q[89] * 1000, "p99_ms": q[98] * 1000,
            "max_ms": ordered[-1] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+", metavar="url")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--sources", type=int, default=1, metavar="N",
                        help="connect from N loopback addresses (default 1: 127.0.0.1)")
    parser.add_argument("--raw", action="store_true",
                        help="also print every latency (seconds), for pooling several runs")
    args = parser.parse_args()
    stats, elapsed = asyncio.run(run_load(args.urls, args.pairs, args.seconds, args.sources))
    raw = {"latencies": stats.latencies, "parts": stats.parts} if args.raw else {}
    print(json.dumps({"pid": os.getpid(), **summarise(stats, elapsed), **raw}))


if __name__ == "__main__":
    main()
