"""The mailbox's HTTP and WebSocket edge under hostile clients, on a real server process.

Starts a PostgreSQL and `wormhole-mailbox` with default settings (`--workers` sets
MAILBOX_WORKERS) and reports:

1. upgrade requests RFC 6455 refuses, and request heads over the limit: the HTTP status each
   gets, and whether the answer arrived whole (not reset away);
2. a text message cut into 200,000 one-byte fragments, and 20 MB of empty continuation frames:
   the close each gets and the server's peak RSS growth meanwhile;
3. 20 frames of 2 MiB sent whole before reading: how many deliver their 1009 close frame;
4. a fuzz of N mutated frames over many connections: how each connection ended (close code,
   or without a close frame);
5. a client that floods pings and never reads, then SIGTERM: seconds until the server exits,
   against MAILBOX_SHUTDOWN_GRACE_SECONDS.

    python bench/edge_probe.py --frames 20000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailbox_bench import peak_rss_during, running_mailbox  # noqa: E402 - bench/ is the script's folder

UPGRADE = (b"GET /v1 HTTP/1.1\r\nHost: probe\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
GRACE = 3.0


def frame(payload: bytes, first: int = 0x81, announce: int | None = None) -> bytes:
    """A client frame masked with a zero key (valid, and the payload stays as it is)."""
    n = len(payload) if announce is None else announce
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def connect(port: int, request: bytes = UPGRADE) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(30)
    s.sendall(request)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = s.recv(65536)
        if not chunk:
            break
        received += chunk
    return s, received


def read_to_end(s: socket.socket, received: bytes = b"") -> tuple[bytes, bool]:
    """Everything until EOF, and whether a reset ended it instead."""
    try:
        while chunk := s.recv(1 << 20):
            received += chunk
    except ConnectionResetError:
        return received, True
    finally:
        s.close()
    return received, False


def last_close(data: bytes) -> int | None:
    """The code of the last close frame among the server's frames (after the 101), if any."""
    data = data.split(b"\r\n\r\n", 1)[1] if data.startswith(b"HTTP/") else data
    code = None
    while len(data) >= 2:
        n, pos = data[1] & 0x7F, 2
        if n == 126:
            n, pos = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            n, pos = struct.unpack("!Q", data[2:10])[0], 10
        if data[0] & 0x0F == 0x8 and len(data) >= pos + 2:
            code = struct.unpack("!H", data[pos:pos + 2])[0]
        data = data[pos + n:]
    return code


def send_while_reading(port: int, data: bytes) -> tuple[int | None, bool]:
    s, received = connect(port)

    def send() -> None:
        with contextlib.suppress(OSError):  # closed after its close frame
            s.sendall(data)

    sender = threading.Thread(target=send)
    sender.start()
    received, reset = read_to_end(s, received)
    sender.join()
    return last_close(received), reset


def upgrades(port: int) -> dict[str, str]:
    cases = {
        "HTTP/1.0": UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"),
        "no Host": UPGRADE.replace(b"Host: probe\r\n", b""),
        "key abc": UPGRADE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"abc"),
        "version 8": UPGRADE.replace(b"Version: 13", b"Version: 8"),
        "20 KiB head": UPGRADE[:-2] + b"X-Pad: " + b"a" * 20_000 + b"\r\n\r\n",
        "40 KB head": UPGRADE[:-2] + b"X-Pad: " + b"a" * 40_000 + b"\r\n\r\n",
    }
    out = {}
    for name, request in cases.items():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        received, reset = read_to_end(s)
        status = received.split(b"\r\n", 1)[0].decode(errors="replace")
        extra = " +Sec-WebSocket-Version" if b"Sec-WebSocket-Version: 13" in received else ""
        out[name] = f"{status}{extra}{' (RESET)' if reset else ''}"
    return out


def fragments(port: int, pid: int) -> dict[str, str]:
    one_byte = frame(b"a", 0x01) + frame(b"a", 0x00) * 200_000
    empty = frame(b"", 0x01) + frame(b"", 0x00) * (20_000_000 // 6)
    out = {}
    for name, data in (("200,000 one-byte fragments", one_byte), ("20 MB empty", empty)):
        (code, _), before, peak = peak_rss_during(
            pid, lambda d=data: send_while_reading(port, d))
        out[name] = f"close {code}, peak RSS +{(peak - before) / 2**20:.1f} MiB"
    return out


def big_frames(port: int, count: int = 20) -> str:
    delivered = 0
    for _ in range(count):
        s, received = connect(port)
        s.sendall(frame(b"\0" * (2 << 20), 0x82))
        received, _ = read_to_end(s, received)
        delivered += last_close(received) == 1009
    return f"{delivered} of {count} refused 2 MiB frames delivered their 1009 close"


def fuzz(port: int, frames: int, seed: int = 7) -> Counter[str]:
    rng = random.Random(seed)
    commands = [b'{"type": "bind", "appid": "a", "side": "s"}', b'{"type": "allocate"}',
                b'{"type": "claim", "nameplate": "12"}', b'{"type": "list"}',
                b'{"type": "open", "mailbox": "m"}', b'{"type": "release"}',
                b'{"type": "add", "phase": "p", "body": "00"}', b'{"type": "ping", "ping": 1}',
                b'{"type": "close", "mood": "happy"}']
    outcomes: Counter[str] = Counter()
    sent = 0
    while sent < frames:
        s, received = connect(port)
        burst = []
        for _ in range(rng.randint(1, 50)):
            roll = rng.random()
            if roll < 0.02:  # a string over 1 MiB
                burst.append(frame(b'{"type": "add", "body": "' + b"a" * (1 << 20) + b'"}'))
            elif roll < 0.5:
                burst.append(frame(rng.choice(commands)))
            else:
                data = bytearray(frame(rng.choice(commands), rng.choice((0x81, 0x01, 0x80))))
                for _ in range(rng.randint(1, 3)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                burst.append(bytes(data))
        sent += len(burst)
        with contextlib.suppress(OSError):
            s.sendall(b"".join(burst) + frame(b"\x03\xe8", 0x88))  # then a close of ours
            s.shutdown(socket.SHUT_WR)  # and the end (a cut frame must not leave it waiting)
        received, reset = read_to_end(s, received)
        code = last_close(received)
        outcomes["no close frame" if code is None else f"close {code}"] += 1
        if code is None and os.environ.get("PROBE_DEBUG"):
            print("no close:", len(burst), [len(b) for b in burst][:60], received[-300:],
                  file=sys.stderr)
        if reset:
            outcomes["reset"] += 1
    return outcomes


def flood_then_stop(port: int, server: subprocess.Popen[bytes]) -> str:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.connect(("127.0.0.1", port))
    s.sendall(UPGRADE)
    stop = threading.Event()

    def flood() -> None:
        try:
            while not stop.is_set():
                s.sendall(frame(b"p" * 125, 0x89) * 64)
        except OSError:
            pass

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    time.sleep(3)  # the server's buffers fill up
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    server.wait(60)
    took = time.monotonic() - started
    stop.set()
    s.close()
    return f"exited {took:.2f} s after SIGTERM (grace {GRACE:g} s), status {server.returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--workers", default="1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "mailbox.log"
        with running_mailbox(log, MAILBOX_WORKERS=args.workers,
                             MAILBOX_SHUTDOWN_GRACE_SECONDS=str(GRACE)) as ours:
            port = ours.port
            report = {"upgrades": upgrades(port), "fragments": fragments(port, ours.proc.pid),
                      "big frames": big_frames(port), "fuzz": dict(fuzz(port, args.frames)),
                      "ping flood and SIGTERM": flood_then_stop(port, ours.proc)}
        report["tracebacks in the log"] = log.read_text().count("Traceback")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
