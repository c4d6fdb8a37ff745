"""Our services as real processes (their console scripts), as operators run them."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from tests.support.postgres import free_port

BIN = Path(sys.executable).parent


def wait_for_port(
    port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class ServiceProcess:
    def __init__(self, script: str, env: dict[str, str], port: int, log: Path) -> None:
        self.script = script
        self.env = {**os.environ, **env}
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / self.script)], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, proc=self.proc)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def service_process(
    service: Literal["mailbox", "transit"], database_url: str, tmp_path: Path, *,
    host: str | None = "127.0.0.1", **env: str,
) -> Iterator[ServiceProcess]:
    """`wormhole-<service>` on a free port of `host` (None: its default, every address)
    with `database_url`, stopped after."""
    port = free_port()
    prefix = service.upper()
    process = ServiceProcess(
        f"wormhole-{service}",
        {f"{prefix}_DATABASE_URL": database_url, f"{prefix}_PORT": str(port),
         f"{prefix}_METRICS_PORT": "0", **env},
        port,
        tmp_path / f"{service}-{port}.log",
    )
    process.env.pop(f"{prefix}_HOST", None)
    if host is not None:
        process.env[f"{prefix}_HOST"] = host
    process.start()
    try:
        yield process
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.stop()


mailbox_process = functools.partial(service_process, "mailbox")
transit_process = functools.partial(service_process, "transit")
