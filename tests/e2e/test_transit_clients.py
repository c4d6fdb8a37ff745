"""Real clients move a file through our mailbox and our relay (the only path: no listening
sockets), hash-checked, and the relay's usage row shows the bytes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import clients
from tests.support.processes import ServiceProcess, mailbox_process, transit_process

pytestmark = pytest.mark.e2e

SIZE = 20 * 1024 * 1024 + 12345


@pytest.fixture
def transit(database_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    with transit_process(database_url, tmp_path) as service:
        yield service


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "outbox" / "random.bin"
    path.parent.mkdir()
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_python_to_python_file_through_relay(
    database_url: str, tmp_path: Path, transit: ServiceProcess, payload: tuple[Path, str]
) -> None:
    path, digest = payload
    helper = f"tcp:127.0.0.1:{transit.port}"
    out = tmp_path / "received.bin"
    with mailbox_process(database_url, tmp_path) as mailbox:
        url = f"ws://127.0.0.1:{mailbox.port}/v1"
        code = "8-guitarist-revenge"
        clients.transfer(clients.python_send(url, code, path=str(path), transit=helper),
                         clients.python_receive(url, code, transit=helper, output=str(out)),
                         cwd=tmp_path)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    rows = clients.relayed_bytes(database_url)
    assert len(rows) == 1, rows
    assert rows[0][1] >= SIZE, rows


@pytest.mark.skipif(clients.GO_WORMHOLE is None, reason="wormhole-william not installed")
def test_python_to_go_file_through_relay(
    database_url: str, tmp_path: Path, transit: ServiceProcess, payload: tuple[Path, str]
) -> None:
    path, digest = payload
    helper = f"tcp:127.0.0.1:{transit.port}"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with mailbox_process(database_url, tmp_path) as mailbox:
        url = f"ws://127.0.0.1:{mailbox.port}/v1"
        code = "9-guitarist-revenge"
        assert clients.GO_WORMHOLE is not None
        clients.transfer(clients.python_send(url, code, path=str(path), transit=helper),
                         clients.go_receive(url, code), cwd=inbox)
    assert hashlib.sha256((inbox / path.name).read_bytes()).hexdigest() == digest
    rows = clients.relayed_bytes(database_url)
    assert len(rows) == 1, rows
    assert rows[0][1] >= SIZE, rows
