"""Settings for the infrastructure every service uses: one class per concern."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.topology import DEFAULT_NAMESPACE


class DatabaseSettings(BaseSettings):
    """PostgreSQL; `DATABASE_URL` may use the plain `postgresql://` scheme."""

    model_config = SettingsConfigDict(env_prefix="DATABASE_", env_file=".env", extra="ignore")

    url: SecretStr = SecretStr("postgresql+asyncpg://postgres@127.0.0.1:5432/imagebot")
    pool_size: int = Field(default=10, ge=1)
    """Connections one process holds at most (no overflow): replicas × this <= max_connections."""
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _use_asyncpg(cls, url: SecretStr) -> SecretStr:
        value = url.get_secret_value()
        for plain in ("postgresql://", "postgres://"):
            if value.startswith(plain):
                return SecretStr("postgresql+asyncpg://" + value.removeprefix(plain))
        return url


class BrokerSettings(BaseSettings):
    """RabbitMQ connection and the name prefix of every exchange and queue."""

    model_config = SettingsConfigDict(env_prefix="AMQP_", env_file=".env", extra="ignore")

    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    namespace: str = Field(default=DEFAULT_NAMESPACE, pattern=r"^[a-zA-Z0-9_.-]{1,50}$")
    prefetch: int = Field(default=20, ge=1, le=1000)
    publish_timeout_s: float = Field(default=10.0, gt=0)
    retry_backoff_s: float = Field(default=0.5, ge=0)
    """Pause before a failed message returns to its queue, doubling with each delivery."""
    retry_backoff_max_s: float = Field(default=10.0, ge=0)
    transient_retry_s: float = Field(default=300.0, ge=0)
    """How long a handler is retried in process through a database or broker outage."""
    rpc_timeout_s: float = Field(default=5.0, gt=0, le=60)
    """How long a request/reply caller waits before giving up."""


class OutboxSettings(BaseSettings):
    """The relay that publishes committed events."""

    model_config = SettingsConfigDict(env_prefix="OUTBOX_", env_file=".env", extra="ignore")

    batch_size: int = Field(default=100, ge=1, le=10_000)
    poll_interval_s: float = Field(default=0.5, gt=0)
    sweep_after_s: float = Field(default=5.0, ge=0)
    """Committed events are published from memory at once; the sweep takes what is still
    unsent this long after its commit (a crash, a failed publish, an outage)."""
    retention_days: int = Field(default=7, ge=1)


LogFormat = Literal["json", "text"]


class ServiceSettings(BaseSettings):
    """The process around a service: its HTTP port (health, webhooks), logging, shutdown."""

    model_config = SettingsConfigDict(env_prefix="SERVICE_", env_file=".env", extra="ignore")

    http_host: str = "0.0.0.0"  # a container serves its port on every interface
    http_port: int = Field(default=8080, ge=1, le=65535)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: LogFormat = "json"
    """`json`: one object per line, for log collectors; `text` for reading in a terminal."""
    graceful_timeout_s: float = Field(default=20.0, gt=0)
    """Time in-flight messages get to finish on shutdown; below compose's stop_grace_period."""
    metrics_interval_s: float = Field(default=15.0, gt=0)
    """How often the gauges no event updates (outbox backlog and lag, DLQ depth) are read."""


@dataclass
class InfrastructureSettings:
    """What every service with a database needs; a service's own settings extend it."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
