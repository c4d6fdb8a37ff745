"""An optional local Prometheus for the stack: scrapes both services' metrics ports."""

from __future__ import annotations

import shutil
from pathlib import Path

import trio

from wormhole_stack.children import spawn


def scrape_config(targets: dict[str, str]) -> str:
    """prometheus.yml for `{job: "host:port"}` (YAML flow style is JSON-compatible)."""
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
        for job, target in targets.items()
    )
    return f"global: {{scrape_interval: 15s}}\nscrape_configs:\n{jobs}"


async def start_prometheus(data_dir: Path, port: int, targets: dict[str, str],
                           env: dict[str, str]) -> trio.Process | None:
    """Prometheus on 127.0.0.1:`port`, its data in `<data_dir>/prometheus`; None if it is not
    installed."""
    binary = shutil.which("prometheus", path=env.get("PATH"))
    if binary is None:
        return None
    config = data_dir / "prometheus.yml"
    config.write_text(scrape_config(targets), encoding="utf-8")
    return await spawn("prometheus", [
        binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir / 'prometheus'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ], env, log_file=data_dir / "prometheus.log")
