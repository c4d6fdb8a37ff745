"""Real clients (PyPI `magic-wormhole`, Debian `wormhole-william`) transfer text through our
mailbox server, run as its console script against the test PostgreSQL."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.support import clients
from tests.support.processes import ServiceProcess, mailbox_process

pytestmark = pytest.mark.e2e

TEXT = "the quick brown fox 🦊 jumps"
TIMEOUT = 60


def relay_url(service: ServiceProcess) -> str:
    return f"ws://127.0.0.1:{service.port}/v1"


def usage_results(database_url: str) -> tuple[list[str], list[str]]:
    with psycopg.connect(database_url) as conn:
        plates = [r[0] for r in conn.execute("SELECT result FROM usage_nameplates")]
        boxes = [r[0] for r in conn.execute("SELECT result FROM usage_mailboxes")]
    return plates, boxes


def closed_moods(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT mood FROM mailbox_sides WHERE NOT opened").fetchall()
    return [r[0] for r in rows]


needs_go = pytest.mark.skipif(clients.GO_WORMHOLE is None, reason="wormhole-william not installed")


@pytest.mark.parametrize(
    ("direction", "code"),
    [
        pytest.param("python-python", "3-guitarist-revenge", id="python-python"),
        pytest.param("go-go", "4-guitarist-revenge", id="go-go", marks=needs_go),
        pytest.param("python-go", "5-guitarist-revenge", id="python-go", marks=needs_go),
        pytest.param("go-python", "6-guitarist-revenge", id="go-python", marks=needs_go),
    ],
)
def test_text_transfer(direction: str, code: str, database_url: str, tmp_path: Path) -> None:
    with mailbox_process(database_url, tmp_path) as service:
        url = relay_url(service)
        sender_kind, receiver_kind = direction.split("-")
        sender = (clients.python_send(url, code, text=TEXT) if sender_kind == "python"
                  else clients.go_send(url, code, TEXT))
        receiver = (clients.python_receive(url, code) if receiver_kind == "python"
                    else clients.go_receive(url, code))
        _, received = clients.transfer(sender, receiver)
        assert TEXT in received
        # Both sides released: the nameplate is retired as happy.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            plates, boxes = usage_results(database_url)
            if boxes or (plates and "go" in direction):
                break
            time.sleep(0.1)
        assert plates == ["happy"], (plates, boxes, service.output())
        if "go" not in direction:
            assert boxes == ["happy"], (plates, boxes, service.output())
        elif not boxes:
            # wormhole-william sometimes exits before its `close` leaves (seen in about half
            # of the go-go runs here, with the client's own log showing success): the mailbox
            # then waits for pruning. Whoever did close must have said happy.
            assert closed_moods(database_url) == ["happy"], service.output()
        else:
            assert boxes == ["happy"]


def test_python_transfer_survives_server_restart(database_url: str, tmp_path: Path) -> None:
    code = "7-guitarist-revenge"
    with mailbox_process(database_url, tmp_path) as first:
        url = relay_url(first)
        send = subprocess.Popen(clients.python_send(url, code, text=TEXT),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            clients.wait_for_stored_message(database_url)
            assert first.stop() == 0
            # Same port, same database, new process: the sender reconnects by itself.
            first.start()
            received = subprocess.run(clients.python_receive(url, code), capture_output=True,
                                      timeout=TIMEOUT, check=False)
            send_out, _ = send.communicate(timeout=TIMEOUT)
        finally:
            if send.poll() is None:
                send.kill()
        assert received.returncode == 0, received.stdout + received.stderr
        assert TEXT in received.stdout.decode()
        assert send.returncode == 0, send_out
