"""Read our services' metrics endpoints: raw HTTP over trio, samples by name and labels."""

from __future__ import annotations

import shutil
import subprocess

import trio
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = 10


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """(status, body) of `GET path` on 127.0.0.1:port."""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


class Page:
    """One scrape of `/metrics`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in self.families.values():
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """A sample's value; 0 when absent (a counter not yet incremented has no child)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(port: int) -> Page:
    status, body = await http_get(port, "/metrics")
    assert status == 200, body
    return Page(body.decode())


def promtool() -> str | None:
    return shutil.which("promtool")


def check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    tool = promtool()
    assert tool is not None
    return subprocess.run([tool, "check", "metrics"], input=text, capture_output=True,
                          text=True, check=False, timeout=30)
