"""Command lines of the real wormhole clients, pointed only at our servers on loopback."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

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
