"""Command lines of the real wormhole clients, pointed only at our servers on loopback."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg

PYTHON_WORMHOLE = str(Path(sys.executable).parent / "wormhole")
GO_WORMHOLE = shutil.which("wormhole-william")

# Only the relay path exists: no listening sockets, no direct hints to other addresses.
UNUSED_TRANSIT = "tcp:127.0.0.1:9"


def python_send(relay_url: str, code: str, *, text: str | None = None, path: str | None = None,
                transit: str = UNUSED_TRANSIT) -> list[str]:
    what = ["--text", text] if text is not None else [str(path)]
    return [PYTHON_WORMHOLE, "--relay-url", relay_url, "--transit-helper", transit, "send",
            "--no-listen", "--hide-progress", "--code", code, *what]


def python_receive(relay_url: str, code: str, *, transit: str = UNUSED_TRANSIT,
                   output: str | None = None) -> list[str]:
    extra = ["--accept-file", "--output-file", output] if output else []
    return [PYTHON_WORMHOLE, "--relay-url", relay_url, "--transit-helper", transit, "receive",
            "--no-listen", "--hide-progress", *extra, code]


def go_send(relay_url: str, code: str, text: str) -> list[str]:
    assert GO_WORMHOLE is not None
    return [GO_WORMHOLE, "send", "--relay-url", relay_url, "--code", code, "--text", text,
            "--hide-progress"]


def go_receive(relay_url: str, code: str) -> list[str]:
    assert GO_WORMHOLE is not None
    return [GO_WORMHOLE, "receive", "--relay-url", relay_url, "--hide-progress", code]


def transfer(
    sender: list[str], receiver: list[str], *, cwd: Path | None = None, timeout: float = 120
) -> tuple[str, str]:
    """Run both sides at once, both must succeed; returns (sender output, receiver stdout).

    The receiver's stdin says "y", for a client that asks before accepting a file.
    """
    send = subprocess.Popen(sender, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        received = subprocess.run(receiver, capture_output=True, timeout=timeout, check=False,
                                  cwd=cwd, input=b"y\n")
        send_out, _ = send.communicate(timeout=timeout)
    finally:
        if send.poll() is None:
            send.kill()
    assert received.returncode == 0, received.stdout + received.stderr
    assert send.returncode == 0, send_out
    return send_out.decode(errors="replace"), received.stdout.decode(errors="replace")


def wait_for_stored_message(database_url: str, timeout: float = 30) -> None:
    """Until a sender has stored its first message in the mailbox's database."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM messages").fetchone()
        if row and row[0] > 0:
            return
        time.sleep(0.1)
    raise TimeoutError("the sender never stored its first message")


def relayed_bytes(database_url: str, timeout: float = 15) -> list[tuple[str, int]]:
    """(result, bytes) of the relay's happy usage rows, once there are any."""
    deadline = time.monotonic() + timeout
    rows: list[tuple[str, int]] = []
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            rows = [(r[0], r[1]) for r in conn.execute(
                "SELECT result, total_bytes FROM transit_usage WHERE result = 'happy'")]
        if rows:
            return rows
        time.sleep(0.2)
    return rows
