"""Mailbox throughput and latency: ours against the reference server, in one run.

Starts a durable PostgreSQL (fsync and synchronous commit on), our `wormhole-mailbox`, and the
reference `twist wormhole-mailbox` (magic-wormhole-mailbox-server from PyPI, in its own venv,
SQLite with the usage database on, as it is run in production), runs `mailbox_load.py` against
each and prints pairs/s, latency percentiles, CPU seconds and the ratios; then the memory
each holds per idle WebSocket (`--idle` connections that got their welcome and stay open,
measured on the fresh server before the load).

    python bench/mailbox_bench.py --pairs 50 --seconds 20 --workers 1 default --idle 2000
    python bench/mailbox_bench.py --pairs 50 --seconds 10 --workers default --rounds 4

CPU counts every process of each server: our supervisor and its workers (found through
/proc's children lists, since workers run in sessions of their own) and the PostgreSQL
backends of its cluster; the reference's one process (SQLite inside it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.mailbox_load import percentiles  # noqa: E402
from tests.support.postgres import TestCluster, free_port  # noqa: E402
from tests.support.processes import wait_for_port  # noqa: E402

T = TypeVar("T")
REF_VENV = ROOT / "bench" / ".ref-venv-mailbox"
TICKS = os.sysconf("SC_CLK_TCK")
SOURCES = 256  # loopback addresses the load comes from: a worker group steers by address

# The simulated honest users connect from `SOURCES` loopback addresses, each hundreds
# of times a minute: lift the per-address quotas that would otherwise (rightly) stop them.
ONE_ADDRESS = {"MAILBOX_ALLOCATIONS_PER_MINUTE": "1000000",
               "MAILBOX_NEW_MAILBOXES_PER_MINUTE": "1000000",
               "MAILBOX_NAMEPLATES_PER_IP": "1000000", "MAILBOX_MAX_CONNECTIONS_PER_IP": "100000"}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def postgres_cpu(postmaster: int) -> float:
    total = cpu_seconds(postmaster)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def ensure_reference() -> Path:
    twist = REF_VENV / "bin" / "twist"
    if not twist.exists():
        subprocess.run([sys.executable, "-m", "venv", str(REF_VENV)], check=True)
        subprocess.run([str(REF_VENV / "bin" / "pip"), "install", "-q",
                        "magic-wormhole-mailbox-server"], check=True)
    return twist


def run_load(ports: list[int], pairs: int, seconds: float) -> dict[str, float]:
    """The load generator's figures, and the CPU it took itself (`load_cpu_s`)."""
    urls = [f"ws://127.0.0.1:{port}/v1" for port in ports]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mailbox_load.py"), *urls,
         "--pairs", str(pairs), "--seconds", str(seconds), "--sources", str(SOURCES),
         "--raw"],
        check=True, capture_output=True, text=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # only the generator was reaped
    result = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    result["load_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


UPGRADE = (b"GET /v1 HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for row in Path(f"/proc/{current}/status").read_text().splitlines():
                if row.startswith("VmRSS:"):
                    total += int(row.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return total


def peak_rss_during(pid: int, work: Callable[[], T]) -> tuple[T, int, int]:
    """`work()`'s result, and the RSS of `pid`'s tree before it and at its peak while it ran
    (sampled every 20 ms from another thread)."""
    before = peak = tree_rss(pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return result, before, peak


def idle_memory(port: int, pid: int, count: int) -> dict[str, float]:
    """KiB of server memory per idle WebSocket: `count` clients upgraded, welcomed, silent."""
    time.sleep(1)
    before = tree_rss(pid)
    sockets = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(UPGRADE)
            received = b""
            while b"welcome" not in received:  # the 101, then the welcome frame
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("the server closed an idle connection")
                received += chunk
            sockets.append(s)
        time.sleep(2)
        after = tree_rss(pid)
    finally:
        for s in sockets:
            s.close()
    return {"idle_kib_per_conn": (after - before) / 1024 / count}


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants (a worker group's supervisor and workers)."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return total


@dataclass
class Running:
    """Our mailbox process on a durable PostgreSQL of its own, for a bench."""

    port: int
    proc: subprocess.Popen[bytes]
    cluster: TestCluster


@contextmanager
def running_mailbox(log: Path, **variables: str) -> Iterator[Running]:
    """`wormhole-mailbox` (its own defaults but for `variables`, and listening on loopback)
    on a fresh durable cluster, until the block ends; `log` takes its output."""
    cluster = TestCluster(durable=True)
    cluster.start()
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAILBOX_")}
    env.update({"MAILBOX_DATABASE_URL": cluster.url, "MAILBOX_HOST": "127.0.0.1",
                "MAILBOX_PORT": str(port), "MAILBOX_METRICS_PORT": "0", **variables})
    try:
        with log.open("wb") as out:
            server = subprocess.Popen([str(Path(sys.executable).parent / "wormhole-mailbox")],
                                      env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc=server)
            time.sleep(1)  # every worker up before the clock starts
            yield Running(port, server, cluster)
        finally:
            if server.poll() is None:
                server.terminate()
                server.wait(30)
    finally:
        cluster.stop()


def bench_ours(pairs: int, seconds: float, state: Path, workers: int | None = 1,
               idle: int = 0) -> dict[str, float]:
    """One `wormhole-mailbox` with `MAILBOX_WORKERS=workers` (None: its default) on a durable
    database, with the server's default log level."""
    variables = dict(ONE_ADDRESS) | ({} if workers is None else {"MAILBOX_WORKERS": str(workers)})
    with running_mailbox(state / f"ours-{workers or 'default'}.log", **variables) as ours:
        postmaster = int((ours.cluster.data / "postmaster.pid").read_text().split()[0])
        pid = ours.proc.pid
        memory = idle_memory(ours.port, pid, idle) if idle else {}  # on a fresh server
        cpu0, pg0 = tree_cpu(pid), postgres_cpu(postmaster)
        result = run_load([ours.port], pairs, seconds)
        result["server_cpu_s"] = tree_cpu(pid) - cpu0
        result["db_cpu_s"] = postgres_cpu(postmaster) - pg0
        return {**result, **memory}


def bench_reference(pairs: int, seconds: float, state: Path, idle: int = 0) -> dict[str, float]:
    twist = ensure_reference()
    port = free_port()
    with (state / "reference.log").open("w") as log:
        server = subprocess.Popen(
            [str(twist), "wormhole-mailbox", f"--port=tcp:{port}:interface=127.0.0.1",
             f"--channel-db={state / 'relay.sqlite'}", f"--usage-db={state / 'usage.sqlite'}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=state,
        )
    try:
        wait_for_port(port, proc=server)
        memory = idle_memory(port, server.pid, idle) if idle else {}  # on a fresh server
        cpu0 = cpu_seconds(server.pid)
        result = run_load([port], pairs, seconds)
        result["server_cpu_s"] = cpu_seconds(server.pid) - cpu0
        result["db_cpu_s"] = 0.0  # SQLite runs inside the server process
        result.update(memory)
    finally:
        server.terminate()
        server.wait(10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--workers", nargs="*", default=["1", "default"], metavar="N",
                        help="run ours with each of these MAILBOX_WORKERS values ('default':"
                             " unset)")
    parser.add_argument("--idle", type=int, default=0, metavar="N",
                        help="then hold N idle WebSockets and report memory per connection")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="alternate the servers N times and pool what they measured: the"
                             " machine's speed drifts, and a drift then weighs on all alike")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="mailbox-bench-") as tmp:
        state = Path(tmp)
        os.chmod(state, 0o777)
        for round_ in range(args.rounds):
            idle = args.idle if round_ == 0 else 0
            for n in args.workers:
                runs.setdefault(f"ours w{n}", []).append(bench_ours(
                    args.pairs, args.seconds, state, idle=idle,
                    workers=None if n == "default" else int(n)))
                time.sleep(1)
            if not args.skip_reference:
                time.sleep(1)
                runs.setdefault("reference", []).append(
                    bench_reference(args.pairs, args.seconds, state, idle=idle))
    rows = {name: pooled(results) for name, results in runs.items()}
    print(f"{args.pairs} concurrent pairs, {args.rounds} x {args.seconds:g} s each")
    header = ("server", "pairs/s", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms",
              "server CPU s", "DB CPU s", "CPU ms/pair", "load generator CPU s")
    print(" | ".join(header))
    for name, r in rows.items():
        print(" | ".join([name, f"{r['pairs_per_s']:.1f}", f"{r['errors']:.0f}",
                          f"{r['p50_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['p99_ms']:.1f}",
                          f"{r['max_ms']:.1f}", f"{r['server_cpu_s']:.1f}",
                          f"{r['db_cpu_s']:.1f}", f"{cpu_per_pair(r):.2f}",
                          f"{r['load_cpu_s']:.1f}"]))
    print(f"(the machine has {os.cpu_count()} CPUs: {os.cpu_count() or 1:g} CPU s per second)")
    if "reference" in rows:
        ref = rows["reference"]
        for name, r in rows.items():
            if name != "reference":
                print(f"{name} / reference: pairs/s {r['pairs_per_s'] / ref['pairs_per_s']:.2f}x,"
                      f" p99 {r['p99_ms'] / ref['p99_ms']:.3f}x,"
                      f" CPU/pair {cpu_per_pair(r) / cpu_per_pair(ref):.3f}x")
    print("where the latency goes, p50 / p99 ms (from each message's server_rx and server_tx):")
    for name, r in rows.items():
        print(f"  {name}: to the server {r['to_server_p50_ms']:.1f} /"
              f" {r['to_server_p99_ms']:.1f}, in the server {r['in_server_p50_ms']:.1f} /"
              f" {r['in_server_p99_ms']:.1f}, to the client {r['to_client_p50_ms']:.1f} /"
              f" {r['to_client_p99_ms']:.1f}")
    for name, r in rows.items():
        if "idle_kib_per_conn" in r:
            print(f"{name}: {r['idle_kib_per_conn']:.1f} KiB per idle WebSocket ({args.idle})")
    if "ours w1" in rows:
        one = rows["ours w1"]["pairs_per_s"]
        for name, r in rows.items():
            if name.startswith("ours w") and name != "ours w1":
                print(f"{name} / ours w1: pairs/s {r['pairs_per_s'] / one:.2f}x")


def pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one server as one: sums, and percentiles of all their latencies."""
    row: dict[str, Any] = dict(results[0])
    for key in ("cycles", "errors", "seconds", "server_cpu_s", "db_cpu_s", "load_cpu_s"):
        row[key] = sum(r[key] for r in results)
    row["pairs_per_s"] = row["cycles"] / row["seconds"]
    row.update(percentiles([x for r in results for x in r["latencies"]]))
    for part in results[0]["parts"]:
        row.update({f"{part}_{key}": value for key, value in percentiles(
            [x for r in results for x in r["parts"][part]]).items()})
    return row


def cpu_per_pair(r: dict[str, float]) -> float:
    """Milliseconds of server plus database CPU per completed pair."""
    return 1000 * (r["server_cpu_s"] + r["db_cpu_s"]) / max(r["cycles"], 1)


if __name__ == "__main__":
    main()
