"""Dockerfile.mailbox and Dockerfile.transit: hadolint, one shared wheel stage, a runtime stage
with only the project's wheels, a numeric user, exec-form entry point and health check."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest

from tests.deploy.stack import BIN, ROOT, SERVICES, dockerfile_stages, dockerfile_text_of_stage

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PORTS = {"mailbox": {"4000", "9410"}, "transit": {"4001", "4002", "9411"}}
METRICS_VARIABLE = {"mailbox": "MAILBOX_METRICS_PORT", "transit": "TRANSIT_METRICS_PORT"}


def test_hadolint_passes_both_dockerfiles() -> None:
    files = [str(ROOT / f"Dockerfile.{s}") for s in SERVICES]
    result = subprocess.run([str(BIN / "hadolint"), "--failure-threshold", "info", *files],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_images_share_one_wheel_stage() -> None:
    """Identical text means identical cache keys: BuildKit builds the wheel once for both."""
    mailbox, transit = (dockerfile_text_of_stage(ROOT / f"Dockerfile.{s}", "wheel")
                        for s in SERVICES)
    assert mailbox == transit
    assert "pip wheel" in mailbox


@pytest.mark.parametrize("service", SERVICES)
def test_base_images_are_pinned_to_an_exact_release(service: str) -> None:
    for stage in dockerfile_stages(ROOT / f"Dockerfile.{service}"):
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?",
                            stage.base), stage.base


@pytest.mark.parametrize("service", SERVICES)
def test_entrypoint_is_the_projects_console_script(service: str) -> None:
    runtime = dockerfile_stages(ROOT / f"Dockerfile.{service}")[-1]
    entrypoint = runtime.exec_form("ENTRYPOINT")
    assert entrypoint == [f"wormhole-{service}"]
    assert entrypoint[0] in PYPROJECT["project"]["scripts"]
    assert not runtime.instructions("CMD")  # nothing (no shell) between Docker and the server


@pytest.mark.parametrize("service", SERVICES)
def test_runtime_installs_only_the_built_wheels(service: str) -> None:
    """No compilers, no package manager runs, no index: what pyproject.toml declares only."""
    runtime = dockerfile_stages(ROOT / f"Dockerfile.{service}")[-1]
    runs = " ".join(runtime.instructions("RUN"))
    assert not re.search(r"apt-get|apk |gcc|g\+\+|clang|build-essential|\bmake\b", runs)
    installs = re.findall(r"pip install ([^&]*)", runs)
    assert installs, runs
    for args in installs:
        assert "--no-index" in args and "--find-links=/wheels" in args, args
        assert args.split()[-1] == PYPROJECT["project"]["name"], args
    assert "from=wheel" in runs


@pytest.mark.parametrize("service", SERVICES)
def test_runtime_runs_as_a_numeric_non_root_user(service: str) -> None:
    runtime = dockerfile_stages(ROOT / f"Dockerfile.{service}")[-1]
    user = runtime.instructions("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit()), user


@pytest.mark.parametrize("service", SERVICES)
def test_ports_labels_stop_signal_and_health_check(service: str) -> None:
    runtime = dockerfile_stages(ROOT / f"Dockerfile.{service}")[-1]
    exposed = {p for line in runtime.instructions("EXPOSE") for p in line.split()}
    assert exposed == PORTS[service]
    labels = " ".join(runtime.instructions("LABEL"))
    for key in ("source", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert 'licenses="MIT"' in labels
    assert f"ARG VERSION={PYPROJECT['project']['version']}" in runtime.lines
    assert runtime.instructions("STOPSIGNAL") == ["SIGTERM"]
    check = runtime.exec_form("HEALTHCHECK")
    assert check[:2] == ["python", "-c"]
    assert "/readyz" in check[2] and METRICS_VARIABLE[service] in check[2]


@pytest.mark.parametrize("service", ["mailbox", "transit"])
def test_no_frontend_image_is_fetched(service: str) -> None:
    """The built-in Dockerfile frontend does RUN --mount: a `# syntax=` line would make every
    build pull a frontend image from a registry."""
    text = (ROOT / f"Dockerfile.{service}").read_text()
    assert not any(line.lower().startswith("# syntax=") for line in text.splitlines())
