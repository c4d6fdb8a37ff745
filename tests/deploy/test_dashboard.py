"""Static checks of the Grafana provisioning and dashboard, and of the Prometheus files."""

from __future__ import annotations

import json
import subprocess
from itertools import combinations
from typing import Any

import pytest
import yaml

from tests.deploy.dashboard import (
    DASHBOARD,
    DATASOURCES,
    PROMETHEUS,
    ROOT,
    dashboard,
    panels,
    queries,
)
from tests.support.metrics import promtool


def _datasource_uid() -> str:
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert len(provisioned) == 1
    uid: str = provisioned[0]["uid"]
    return uid


def test_every_panel_uses_the_provisioned_datasource() -> None:
    uid = _datasource_uid()
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]


def test_panels_have_units_and_do_not_overlap() -> None:
    boxes = []
    for panel in panels():
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']} has no unit"
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        boxes.append((panel["title"], g))
    for (ta, a), (tb, b) in combinations(boxes, 2):
        apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                 or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
        assert apart, f"{ta!r} overlaps {tb!r}"


def test_the_dashboard_fits_one_screen_and_sums_across_replicas() -> None:
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels())
    assert bottom <= 27  # about 30 px a unit: one 1080p screen
    for title, expr in queries():
        # Aggregated so that replicas add up (or max() for gauges shared through the database).
        assert expr.startswith(("sum", "max", "histogram_quantile(")), (title, expr)
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))


def test_dashboard_provider_points_at_the_dashboards_folder() -> None:
    provider = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "dashboards" / "wormhole.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert path.rstrip("/").endswith("dashboards")
    assert DASHBOARD.parent.name == "dashboards"
    assert dashboard()["uid"] == "wormhole-stack"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = promtool()
    assert tool is not None
    return subprocess.run([tool, *args], cwd=PROMETHEUS, capture_output=True, text=True,
                          check=False, timeout=60)


@pytest.mark.skipif(promtool() is None, reason="promtool (Debian prometheus) is not installed")
@pytest.mark.parametrize("args", [
    ("check", "config", "prometheus.yml"),
    ("check", "rules", "alerts.yml"),
    ("test", "rules", "alerts_test.yml"),
])
def test_promtool_accepts_the_config_and_rules(args: tuple[str, ...]) -> None:
    result = _promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_both_services_by_compose_name() -> None:
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"mailbox", "transit"}
    # every mailbox replica, found through the compose service name
    assert jobs["mailbox"]["dns_sd_configs"] == [{"names": ["mailbox"], "type": "A", "port": 9410}]
    assert jobs["transit"]["static_configs"][0]["targets"] == ["transit:9411"]


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.to_json()))


def _lost_or_changed(before: Any, after: Any, path: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        problems = [f"lost {path}/{k}" for k in before if k not in after]
        for key in before.keys() & after.keys():
            problems += _lost_or_changed(before[key], after[key], f"{path}/{key}")
        return problems
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [p for i, (a, b) in enumerate(zip(before, after, strict=True))
                for p in _lost_or_changed(a, b, f"{path}[{i}]")]
    return [] if before == after else [f"changed {path}: {before!r} -> {after!r}"]


def test_grafana_foundation_sdk_round_trips_the_dashboard() -> None:
    sdk = pytest.importorskip("grafana_foundation_sdk")
    from grafana_foundation_sdk.cog.plugins import register_default_plugins  # noqa: PLC0415
    from grafana_foundation_sdk.models.dashboard import Dashboard  # noqa: PLC0415

    assert sdk is not None
    register_default_plugins()  # panel and query types: timeseries, stat, prometheus
    source = dashboard()
    again = _plain(Dashboard.from_json(source).to_json())
    assert _lost_or_changed(source, again) == []
