"""Transit relay benchmark: ours vs the reference relay vs a kernel splice forwarder.

One run measures every server on the same machine with the same client:
  (i)   one pair, SIZE bytes one way in 256 KiB writes;
  (ii)  N concurrent pairs x M bytes one way each;
  (i) and (ii) also run "direct": the same sender and receiver on one loopback connection
        with no relay in between, the ceiling a relay is measured against;
  (iii) P pairs, K in flight, each handshake + ok + 1 byte + close, usage recording on
        (ours with PostgreSQL, the reference with --usage-db);
and the RSS of ours (and the reference) holding many idle lonely connections.
Server CPU is utime+stime from /proc/PID/stat between the start and the end of a workload.

    .venv/bin/python bench/transit_bench.py              # full run
    .venv/bin/python bench/transit_bench.py --quick      # small sizes, a few seconds
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.postgres import TestCluster  # noqa: E402 - needs the repository on the path

OURS = ROOT / ".venv" / "bin" / "wormhole-transit"
TWIST = ROOT / "bench" / ".ref-venv-transit" / "bin" / "twist"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DIRECT = -1  # the "port" of the direct lane: no relay, no server process
MiB = 1 << 20


# -- helpers -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    if pid == DIRECT:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def rss_kib(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1])
    raise RuntimeError("no VmRSS")


def handshake() -> tuple[bytes, bytes]:
    tok = secrets.token_hex(32).encode()
    return (b"please relay " + tok + b" for side " + secrets.token_hex(8).encode() + b"\n",
            b"please relay " + tok + b" for side " + secrets.token_hex(8).encode() + b"\n")


def recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"EOF after {data!r}")
        data += chunk
    return data


def open_direct_pair() -> tuple[socket.socket, socket.socket]:
    """One loopback connection without a relay: the sender's end and the receiver's end."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    return a, b


def open_pair(port: int) -> tuple[socket.socket, socket.socket]:
    if port == DIRECT:
        return open_direct_pair()
    first, second = handshake()
    a = socket.create_connection(("127.0.0.1", port))
    a.sendall(first)
    b = socket.create_connection(("127.0.0.1", port))
    b.sendall(second)
    assert recv_exactly(a, 3) == b"ok\n" and recv_exactly(b, 3) == b"ok\n"
    return a, b


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening")


@contextlib.contextmanager
def server(cmd: list[str], port: int, env: dict[str, str] | None = None,
           ) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        time.sleep(0.3)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ours_cmd(port: int, database_url: str | None = None) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSIT_")}
    env.update(TRANSIT_HOST="127.0.0.1", TRANSIT_PORT=str(port), TRANSIT_METRICS_PORT="0",
               TRANSIT_LOG_LEVEL="WARNING",
               TRANSIT_MAX_CONNECTIONS="100000", TRANSIT_MAX_CONNECTIONS_PER_IP="100000",
               TRANSIT_USAGE_LOG="false", TRANSIT_SHUTDOWN_GRACE_SECONDS="1")
    if database_url:
        env["TRANSIT_DATABASE_URL"] = database_url
    return [str(OURS)], env


def reference_cmd(port: int, usage_db: str | None = None) -> list[str]:
    cmd = [str(TWIST), "transitrelay", f"--port=tcp:{port}:interface=127.0.0.1"]
    if usage_db:
        cmd.append(f"--usage-db={usage_db}")
    return cmd


def splice_cmd(port: int) -> list[str]:
    return [sys.executable, __file__, "--serve-splice", str(port)]


# -- workloads ---------------------------------------------------------------------------------

def stream_one_way(a: socket.socket, b: socket.socket, size: int) -> float:
    """Seconds to move `size` bytes a -> b (a closes after writing)."""
    chunk = b"\x5a" * (256 * 1024)
    done = threading.Event()
    start = time.perf_counter()
    end = [0.0]

    def send() -> None:
        left = size
        view = memoryview(chunk)
        while left:
            n = min(left, len(chunk))
            a.sendall(view[:n])
            left -= n
        a.close()

    def receive() -> None:
        buf = bytearray(MiB)
        got = 0
        while got < size:
            n = b.recv_into(buf)
            if not n:
                raise ConnectionError(f"EOF after {got} bytes")
            got += n
        end[0] = time.perf_counter()
        b.close()
        done.set()

    threads = [threading.Thread(target=send), threading.Thread(target=receive)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return end[0] - start


def workload_i(port: int, pid: int, size: int) -> dict[str, float]:
    a, b = open_pair(port)
    cpu0 = cpu_seconds(pid)
    seconds = stream_one_way(a, b, size)
    cpu = cpu_seconds(pid) - cpu0
    return {"MBps": size / 1e6 / seconds, "cpu_s": cpu, "cpu_per_GB": cpu / (size / 1e9)}


def workload_ii(port: int, pid: int, pairs: int, size: int) -> dict[str, float]:
    opened = [open_pair(port) for _ in range(pairs)]
    times: list[float] = [0.0] * pairs
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()

    def run(i: int) -> None:
        times[i] = stream_one_way(*opened[i], size)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(pairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu0
    total = pairs * size
    return {"MBps": total / 1e6 / elapsed,
            "per_pair_MBps": statistics.median(size / 1e6 / t for t in times),
            "cpu_per_GB": cpu / (total / 1e9)}


def one_setup(port: int) -> float:
    start = time.perf_counter()
    first, second = handshake()
    a = socket.create_connection(("127.0.0.1", port))
    b = socket.create_connection(("127.0.0.1", port))
    try:
        a.sendall(first)
        b.sendall(second)
        assert recv_exactly(a, 3) == b"ok\n" and recv_exactly(b, 3) == b"ok\n"
        a.sendall(b"x")
        assert recv_exactly(b, 1) == b"x"
    finally:
        a.close()
        b.close()
    return time.perf_counter() - start


def workload_iii(port: int, pid: int, pairs: int, in_flight: int,
                 settled: Callable[[], None] | None = None) -> dict[str, float]:
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        latencies = sorted(pool.map(lambda _: one_setup(port), range(pairs)))
    if settled is not None:
        settled()  # until every usage row is committed
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu0
    return {"pairs_per_s": pairs / elapsed, "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
            "cpu_ms_per_pair": cpu / pairs * 1000}


def idle_rss(port: int, pid: int, count: int) -> dict[str, float]:
    before = rss_kib(pid)
    sockets = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(handshake()[0])
            sockets.append(s)
        time.sleep(1.0)
        after = rss_kib(pid)
    finally:
        for s in sockets:
            s.close()
    return {"rss_before_MiB": before / 1024, "rss_after_MiB": after / 1024,
            "KiB_per_conn": (after - before) / count}


# -- the splice ceiling --------------------------------------------------------------------------

def serve_splice(port: int) -> None:
    """A not-conformant forwarder: pair on the line, then splice(2) one thread per direction."""
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    waiting: dict[bytes, socket.socket] = {}
    lock = threading.Lock()

    def pump(src: socket.socket, dst: socket.socket) -> None:
        r, w = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, 1031, MiB)  # F_SETPIPE_SZ
        try:
            while True:
                n = os.splice(src.fileno(), w, MiB, flags=os.SPLICE_F_MOVE)
                if n == 0:
                    break
                while n:
                    n -= os.splice(r, dst.fileno(), n, flags=os.SPLICE_F_MOVE)
        except OSError:
            pass
        finally:
            os.close(r)
            os.close(w)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RD)

    def handle(conn: socket.socket) -> None:
        line = b""
        while not line.endswith(b"\n"):
            chunk = conn.recv(1)
            if not chunk:
                conn.close()
                return
            line += chunk
        token = line[13:77]
        with lock:
            partner = waiting.pop(token, None)
            if partner is None:
                waiting[token] = conn
                return
        conn.sendall(b"ok\n")
        partner.sendall(b"ok\n")
        t = threading.Thread(target=pump, args=(partner, conn), daemon=True)
        t.start()
        pump(conn, partner)
        t.join()
        conn.close()
        partner.close()

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


# -- main --------------------------------------------------------------------------------------

def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-splice", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--one-mib", type=int, default=1024, help="(i) MiB one way (1024)")
    parser.add_argument("--pairs", type=int, default=100, help="(ii) concurrent pairs (100)")
    parser.add_argument("--pair-mib", type=int, default=10, help="(ii) MiB per pair (10)")
    parser.add_argument("--setups", type=int, default=2000, help="(iii) pairs (2000)")
    parser.add_argument("--in-flight", type=int, default=50, help="(iii) concurrency (50)")
    parser.add_argument("--idle", type=int, default=10_000, help="idle lonely connections (10000)")
    parser.add_argument("--only", default="throughput,setup,idle",
                        help="comma-separated parts to run: throughput (i, ii), setup (iii),"
                        " idle (all by default)")
    parser.add_argument("--quick", action="store_true",
                        help="64 MiB, 20x2 MiB, 300 setups, 1000 idle")
    args = parser.parse_args()
    if args.serve_splice:
        serve_splice(args.serve_splice)
        return
    want = set(args.only.split(","))
    if args.quick:
        args.one_mib, args.pairs, args.pair_mib, args.setups, args.idle = 64, 20, 2, 300, 1000
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.idle + 1000:
        args.idle = max(0, hard - 1000)
    have_ref = TWIST.exists()
    if not have_ref:
        print(f"reference relay not installed at {TWIST}; skipping it", file=sys.stderr)

    cluster = TestCluster()
    cluster.start()
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        servers: list[tuple[str, Callable[[int], tuple[list[str], dict[str, str] | None]]]] = [
            ("ours", ours_cmd),
        ]
        if have_ref:
            servers.append(("reference", lambda p: (reference_cmd(p), None)))
        servers.append(("splice", lambda p: (splice_cmd(p), None)))
        if "throughput" in want:
            direct = results.setdefault("direct", {})
            direct["i"] = workload_i(DIRECT, DIRECT, args.one_mib * MiB)
            direct["ii"] = workload_ii(DIRECT, DIRECT, args.pairs, args.pair_mib * MiB)
        for name, make in servers:
            if name == "splice" and not want & {"throughput", "setup"}:
                continue
            port = free_port()
            cmd, env = make(port)
            with server(cmd, port, env) as proc:
                r = results.setdefault(name, {})
                if "throughput" in want:
                    r["i"] = workload_i(port, proc.pid, args.one_mib * MiB)
                    r["ii"] = workload_ii(port, proc.pid, args.pairs, args.pair_mib * MiB)
                if name == "splice":
                    if "setup" in want:
                        r["iii"] = workload_iii(port, proc.pid, args.setups, args.in_flight)
                elif args.idle and "idle" in want:
                    r["idle"] = idle_rss(port, proc.pid, args.idle)
        if "setup" in want:
            setup_with_usage(results, args, cluster.url, have_ref)
    finally:
        cluster.stop()
    report(results, args)


def setup_with_usage(results: dict[str, dict[str, dict[str, float]]],
                     args: argparse.Namespace, database_url: str, have_ref: bool) -> None:
    """(iii) with usage recording on: ours into PostgreSQL, the reference into SQLite."""
    port = free_port()
    cmd, env = ours_cmd(port, database_url)
    with server(cmd, port, env) as proc:
        def committed() -> None:
            with psycopg.connect(database_url, autocommit=True) as conn:
                while True:
                    row = conn.execute("SELECT count(*) FROM transit_usage"
                                       " WHERE result = 'happy'").fetchone()
                    if row and row[0] >= args.setups:
                        return
                    time.sleep(0.02)
        results["ours"]["iii"] = workload_iii(port, proc.pid, args.setups, args.in_flight,
                                              committed)
    if have_ref:
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            with server(reference_cmd(port, f"{tmp}/usage.sqlite"), port) as proc:
                results["reference"]["iii"] = workload_iii(port, proc.pid, args.setups,
                                                           args.in_flight)


def report(results: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace) -> None:
    names = [n for n in results if results[n]]
    o = results["ours"]
    if "i" in o:
        throughput_report(results, names, args)
    if "iii" in o:
        print(f"(iii) {args.setups} pairs, {args.in_flight} in flight, handshake+ok+1 byte+close"
              " (ours: PostgreSQL usage, rows committed; reference: --usage-db; splice: none)")
        for n in names:
            r = results[n].get("iii")
            if r:
                print(f"  {n:10} {r['pairs_per_s']:8.0f} pairs/s   p50 {r['p50_ms']:.1f} ms"
                      f"  p99 {r['p99_ms']:.1f} ms"
                      f"   server CPU {r['cpu_ms_per_pair']:.2f} ms/pair")
        ref = results.get("reference", {}).get("iii")
        if ref:
            print(f"  ours / reference: {o['iii']['pairs_per_s'] / ref['pairs_per_s']:.2f}x"
                  " pairs/s")
    if "idle" in o:
        print(f"idle: {args.idle} lonely connections (valid handshake, no partner)")
        for n in names:
            r = results[n].get("idle")
            if r:
                print(f"  {n:10} RSS {r['rss_before_MiB']:.1f} -> {r['rss_after_MiB']:.1f} MiB"
                      f" ({r['KiB_per_conn']:.1f} KiB per waiting connection)")


def throughput_report(results: dict[str, dict[str, dict[str, float]]], names: list[str],
                      args: argparse.Namespace) -> None:
    print(f"\n(i) one pair, {args.one_mib} MiB one way")
    for n in names:
        r = results[n]["i"]
        cpu = f"   server CPU {r['cpu_per_GB']:.2f} s/GB" if n != "direct" else ""
        print(f"  {n:10} {r['MBps']:8.0f} MB/s{cpu}")
    print(f"(ii) {args.pairs} pairs x {args.pair_mib} MiB concurrently")
    for n in names:
        r = results[n]["ii"]
        cpu = f"   server CPU {r['cpu_per_GB']:.2f} s/GB" if n != "direct" else ""
        print(f"  {n:10} {r['MBps']:8.0f} MB/s aggregate, per-pair median"
              f" {r['per_pair_MBps']:.1f} MB/s{cpu}")
    o, d = results["ours"], results["direct"]
    print(f"ours / direct (no relay): (i) {o['i']['MBps'] / d['i']['MBps']:.2f}x,"
          f" (ii) {o['ii']['MBps'] / d['ii']['MBps']:.2f}x")
    for name in ("reference", "splice"):
        other = results.get(name)
        if other and "i" in other:
            print(f"ours / {name}: (i) {o['i']['MBps'] / other['i']['MBps']:.2f}x MB/s,"
                  f" {o['i']['cpu_per_GB'] / other['i']['cpu_per_GB']:.2f}x CPU/GB;"
                  f" (ii) {o['ii']['MBps'] / other['ii']['MBps']:.2f}x MB/s")


if __name__ == "__main__":
    main()
