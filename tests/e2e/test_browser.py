"""Web clients: headless Chromium runs a page whose script speaks to our services, over ws and
over wss through Caddy with the project's Caddyfile (Caddy's internal certificate authority,
which the browser is made to trust).

The page (tests/e2e/browser) does a full mailbox exchange between two WebSockets, and relay
pairings moving 1 MiB each way between two browser WebSockets and between a browser WebSocket
and a TCP client.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from wormhole_mailbox.server import MailboxServer
from wormhole_transit.server import TransitServer

from tests.support import browser
from tests.support.browser import Page, headless_chromium, required
from tests.support.mailbox import running_mailbox
from tests.support.postgres import free_ports
from tests.support.processes import wait_for_port
from tests.support.transit import (
    connect,
    line,
    receive_exactly,
    running_transit,
    usage_rows,
    wait_for,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PAGE = Path(__file__).resolve().parent / "browser"
SIZE = 1 << 20
LIMIT = 60


@dataclass
class Urls:
    """What a web client is given: the page, the mailbox and the relay's WebSocket side."""

    page: str
    mailbox: str
    relay: str


def pattern(seed: int, length: int) -> bytes:
    """The page's `pattern`: the same bytes from the same seed."""
    out = bytearray(length)
    x = seed
    for i in range(length):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out[i] = x >> 24
    return bytes(out)


@asynccontextmanager
async def services(database_url: str) -> AsyncIterator[tuple[MailboxServer, TransitServer]]:
    async with (running_mailbox(database_url) as mailbox,
                running_transit(database_url, websocket_port=0) as relay):
        yield mailbox, relay


def plain(mailbox: MailboxServer, relay: TransitServer) -> Urls:
    return Urls((PAGE / "index.html").as_uri(), f"ws://127.0.0.1:{mailbox.port}/v1",
                f"ws://127.0.0.1:{relay.websocket_port}/")


CADDY_GLOBALS = """{{
	admin off
	http_port {http_port}
	auto_https disable_redirects
	skip_install_trust
	storage file_system {storage}
}}
import {caddyfile}
# the web client's page, on an https origin of its own
https://localhost:{page_port} {{
	root * {page}
	file_server
}}
"""


@pytest.fixture
def chromium() -> str:
    return browser.chromium()


@pytest.fixture
def caddy_binary() -> str:
    browser.certutil()  # to trust Caddy's CA
    return required("caddy", shutil.which("caddy"))


@contextmanager
def caddy(binary: str, scratch: Path, mailbox: MailboxServer,
          relay: TransitServer) -> Iterator[tuple[Urls, Path]]:
    """The project's Caddyfile in front of both services, as the tls profile runs it but for
    DOMAIN=localhost:PORT (Caddy's internal CA issues its certificate); the URLs and the CA's
    root certificate."""
    port, page_port, http_port = free_ports(3)
    storage = scratch / "caddy"
    config = scratch / "Caddyfile"
    config.write_text(CADDY_GLOBALS.format(
        http_port=http_port, storage=storage, caddyfile=ROOT / "Caddyfile", page=PAGE,
        page_port=page_port))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "XDG_DATA_HOME": str(scratch),
           "XDG_CONFIG_HOME": str(scratch), "DOMAIN": f"localhost:{port}",
           "UPSTREAM_MAILBOX": f"127.0.0.1:{mailbox.port}",
           "UPSTREAM_RELAY_WEBSOCKET": f"127.0.0.1:{relay.websocket_port}"}
    with (scratch / "caddy.log").open("wb") as log:
        process = subprocess.Popen([binary, "run", "--config", str(config), "--adapter",
                                    "caddyfile"], env=env, stdout=log, stderr=log)
    try:
        root = storage / "pki" / "authorities" / "local" / "root.crt"
        for site in (port, page_port):
            wait_for_port(site, proc=process)
            wait_for_certificate(site, root)
        yield (Urls(f"https://localhost:{page_port}/index.html",
                    f"wss://localhost:{port}/v1", f"wss://localhost:{port}/transit"), root)
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_for_certificate(port: int, root: Path, timeout: float = 20) -> None:
    """Until localhost:`port` completes a TLS handshake that `root` verifies (Caddy listens
    before its internal CA has issued the certificate)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            context = ssl.create_default_context(cafile=root)
            with (socket.create_connection(("localhost", port), timeout=2) as raw,
                  context.wrap_socket(raw, server_hostname="localhost")):
                return
        except (OSError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@asynccontextmanager
async def page_for(binary: str, urls: Urls, scratch: Path,
                   authority: Path | None) -> AsyncIterator[Page]:
    """A tab showing the web client's page."""
    async with headless_chromium(binary, scratch / "chromium", authority=authority) as tabs:
        yield await tabs.open(urls.page, "relaySide")


def check_exchange(seen: dict[str, Any]) -> None:
    assert seen["welcome"]["your-address"].keys() & {"ipv4", "ipv6"}
    assert seen["nameplate"].isdigit() and seen["claimed"] == seen["mailbox"]
    assert seen["bGot"] == ["aaaa", "pake", "aa01"]
    assert seen["aGot"] == ["bbbb", "pake", "bb02"]
    assert seen["closed"] == ["closed", "closed"]


async def check_relay_usage(relay: TransitServer, database_url: str) -> None:
    """Two happy pairs recorded, each with 1 MiB each way."""
    await wait_for(lambda: relay.stats.moods["happy"] >= 2)
    rows = await usage_rows(relay, database_url)
    assert [(row[4], row[3]) for row in rows] == [("happy", 2 * SIZE)] * 2


async def browser_and_tcp(page: Page, relay: TransitServer, url: str) -> None:
    """The browser sends pattern 3 and expects 4; the TCP client the other way round."""
    token = secrets.token_hex(32)
    tcp = await connect(relay)
    await tcp.send_all(line(token.encode(), b"cccccccccccccccc"))
    await wait_for(lambda: relay.stats.waiting_sides == 1)
    seen: dict[str, Any] = {}

    async def browser_side() -> None:
        seen.update(await page.call("relaySide", url, token, "dddddddddddddddd", 3, 4, SIZE))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(browser_side)
        assert await receive_exactly(tcp, 3) == b"ok\n"
        await tcp.send_all(pattern(4, SIZE))
        assert await receive_exactly(tcp, SIZE) == pattern(3, SIZE)
    assert seen["received"] == SIZE
    await tcp.aclose()


async def run_all(page: Page, relay: TransitServer, urls: Urls, database_url: str) -> None:
    check_exchange(await page.call("mailboxExchange", urls.mailbox))
    token = secrets.token_hex(32)
    sides = await page.call("relayPair", urls.relay, urls.relay, token, SIZE)
    assert [side["received"] for side in sides] == [SIZE, SIZE]
    await browser_and_tcp(page, relay, urls.relay)
    await check_relay_usage(relay, database_url)


async def test_browser_over_ws(chromium: str, database_url: str, tmp_path: Path) -> None:
    async with services(database_url) as (mailbox, relay):
        urls = plain(mailbox, relay)
        with trio.fail_after(LIMIT):
            async with page_for(chromium, urls, tmp_path, None) as page:
                await run_all(page, relay, urls, database_url)


async def test_browser_over_wss_through_caddy(
    chromium: str, caddy_binary: str, database_url: str, tmp_path: Path,
) -> None:
    async with services(database_url) as (mailbox, relay):
        with caddy(caddy_binary, tmp_path, mailbox, relay) as (urls, authority):
            with trio.fail_after(LIMIT):
                async with page_for(chromium, urls, tmp_path, authority) as page:
                    assert await page.evaluate("window.isSecureContext") is True
                    await run_all(page, relay, urls, database_url)
