"""Headless Chromium driven over the DevTools protocol, without npm: a tab opens a page, and
`Page.call` runs one of its async functions and returns what it resolved with.
Call `chromium()` (and `certutil()`) before starting anything: they skip or fail the test.

Chromium is Debian's `chromium` (.ci/run unpacks it into .ci/tools), Google Chrome where a
machine has that instead, or `WORMHOLE_TEST_CHROMIUM`. A test that needs it is skipped when
none is found, unless `WORMHOLE_TEST_REQUIRE_BROWSER` is set (as .ci/run does): then it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection

from tests.support.websocket import open_websocket

BROWSERS = ("chromium", "google-chrome", "google-chrome-stable")
# Headless, as root (no sandbox), and quiet: without the background-networking flags Chromium
# reaches out to Google's hosts at start, which a closed network refuses.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--disable-dev-shm-usage", "--remote-debugging-port=0")
START_SECONDS = 30


def required(tool: str, found: str | None) -> str:
    """`found`, or skip (fail with WORMHOLE_TEST_REQUIRE_BROWSER) saying what is missing."""
    if found:
        return found
    reason = f"{tool} not found (.ci/run unpacks Debian's into .ci/tools)"
    if os.environ.get("WORMHOLE_TEST_REQUIRE_BROWSER"):
        pytest.fail(f"{reason}, and WORMHOLE_TEST_REQUIRE_BROWSER is set")
    pytest.skip(reason)


def chromium() -> str:
    given = os.environ.get("WORMHOLE_TEST_CHROMIUM")
    found = given or next(filter(None, map(shutil.which, BROWSERS)), None)
    return required("chromium", found)


def certutil() -> str:
    return required("certutil", shutil.which("certutil"))


def trust_authority(home: Path, certificate: Path) -> None:
    """Chromium on Linux trusts the roots in `$HOME/.pki/nssdb`: add `certificate` there
    (NSS's `certutil`, Debian's `libnss3-tools`), as a user importing their CA would."""
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True)
    for args in (["-N", "--empty-password"],
                 ["-A", "-n", "wormhole-stack test CA", "-t", "C,,", "-i", str(certificate)]):
        subprocess.run([certutil(), "-d", f"sql:{database}", *args], check=True, timeout=30,
                       capture_output=True)


class DevToolsError(AssertionError):
    pass


class Page:
    """One tab, attached over the browser's DevTools connection."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def evaluate(self, expression: str) -> Any:
        """The expression's value (a promise's, once it settles); its exception raises."""
        result = await self.browser.command(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                 "returnByValue": True}, session=self.session)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise DevToolsError(details.get("exception", {}).get("description")
                                or details.get("text"))
        return result["result"].get("value")

    async def call(self, function: str, *args: object) -> Any:
        """`function(...args)` of the page's script, awaited."""
        return await self.evaluate(f"{function}(...{json.dumps(args)})")

    async def ready(self, function: str) -> None:
        """Until the page has loaded and defines `function` (navigation replaces the first
        document: evaluating in it may fail, so keep asking)."""
        while True:
            try:
                if await self.evaluate(f"typeof {function}") == "function":
                    return
            except DevToolsError:
                pass
            await trio.sleep(0.05)


class Browser:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.ids = 0

    async def command(self, method: str, params: dict[str, Any] | None = None, *,
                      session: str | None = None) -> dict[str, Any]:
        """One command and its answer; events arriving meanwhile are not needed here."""
        self.ids += 1
        message: dict[str, Any] = {"id": self.ids, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self.ws.send_message(json.dumps(message))
        while True:
            answer = json.loads(await self.ws.get_message())
            if answer.get("id") == self.ids:
                break
        if "error" in answer:
            raise DevToolsError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer["result"]
        return result

    async def open(self, url: str, function: str) -> Page:
        """A new tab showing `url`, once its script defines `function`."""
        target = (await self.command("Target.createTarget", {"url": url}))["targetId"]
        attached = await self.command("Target.attachToTarget",
                                      {"targetId": target, "flatten": True})
        page = Page(self, attached["sessionId"])
        await page.ready(function)
        return page


async def _devtools_path(profile: Path, process: trio.Process) -> tuple[int, str]:
    """The browser's DevTools port and path, which it writes once listening."""
    active = profile / "DevToolsActivePort"
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} at start")
        lines = active.read_text().split() if active.exists() else []
        if len(lines) == 2:
            return int(lines[0]), lines[1]
        await trio.sleep(0.05)


@asynccontextmanager
async def headless_chromium(binary: str, scratch: Path, *,
                            authority: Path | None = None) -> AsyncIterator[Browser]:
    """Chromium (`binary`) with a profile and a HOME of its own in `scratch`, trusting
    `authority` (a CA certificate) if given; its output goes to `scratch/chromium.log`."""
    home, profile = scratch / "home", scratch / "profile"
    home.mkdir(parents=True)
    if authority is not None:
        trust_authority(home, authority)
    with (scratch / "chromium.log").open("wb") as log:
        process = await trio.lowlevel.open_process(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            env={**os.environ, "HOME": str(home)}, stdin=subprocess.DEVNULL, stdout=log,
            stderr=log)
    try:
        with trio.fail_after(START_SECONDS):
            port, path = await _devtools_path(profile, process)
        async with open_websocket(port, path, max_message_size=16 << 20) as ws:
            browser = Browser(ws)
            yield browser
            with trio.move_on_after(5):
                await browser.command("Browser.close")
        with trio.move_on_after(10):
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
