"""Two mailbox processes behind a real load balancer (Debian's haproxy): a Python transfer
completes although the process its sender talks to is killed mid-exchange."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import clients
from tests.support.postgres import free_port
from tests.support.processes import mailbox_process, wait_for_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed"),
]

TEXT = "through the balancer"
TIMEOUT = 90

HAPROXY_CONFIG = """
global
    maxconn 1000
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    retries 3
    option redispatch
frontend wormhole
    bind 127.0.0.1:{port}
    default_backend mailboxes
backend mailboxes
    # `first`: everything goes to the first healthy process, so we know whom to kill
    balance first
    option httpchk GET /
    http-check expect status 200
    server one 127.0.0.1:{one} check inter 300ms fall 1 rise 1
    server two 127.0.0.1:{two} check inter 300ms fall 1 rise 1
"""


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """(port, config path); started by the test once the backends are known."""
    yield free_port(), tmp_path / "haproxy.cfg"


def start_haproxy(port: int, config: Path, one: int, two: int) -> subprocess.Popen[bytes]:
    config.write_text(HAPROXY_CONFIG.format(port=port, one=one, two=two))
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for_port(port, proc=proc)
    return proc


def test_transfer_survives_losing_a_process(
    database_url: str, tmp_path: Path, balancer: tuple[int, Path]
) -> None:
    port, config = balancer
    with (mailbox_process(database_url, tmp_path) as one,
          mailbox_process(database_url, tmp_path) as two):
        haproxy = start_haproxy(port, config, one.port, two.port)
        try:
            url = f"ws://127.0.0.1:{port}/v1"
            code = "5-balanced-wormhole"
            send = subprocess.Popen(clients.python_send(url, code, text=TEXT),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                clients.wait_for_stored_message(database_url)
                assert one.proc is not None
                one.proc.kill()  # no goodbye: its connections just break
                one.proc.wait()
                received = subprocess.run(clients.python_receive(url, code),
                                          capture_output=True, timeout=TIMEOUT, check=False)
                send_out, _ = send.communicate(timeout=TIMEOUT)
            finally:
                if send.poll() is None:
                    send.kill()
            assert received.returncode == 0, received.stdout + received.stderr
            assert TEXT in received.stdout.decode()
            assert send.returncode == 0, send_out
            assert "mailbox listening" in two.output()
        finally:
            haproxy.terminate()
            haproxy.wait(10)
