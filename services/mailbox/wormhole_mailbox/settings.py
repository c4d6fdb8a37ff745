"""The mailbox server's configuration: environment variables `MAILBOX_*` only."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from psycopg.conninfo import make_conninfo
from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from wormhole_common.settings import ServiceSettings
from wormhole_common.workers import available_cpus

from wormhole_mailbox.addresses import Network


class MailboxSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILBOX_", extra="ignore")
    secret_fields = ("database_url", "database_password")

    database_url: str = Field(min_length=1)
    database_password: str | None = None
    database_pool_size: int = Field(default=4, ge=1, le=64)
    database_startup_timeout_seconds: float = Field(default=30, ge=0)
    host: str = "0.0.0.0"
    port: int = Field(default=4000, ge=0, le=65535)
    motd: str | None = None
    advertise_version: str | None = None
    signal_error: str | None = None
    allow_list: bool = True
    channel_expiry_seconds: float = Field(default=11 * 60, gt=0)
    prune_interval_seconds: float = Field(default=5 * 60, gt=0)
    blur_usage_seconds: int | None = Field(default=None, ge=1)
    trusted_proxies: Annotated[tuple[Network, ...], NoDecode] = ()
    permissions: Literal["none", "hashcash"] = "none"
    hashcash_bits: int = Field(default=20, ge=1, le=64)
    websocket_ping_interval_seconds: float = Field(default=60, gt=0)
    websocket_ping_timeout_seconds: float = Field(default=600, gt=0)
    shutdown_grace_seconds: float = Field(default=3, ge=0)
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9410, ge=0, le=65535)  # 0: no metrics endpoint
    workers: int = Field(default_factory=available_cpus, ge=1, le=256)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # -- limits and quotas (issue 10): per process; the address is the trusted proxy's --------
    max_connections: int | None = Field(
        default=None, ge=1,
        description="Open connections at most; unset: sized from the open-file limit (the"
        " limit minus a reserve for the database pool, listeners and /metrics, at most 10,000)")
    max_connections_per_ip: int = Field(
        default=250, ge=1,
        description="Open connections from one address (an IPv6 /64) at most; capped at a"
        " quarter of MAILBOX_MAX_CONNECTIONS so other addresses are still served")
    allocations_per_minute: float = Field(
        default=60, gt=0,
        description="Nameplate allocations per address and minute (also the burst)")
    new_mailboxes_per_minute: float = Field(
        default=60, gt=0,
        description="New mailboxes (a claim of a nameplate the connection did not allocate,"
        " or an open of a mailbox its claim did not return) per address and minute")
    mailbox_max_messages: int = Field(
        default=1000, ge=1,
        description="Messages one mailbox holds at most; an add past it gets 'mailbox is full'")
    mailbox_max_bytes: int = Field(
        default=4 << 20, ge=1,
        description="Octets of message bodies one mailbox holds at most (default 4 MiB); an"
        " add past it gets 'mailbox is full'")
    command_timeout_seconds: float = Field(
        default=10, gt=0,
        description="Deadline of one command's store op; past it the client gets an error"
        " and the connection is closed (1011)")
    nameplates_per_ip: int = Field(
        default=100, ge=1,
        description="Nameplates one address may hold at once (allocated or claimed, until"
        " released or expired)")

    @field_validator("max_connections", mode="before")
    @classmethod
    def _max_connections_empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            try:
                return tuple(ipaddress.ip_network(p, strict=False) for p in parts)
            except ValueError as exc:
                raise ValueError(f"expected comma-separated CIDRs ({exc})") from None
        return value

    @field_validator("blur_usage_seconds", "motd", "advertise_version", "signal_error",
                     "database_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _check_database_url(self) -> MailboxSettings:
        if "://" not in self.database_url and "=" not in self.database_url:
            raise ValueError(
                "MAILBOX_DATABASE_URL must be a PostgreSQL URL (postgresql://user@host/db)"
                " or a key=value connection string"
            )
        return self

    @property
    def hashcash(self) -> int | None:
        return self.hashcash_bits if self.permissions == "hashcash" else None

    def connection_string(self) -> str:
        """The database URL with the password from its own variable or file, if given."""
        if not self.database_password:
            return self.database_url
        return make_conninfo(self.database_url, password=self.database_password)
