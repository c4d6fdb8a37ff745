"""The mailbox server's configuration: environment variables `MAILBOX_*` only."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from wormhole_common.core.fdlimit import MEMORY_CEILING
from wormhole_common.settings import EmptyIsUnset, Port, ServiceSettings
from wormhole_common.workers import default_workers
from wormhole_common.wsconnection import WRITE_TIMEOUT

from wormhole_mailbox.core.addresses import Network
from wormhole_mailbox.core.limits import (
    CHANNEL_EXPIRY_SECONDS,
    MAILBOX_MAX_BYTES,
    MAILBOX_MAX_MESSAGES,
    PRUNE_INTERVAL_SECONDS,
    LimitSettings,
)
from wormhole_mailbox.core.paging import PageBounds
from wormhole_mailbox.core.read_clock import DEFAULT_STALL_SECONDS


class MailboxSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILBOX_", extra="ignore")

    database_url: str = Field(min_length=1, description="PostgreSQL URL"
                              " (postgresql://user@host:port/db) or key=value connection string"
                              " (or *_FILE: a file holding it)")
    port: Port = Field(default=4000, description="WebSocket port (clients connect to"
                       " ws://HOST:PORT/v1)")
    motd: Annotated[str | None, EmptyIsUnset] = Field(
        default=None, description="message of the day sent to every client")
    advertise_version: Annotated[str | None, EmptyIsUnset] = Field(
        default=None, description="client version to advertise as current")
    signal_error: Annotated[str | None, EmptyIsUnset] = Field(
        default=None, description="refuse every client with this error (maintenance)")
    allow_list: bool = Field(default=True, description="answer `list` with the nameplates in"
                             " use (needed for code completion)")
    channel_expiry_seconds: float = Field(default=CHANNEL_EXPIRY_SECONDS, gt=0,
                                          description="idle channels are pruned after this")
    prune_interval_seconds: float = Field(default=PRUNE_INTERVAL_SECONDS, gt=0,
                                          description="how often pruning runs")
    trusted_proxies: Annotated[tuple[Network, ...], NoDecode] = Field(
        default=(), description="comma-separated CIDRs whose X-Forwarded-For is believed")
    permissions: Literal["none", "hashcash"] = Field(
        default="none", description="none, or hashcash: clients must solve a stamp")
    hashcash_bits: int = Field(default=20, ge=1, le=64, description="hashcash difficulty")
    websocket_ping_interval_seconds: float = Field(
        default=60, gt=0, description="ping idle clients this often")
    websocket_ping_timeout_seconds: float = Field(
        default=600, gt=0, description="drop a client that answers no ping for this long")
    websocket_write_timeout_seconds: float = Field(
        default=WRITE_TIMEOUT, gt=0, description="drop a client that reads nothing for this"
        " long while the server has frames for it (pongs and closes included)")
    metrics_port: Port = Field(default=9410, description="port of /metrics, /healthz, /readyz"
                               " (0: none)")
    workers: int = Field(
        default_factory=default_workers, ge=1, le=256,
        json_schema_extra={"shown_default": "half the CPUs available, at least 1"},
        description="worker processes sharing the port (1: one process)")
    workers_by_address: bool = Field(
        default=True,
        description="with MAILBOX_WORKERS > 1, the kernel sends every connection from one"
        " address (an IPv6 /64) to one worker, so per-address limits hold exactly for the"
        " server; false (or with MAILBOX_TRUSTED_PROXIES, or off Linux): the workers share the"
        " port's queue and each enforces 1/MAILBOX_WORKERS of every per-address limit")

    # -- limits and quotas (docs/mailbox-protocol.md §9.3): per server, whatever
    # MAILBOX_WORKERS; the address is the trusted proxy's when there is one
    max_connections: Annotated[int | None, EmptyIsUnset] = Field(
        default=None, ge=1,
        description="Open connections at most (per server); unset: sized from the open-file"
        " limit (the limit minus a reserve for the database pool, listeners and /metrics, per"
        f" worker; at most {MEMORY_CEILING:,} per server)")
    max_connections_per_ip: int = Field(
        default=LimitSettings.max_connections_per_address, ge=1,
        description="Open connections from one address (an IPv6 /64) at most; capped at a"
        " quarter of MAILBOX_MAX_CONNECTIONS so other addresses are still served")
    allocations_per_minute: float = Field(
        default=LimitSettings.allocations_per_minute, gt=0,
        description="Nameplate allocations per address and minute (also the burst)")
    new_mailboxes_per_minute: float = Field(
        default=LimitSettings.mailboxes_per_minute, gt=0,
        description="New mailboxes (a claim of a nameplate the connection did not allocate,"
        " or an open of a mailbox its claim did not return) per address and minute")
    mailbox_max_messages: int = Field(
        default=MAILBOX_MAX_MESSAGES, ge=1,
        description="Messages one mailbox holds at most; an add past it gets 'mailbox is full'")
    mailbox_max_bytes: int = Field(
        default=MAILBOX_MAX_BYTES, ge=1,
        description="Octets of message bodies one mailbox holds at most (default 4 MiB); an"
        " add past it gets 'mailbox is full'")
    replay_page_bytes: int = Field(
        default=PageBounds.octets, ge=1, le=64 << 20,
        description="Octets of messages (bodies, sides, phases, ids) in one page of a mailbox's"
        " replay at most (default 1 MiB; a bigger message comes alone); the next page is read"
        " once the client's connection has taken the one before")
    replay_batch_bytes: int = Field(
        default=PageBounds.batch_octets, ge=1, le=128 << 20,
        description="Octets of messages the first pages of all opens in one database batch"
        " (one answer) hold together at most (default 16 MiB); past it each gets an equal"
        " share and the rest comes as replay pages")
    read_stall_seconds: float = Field(
        default=DEFAULT_STALL_SECONDS, gt=0,
        description="A client that takes nothing of a replay waiting for it for this long is"
        " closed (1008 'too slow to read'); however long a replay it is steadily reading takes")
    command_timeout_seconds: float = Field(
        default=10, gt=0,
        description="Deadline of one command's store op; past it the client gets an error"
        " and the connection is closed (1011)")
    nameplates_per_ip: int = Field(
        default=LimitSettings.nameplates_per_address, ge=1,
        description="Nameplates one address may hold at once (allocated or claimed, until"
        " released or expired)")

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

    @property
    def hashcash(self) -> int | None:
        return self.hashcash_bits if self.permissions == "hashcash" else None

    def connection_string(self) -> str:
        """The database URL with the password from its own variable or file, if given."""
        return super().connection_string() or self.database_url
