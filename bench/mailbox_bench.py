"""Mailbox throughput and latency: ours against the reference server, in one run.

Starts a durable PostgreSQL (fsync and synchronous commit on), our `wormhole-mailbox`, and the
reference `twist wormhole-mailbox` (magic-wormhole-mailbox-server from PyPI, in its own venv,
SQLite with the usage database on, as in the spec's Baseline), runs `mailbox_load.py` against
each and prints pairs/s, latency percentiles, CPU seconds and the ratios.

    python bench/mailbox_bench.py --pairs 50 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.postgres import TestCluster, free_port  # noqa: E402
from tests.support.processes import wait_for_port  # noqa: E402

REF_VENV = ROOT / "bench" / ".ref-venv-mailbox"
TICKS = os.sysconf("SC_CLK_TCK")


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
    urls = [f"ws://127.0.0.1:{port}/v1" for port in ports]
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mailbox_load.py"), *urls,
         "--pairs", str(pairs), "--seconds", str(seconds)],
        check=True, capture_output=True, text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def bench_ours(pairs: int, seconds: float, state: Path, processes: int = 1) -> dict[str, float]:
    """`processes` mailbox processes share one database; each pair's sides use two of them."""
    cluster = TestCluster(durable=True)
    cluster.start()
    servers: list[subprocess.Popen[bytes]] = []
    try:
        ports = [free_port() for _ in range(processes)]
        for port in ports:
            env = {**os.environ, "MAILBOX_DATABASE_URL": cluster.url,
                   "MAILBOX_HOST": "127.0.0.1", "MAILBOX_PORT": str(port),
                   "MAILBOX_LOG_LEVEL": "WARNING", "MAILBOX_METRICS_PORT": "0"}
            with (state / f"ours-{port}.log").open("w") as log:
                servers.append(subprocess.Popen(
                    [str(Path(sys.executable).parent / "wormhole-mailbox")],
                    env=env, stdout=log, stderr=subprocess.STDOUT))
            wait_for_port(port, proc=servers[-1])
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        cpu0 = sum(cpu_seconds(s.pid) for s in servers)
        pg0 = postgres_cpu(postmaster)
        result = run_load(ports, pairs, seconds)
        result["server_cpu_s"] = sum(cpu_seconds(s.pid) for s in servers) - cpu0
        result["db_cpu_s"] = postgres_cpu(postmaster) - pg0
        return result
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
        cluster.stop()


def bench_reference(pairs: int, seconds: float, state: Path) -> dict[str, float]:
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
        cpu0 = cpu_seconds(server.pid)
        result = run_load([port], pairs, seconds)
        result["server_cpu_s"] = cpu_seconds(server.pid) - cpu0
        result["db_cpu_s"] = 0.0  # SQLite runs inside the server process
    finally:
        server.terminate()
        server.wait(10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--processes", type=int, nargs="*", default=[1], metavar="N",
                        help="run ours with each of these numbers of processes (e.g. 1 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailbox-bench-") as tmp:
        state = Path(tmp)
        os.chmod(state, 0o777)
        rows = {}
        for n in args.processes:
            name = "ours" if n == 1 else f"ours x{n}"
            rows[name] = bench_ours(args.pairs, args.seconds, state, processes=n)
            time.sleep(1)
        if not args.skip_reference:
            time.sleep(1)
            rows["reference"] = bench_reference(args.pairs, args.seconds, state)
    header = ("server", "pairs/s", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms",
              "server CPU s", "DB CPU s")
    print(f"{args.pairs} concurrent pairs, {args.seconds:g} s each")
    print(" | ".join(header))
    for name, r in rows.items():
        print(" | ".join([name, f"{r['pairs_per_s']:.1f}", f"{r['errors']:.0f}",
                          f"{r['p50_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['p99_ms']:.1f}",
                          f"{r['max_ms']:.1f}", f"{r['server_cpu_s']:.1f}",
                          f"{r['db_cpu_s']:.1f}"]))
    if "reference" in rows:
        ref = rows["reference"]
        for name, r in rows.items():
            if name != "reference":
                print(f"{name} / reference: pairs/s {r['pairs_per_s'] / ref['pairs_per_s']:.2f}x,"
                      f" p99 {r['p99_ms'] / ref['p99_ms']:.3f}")
    if "ours" in rows:
        one = rows["ours"]["pairs_per_s"]
        for name, r in rows.items():
            if name.startswith("ours x"):
                print(f"{name} / ours (1 process): pairs/s {r['pairs_per_s'] / one:.2f}x")


if __name__ == "__main__":
    main()
