"""A real Prometheus scrapes both services while clients work; every dashboard query answers.

Both services run as their console scripts with metrics ports on 127.0.0.1; Prometheus (the
Debian package's binary) runs on loopback with a generated config scraping every second and
loading the repository's alert rules.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

from tests.deploy.dashboard import PROMETHEUS, metric_names, queries
from tests.support.mailbox import Client
from tests.support.metrics import scrape
from tests.support.postgres import free_port
from tests.support.processes import ServiceProcess, mailbox_process, wait_for_port
from tests.support.transit import line, receive_all, receive_exactly, side, token

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus (Debian package) is not installed")

DEADLINE = 40


class Prometheus:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.port, self.proc, self.log = port, proc, log

    def query(self, expr: str) -> list[dict[str, object]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def get(self, path: str) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            data: dict[str, object] = json.load(r)
        return data


def wait_until_ready(port: int) -> None:
    """The API answers 503 until the TSDB is open: wait for `/-/ready`."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5):
                return
        except urllib.error.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start_prometheus(tmp_path: Path, mailbox_port: int, transit_port: int) -> Iterator[Prometheus]:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms}}
rule_files: ["{PROMETHEUS / 'alerts.yml'}"]
scrape_configs:
  - job_name: mailbox
    static_configs: [{{targets: ["127.0.0.1:{mailbox_port}"]}}]
  - job_name: transit
    static_configs: [{{targets: ["127.0.0.1:{transit_port}"]}}]
""")
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc=proc)
        wait_until_ready(port)
        yield Prometheus(port, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def mailbox_work(port: int) -> None:
    """A whole exchange between two clients, and one bad frame."""
    url = f"ws://127.0.0.1:{port}/v1"
    async with open_websocket_url(url) as wa, open_websocket_url(url) as wb:
        a, b = Client(wa), Client(wb)
        await a.recv_type("welcome")
        await b.recv_type("welcome")
        await a.send_raw("{not json")
        await a.recv_type("error")
        await a.bind("aaaa")
        name = (await a.command(type="allocate"))["nameplate"]
        mailbox = (await a.command(type="claim", nameplate=name))["mailbox"]
        await a.ack_only(type="open", mailbox=mailbox)
        await b.bind("bbbb")
        await b.command(type="claim", nameplate=name)
        await b.ack_only(type="open", mailbox=mailbox)
        await a.command(type="add", phase="pake", body="aa")
        await b.recv_type("message")
        for c in (a, b):
            await c.command(type="release")
            await c.command(type="close", mood="happy")


async def transit_work(port: int) -> None:
    """A pair relaying 1000 bytes, a bad handshake, and a connection refused by the limit."""
    tok = token()
    first = await trio.open_tcp_stream("127.0.0.1", port)
    await first.send_all(line(tok, side()))
    await trio.sleep(0.2)
    second = await trio.open_tcp_stream("127.0.0.1", port)
    await second.send_all(line(tok, side()))
    assert await receive_exactly(first, 3) == b"ok\n"
    assert await receive_exactly(second, 3) == b"ok\n"
    await first.send_all(b"y" * 1000)
    assert await receive_exactly(second, 1000) == b"y" * 1000
    refused = await trio.open_tcp_stream("127.0.0.1", port)  # third from 127.0.0.1: limit 2
    assert await receive_all(refused) == b""
    await refused.aclose()
    await first.aclose()
    await second.aclose()
    await trio.sleep(0.3)
    bad = await trio.open_tcp_stream("127.0.0.1", port)
    await bad.send_all(b"please relay nonsense\n")
    assert b"bad handshake" in await receive_all(bad)
    await bad.aclose()


def _has_data(result: list[dict[str, object]]) -> bool:
    for series in result:
        value = series.get("value")
        if isinstance(value, list) and not math.isnan(float(value[1])):
            return True
    return False


async def test_prometheus_scrapes_both_services_and_every_dashboard_query_has_data(
    database_url: str, tmp_path: Path,
) -> None:
    mailbox_metrics, transit_metrics, transit_port = free_port(), free_port(), free_port()
    transit = ServiceProcess(
        "wormhole-transit",
        {"TRANSIT_DATABASE_URL": database_url, "TRANSIT_HOST": "127.0.0.1",
         "TRANSIT_PORT": str(transit_port), "TRANSIT_METRICS_HOST": "127.0.0.1",
         "TRANSIT_METRICS_PORT": str(transit_metrics), "TRANSIT_MAX_CONNECTIONS_PER_IP": "2",
         "TRANSIT_SHUTDOWN_GRACE_SECONDS": "1"},
        transit_port, tmp_path / "transit.log")
    with mailbox_process(database_url, tmp_path, MAILBOX_METRICS_HOST="127.0.0.1",
                         MAILBOX_METRICS_PORT=str(mailbox_metrics)) as mailbox:
        transit.start()
        try:
            wait_for_port(mailbox_metrics)
            wait_for_port(transit_metrics)
            prometheus_gen = start_prometheus(tmp_path, mailbox_metrics, transit_metrics)
            prometheus = next(prometheus_gen)
            try:
                with trio.fail_after(DEADLINE):
                    await _wait_for_first_scrapes(prometheus)  # rates need a sample before
                    await mailbox_work(mailbox.port)
                    await transit_work(transit_port)
                    exported = set()
                    for port in (mailbox_metrics, transit_metrics):
                        exported |= {name for name, _ in (await scrape(port)).samples}
                    missing = await _wait_for_every_query(prometheus)
                assert not missing, f"dashboard queries without data: {missing}"
                for title, expr in queries():
                    unknown = metric_names(expr) - exported - {"up"}
                    assert not unknown, f"{title!r} uses metrics nobody exports: {unknown}"
                rules = prometheus.get("/api/v1/rules")
                groups = rules["data"]["groups"]  # type: ignore[index]
                assert len(groups[0]["rules"]) == 6
            finally:
                prometheus_gen.close()
        finally:
            assert transit.stop() == 0


async def _wait_for_first_scrapes(prometheus: Prometheus) -> None:
    while True:
        up = await trio.to_thread.run_sync(prometheus.query, "up == 1")
        if len(up) == 2:
            await trio.sleep(1.2)
            return
        await trio.sleep(0.2)


async def _wait_for_every_query(prometheus: Prometheus) -> list[tuple[str, str]]:
    pending = queries()
    while True:
        still = []
        for title, expr in pending:
            result = await trio.to_thread.run_sync(prometheus.query, expr)
            if not _has_data(result):
                still.append((title, expr))
        if not still:
            return []
        pending = still
        await trio.sleep(1)
        if trio.current_effective_deadline() - trio.current_time() < 2:
            return still
