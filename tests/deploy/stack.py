"""The deployment files as data: the Dockerfiles' instructions, compose.yaml as Compose
resolves it (the real loader, `docker-compose config`), and .env.example's defaults."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES = ("mailbox", "transit")


@dataclass
class Stage:
    base: str
    name: str | None
    lines: list[str] = field(default_factory=list)  # instructions, continuations joined

    def instructions(self, keyword: str) -> list[str]:
        """Arguments of every `keyword` instruction in this stage."""
        out = []
        for line in self.lines:
            word, _, rest = line.partition(" ")
            if word.upper() == keyword:
                out.append(rest.strip())
        return out

    def exec_form(self, keyword: str) -> list[str]:
        """The JSON (exec) form of the stage's last ENTRYPOINT/CMD/HEALTHCHECK CMD."""
        (value,) = self.instructions(keyword)[-1:]
        if keyword == "HEALTHCHECK":
            value = value[value.index(" CMD ") + 5:] if " CMD " in value else value
        parsed = json.loads(value)
        assert isinstance(parsed, list), value
        return [str(x) for x in parsed]


def dockerfile_stages(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    current = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comments inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1].strip() + " "
            continue
        line = current + stripped
        current = ""
        if line.upper().startswith("FROM "):
            words = line.split()
            name = words[3] if len(words) >= 4 and words[2].upper() == "AS" else None
            stages.append(Stage(words[1], name))
        elif stages:
            stages[-1].lines.append(line)
    return stages


def dockerfile_text_of_stage(path: Path, name: str) -> str:
    """The raw text of a named stage (from its FROM to the next FROM), comments included."""
    text = path.read_text()
    match = re.search(rf"^FROM \S+ AS {name}\n.*?(?=^# ---|^FROM )", text, re.M | re.S)
    assert match, f"{path.name}: no stage {name}"
    return match.group(0)


def image_env(stage: Stage) -> dict[str, str]:
    """ENV of a stage (key=value pairs), as the container starts with it."""
    env: dict[str, str] = {}
    for value in stage.instructions("ENV"):
        for pair in shlex.split(value):
            key, _, val = pair.partition("=")
            env[key] = val
    return env


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def compose_command(*args: str, env_file: Path | None = ENV_EXAMPLE,
                    profiles: tuple[str, ...] = ()) -> list[str]:
    cmd = [str(BIN / "docker-compose"), "--project-directory", str(ROOT), "-f", str(COMPOSE)]
    cmd += ["--env-file", str(env_file if env_file is not None else os.devnull)]
    for profile in profiles:
        cmd += ["--profile", profile]
    return cmd + list(args)


def clean_environ() -> dict[str, str]:
    """No stray MAILBOX_*/TRANSIT_* from the caller: Compose interpolates the shell's too."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}


def resolved_compose(env_file: Path | None = ENV_EXAMPLE,
                     profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """compose.yaml after Compose's own interpolation, merging and normalisation."""
    result = subprocess.run(
        compose_command("config", "--format", "json", env_file=env_file, profiles=profiles),
        capture_output=True, text=True, check=True, env=clean_environ(), timeout=30)
    data: dict[str, Any] = json.loads(result.stdout)
    return data
