"""Settings shared by every service.

Each service subclasses `ServiceSettings` with its own env prefix
(`INTAKE_`, `ROUTING_`, …) so that `INTAKE_DATABASE_URL` and
`ROUTING_DATABASE_URL` can coexist in one environment, while the settings
that are the same for the whole system (Kafka, JWT, environment) are read
without a prefix.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Accepted only while HELPDESK_ENV is local or test; production must set its own secret.
DEV_JWT_SECRET = "helpdesk-local-dev-secret-not-for-production"


def _shared(name: str) -> AliasChoices:
    return AliasChoices(name)


# An HMAC key shorter than the hash it keys is weaker than the hash (RFC 7518 §3.2 requires 32
# bytes for HS256); an empty one, what a `KEY=` line in an env file gives, is no key at all.
MIN_SECRET_LENGTH = 32


def require_real_secret(variable: str, secret: SecretStr, development_default: str) -> None:
    """Production's rule for a signing secret: set, not the development default, long enough."""
    value = secret.get_secret_value()
    if value == development_default:
        raise ValueError(f"{variable} must be set to a real secret outside local/test")
    if len(value.encode()) < MIN_SECRET_LENGTH:
        raise ValueError(f"{variable} must be at least {MIN_SECRET_LENGTH} bytes long in production")


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    service_name: str = "service"
    environment: Literal["local", "test", "production"] = Field(
        default="local", validation_alias=_shared("HELPDESK_ENV")
    )
    database_url: str = Field(description="PostgreSQL URL of this service's own database")
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", validation_alias=_shared("KAFKA_BOOTSTRAP_SERVERS")
    )
    jwt_algorithm: Literal["HS256", "RS256"] = Field(
        default="HS256", validation_alias=_shared("HELPDESK_JWT_ALGORITHM")
    )
    jwt_secret: SecretStr = Field(
        default=SecretStr(DEV_JWT_SECRET), validation_alias=_shared("HELPDESK_JWT_SECRET")
    )
    jwt_public_key: str | None = Field(default=None, validation_alias=_shared("HELPDESK_JWT_PUBLIC_KEY"))
    jwt_issuer: str = Field(default="helpdesk", validation_alias=_shared("HELPDESK_JWT_ISSUER"))
    jwt_audience: str | None = Field(
        default=None,
        validation_alias=_shared("HELPDESK_JWT_AUDIENCE"),
        description="The `aud` tokens must carry (identity providers set one); unset: tokens must carry none",
    )
    log_level: str = Field(default="INFO", validation_alias=_shared("HELPDESK_LOG_LEVEL"))
    opentelemetry: bool = Field(
        default=False,
        validation_alias=_shared("HELPDESK_OPENTELEMETRY"),
        description="FastAPI's native OpenTelemetry spans/metrics/logs for requests (through the globally "
        "configured providers). Off by default: the services export Prometheus metrics and JSON logs with "
        "request ids, and the check costs every request a few percent of its CPU",
    )
    gc_freeze: bool = Field(
        default=True,
        validation_alias=_shared("HELPDESK_GC_FREEZE"),
        description="Once started, exempt everything loaded so far from the cyclic garbage collector's "
        "full passes (`gc.freeze`): they stalled the event loop ~100–170 ms every few seconds under load. "
        "Off only where one process hosts many short-lived apps (the in-process test harness)",
    )
    gc_young_threshold: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        validation_alias=_shared("HELPDESK_GC_YOUNG_THRESHOLD"),
        description="Once started, the cyclic garbage collector's youngest-generation threshold (Python's "
        "default is 700): a young pass runs when tracked objects grew by this many since the last. Under "
        "load the requests in flight grow and shrink by thousands of objects with every batch, so at 700 "
        "the collector kept walking live requests — ~10 % of intake's CPU at 2,600 tickets/s; at 10,000 "
        "a young pass is rare and walks at most this many objects (a few ms). Set at start-up with "
        "gc_freeze (not where that is off: the process is not the service's own)",
    )
    db_pool_size: int = 10
    db_max_overflow: int = 20
    outbox_sweep_seconds: float = 1.0
    outbox_wake_interval_seconds: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Shortest time between two relay passes woken by commits: under load a pass then "
        "carries many transactions' events (a pass costs about the same for one event as for fifty); "
        "a quiet system still publishes at once. 0: every commit wakes the relay",
    )
    outbox_batch_size: int = 500
    outbox_publish_timeout_seconds: float = 15.0
    outbox_retention_hours: float = Field(
        default=0,
        ge=0,
        description="How long published outbox rows are kept for inspection. 0 (the default) deletes a row "
        "once the broker has it: the cheapest for PostgreSQL (~16 µs of CPU less per event than keeping it, "
        "before the sweep that deletes it later); the events themselves stay on their topics",
    )
    # Longer than the topics' retention (Kafka's default is 7 days): a redelivered event
    # must still be recognised as processed.
    inbox_retention_days: int = Field(default=14, ge=1)
    consumer_max_attempts: int = 5
    consumer_retry_backoff_seconds: float = 0.2
    consumer_group: str | None = Field(
        default=None, description="Defaults to the topic prefix and the service name (e.g. `staging.routing`)"
    )
    topic_prefix: str = Field(
        default="",
        validation_alias=_shared("HELPDESK_TOPIC_PREFIX"),
        description="Prepended to every topic name; isolates stacks sharing one cluster",
    )

    @property
    def group_id(self) -> str:
        """The service's consumer group. Stacks sharing a cluster under different topic prefixes
        get groups of their own too: in a shared group each stack's restarts would rebalance the
        other's consumers."""
        return self.consumer_group or f"{self.topic_prefix}{self.service_name}"

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> ServiceSettings:
        if self.environment == "production" and self.jwt_algorithm == "HS256":
            require_real_secret("HELPDESK_JWT_SECRET", self.jwt_secret, DEV_JWT_SECRET)
        if self.jwt_algorithm == "RS256" and not self.jwt_public_key:
            raise ValueError("HELPDESK_JWT_PUBLIC_KEY is required when HELPDESK_JWT_ALGORITHM=RS256")
        return self

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def source(self) -> str:
        """CloudEvents `source` of the events this service publishes."""
        return f"/helpdesk/{self.service_name}"
