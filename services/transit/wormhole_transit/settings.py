"""The transit relay's configuration: environment variables `TRANSIT_*` only."""

from __future__ import annotations

from typing import Literal

from psycopg.conninfo import make_conninfo
from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from wormhole_common.settings import ServiceSettings


class TransitSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRANSIT_", extra="ignore")
    secret_fields = ("database_url", "database_password")

    database_url: str | None = None  # unset: relay, but record nothing
    database_password: str | None = None
    database_pool_size: int = Field(default=2, ge=1, le=64)
    host: str = "0.0.0.0"
    port: int = Field(default=4001, ge=0, le=65535)
    websocket_port: int | None = Field(default=None, ge=0, le=65535)
    blur_usage_seconds: int | None = Field(default=None, ge=1)
    # Every client sends its line on connect; this only reaps silent sockets (issues #9, #26).
    handshake_timeout_seconds: float = Field(default=30, gt=0)
    # The Go sender waits for a human to accept before its partner arrives: keep it long.
    lonely_timeout_seconds: float = Field(default=30 * 60, gt=0)
    max_connections: int = Field(default=20_000, ge=1)
    max_connections_per_ip: int = Field(default=500, ge=1)
    shutdown_grace_seconds: float = Field(default=10, ge=0)
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9411, ge=0, le=65535)  # 0: no metrics endpoint
    current_interval_seconds: float = Field(default=300, gt=0)
    usage_queue_size: int = Field(default=10_000, ge=1)
    usage_log: bool = True  # one JSON line per usage record on the log
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("database_url", "database_password", "websocket_port", "blur_usage_seconds",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_database_url(self) -> TransitSettings:
        url = self.database_url
        if url is not None and "://" not in url and "=" not in url:
            raise ValueError(
                "TRANSIT_DATABASE_URL must be a PostgreSQL URL (postgresql://user@host/db)"
                " or a key=value connection string"
            )
        return self

    def connection_string(self) -> str | None:
        """The database URL with the password from its own variable or file, if given."""
        if self.database_url is None or not self.database_password:
            return self.database_url
        return make_conninfo(self.database_url, password=self.database_password)
