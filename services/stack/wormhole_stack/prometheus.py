"""An optional local Prometheus for the stack: scrapes both services' metrics ports."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

import trio

from wormhole_stack.account import make_reachable, run_as
from wormhole_stack.children import spawn


def scrape_config(targets: dict[str, str]) -> str:
    """prometheus.yml for `{job: "host:port"}` (YAML flow style is JSON-compatible)."""
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
        for job, target in targets.items()
    )
    return f"global: {{scrape_interval: 15s}}\nscrape_configs:\n{jobs}"


def own_tree(path: Path, account: pwd.struct_passwd | None) -> None:
    """`path` and everything in it owned by `account` (data of a run as root, before the
    stack dropped privileges, stays usable)."""
    path.mkdir(mode=0o700, exist_ok=True)
    if account is None:
        return
    for directory, _, files in os.walk(path):
        for name in [directory, *(os.path.join(directory, f) for f in files)]:
            os.chown(name, account.pw_uid, account.pw_gid)


async def start_prometheus(data_dir: Path, port: int, targets: dict[str, str],
                           env: dict[str, str],
                           account: pwd.struct_passwd | None) -> trio.Process | None:
    """Prometheus on 127.0.0.1:`port`, its data in `<data_dir>/prometheus`, run as `account`;
    None if it is not installed."""
    binary = shutil.which("prometheus", path=env.get("PATH"))
    if binary is None:
        return None
    make_reachable(Path(binary), account)
    make_reachable(data_dir / "prometheus", account)
    config = data_dir / "prometheus.yml"
    config.write_text(scrape_config(targets), encoding="utf-8")
    own_tree(data_dir / "prometheus", account)
    return await spawn("prometheus", [
        binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir / 'prometheus'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ], env, log_file=data_dir / "prometheus.log", **run_as(account))
