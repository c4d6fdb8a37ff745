"""`wormhole-stack`'s own configuration: `WORMHOLE_*` variables (the services keep theirs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from wormhole_common.settings import EmptyIsUnset, EnvSettings


class StackSettings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="WORMHOLE_", extra="ignore")

    data_dir: Path = Field(default=Path("wormhole-data"), description="where the embedded"
                           " PostgreSQL keeps its data (and its Unix socket and log)")
    postgres_user: str = Field(default="nobody", description="as root: the unprivileged user"
                               " that owns and runs the embedded PostgreSQL and runs the"
                               " services")
    public_host: Annotated[str | None, EmptyIsUnset] = Field(
        default=None, description="host name or address clients use, in the printed wormhole"
        " commands (unset: MAILBOX_HOST if it is one address, else the address of the"
        " interface of the default route, else 127.0.0.1)")
    prometheus_port: int = Field(default=0, ge=0, le=65535, description="also run a local"
                                 " Prometheus (when installed) on 127.0.0.1:PORT scraping"
                                 " both services (0: none)")
    startup_timeout_seconds: float = Field(
        default=60, gt=0, description="how long PostgreSQL and the services may take to start")
