"""The transit relay's configuration: environment variables `TRANSIT_*` only."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from wormhole_common.settings import EmptyIsUnset, PoolSize, Port, ServiceSettings


class TransitSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRANSIT_", extra="ignore")

    database_url: Annotated[str | None, EmptyIsUnset] = Field(
        default=None, description="PostgreSQL URL for usage records (unset: relay, record"
        " nothing; or *_FILE: a file holding it)")
    database_pool_size: PoolSize = Field(default=2, description="database connections")
    port: Port = Field(default=4001, description="TCP port for clients"
                       " (--transit-helper tcp:HOST:PORT)")
    websocket_port: Annotated[int | None, EmptyIsUnset] = Field(
        default=None, ge=0, le=65535, description="WebSocket port for browser clients"
        " (unset: none)")
    # Every client sends its line on connect; this only reaps silent sockets
    # (docs/transit-protocol.md §7).
    handshake_timeout_seconds: float = Field(
        default=30, gt=0, description="close a connection that sends no handshake by then")
    # The Go sender waits for a human to accept before its partner arrives: keep it long.
    lonely_timeout_seconds: float = Field(
        default=30 * 60, gt=0, description="close a connection whose partner never comes")
    max_connections: int = Field(default=20_000, ge=1, description="connections at once")
    max_connections_per_ip: int = Field(
        default=500, ge=1, description="connections at once from one address (an IPv6 /64)")
    shutdown_grace_seconds: float = Field(
        default=10, ge=0, description="on SIGTERM, how long relaying pairs may finish")
    metrics_port: Port = Field(default=9411, description="port of /metrics, /healthz, /readyz"
                               " (0: none)")
    current_interval_seconds: float = Field(
        default=300, gt=0, description="how often the transit_current snapshot is written")
    usage_queue_size: int = Field(default=10_000, ge=1,
                                  description="usage records waiting for the database")
    usage_log: bool = Field(default=True, description="one JSON line per usage record on the"
                            " log")
