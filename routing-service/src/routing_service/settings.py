"""Routing service settings (env prefix `ROUTING_`)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from helpdesk_shared.chassis.settings import ServiceSettings

SLA_BREACH_GRACE_SECONDS = 5.0


class RoutingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ROUTING_", extra="ignore", frozen=True)

    service_name: str = "routing"
    sla_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the SLA worker looks for warnings and breaches that are due"
    )
    sla_breach_grace_seconds: float = Field(
        default=SLA_BREACH_GRACE_SECONDS,
        ge=0,
        le=3600,
        description="How long after its due time a running clock breaches: an answer delivered just before "
        "the due time may reach routing a moment after it (warnings fire without a grace)",
    )
    queue_sweep_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often routing drains the queue without being woken: the safety net for a slot "
        "freed while a ticket was being queued for it (a drain sees only committed queue entries)",
    )
    difficult_lead_wait_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=7 * 86400,
        description="How long a difficult ticket (疑難) waits for its online but full team lead, counted "
        "from when the customer's wait began (creation or reopening): after that any specialist may take it, "
        "at the next queue sweep (a quarter of the default first response target of difficult tickets)",
    )
    sla_batch_size: int = Field(default=100, ge=1, le=10_000, description="Tickets fired per SLA worker pass")
    sla_start_wait_seconds: float = Field(
        default=120.0,
        ge=0,
        le=3600,
        description="At start, how long the SLA worker waits for the consumer to handle the events waiting "
        "for it before firing anything (clocks those events stop must not breach meanwhile)",
    )
    config_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="How long routing rules, the active classifier version, SLA policies and calendars are "
        "kept in memory: an edit saved on another replica is in force here at most this long after; "
        "0 reads them for every ticket",
    )
    # Read by the shared consumer (helpdesk_shared.chassis.consumer.ConsumerTuning).
    consumer_concurrency: int = Field(
        default=8, ge=1, le=64, description="Partitions whose events are handled at the same time"
    )
    consumer_max_poll_records: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Records fetched per poll; a partition further behind is paused",
    )
    consumer_max_batch: int = Field(
        default=100,
        ge=1,
        le=1_000,
        description="Most ticket.created events of one partition routed in one transaction (1: one by one)",
    )
    # Under load, a fetch answered as soon as one event is there brings one or two events: many
    # small fetches and small runs, each paying a round trip, a transaction and the relay. Holding
    # fetches 10 ms gathers the events of that time into one run, for a few ms of latency; at 500
    # tickets/s routing used ~0.6 instead of ~0.73 cores and p50 fell from ~40-60 to ~20-45 ms. The
    # price: an idle consumer asks the broker 100 times a second instead of twice.
    consumer_fetch_min_bytes: int = Field(
        default=65_536,
        ge=1,
        le=1_048_576,
        description="The broker answers a fetch once it holds this many bytes of new events "
        "(or consumer_fetch_max_wait_ms is up)",
    )
    consumer_fetch_max_wait_ms: int = Field(
        default=10,
        ge=1,
        le=10_000,
        description="How long the broker may hold a fetch for consumer_fetch_min_bytes: the most a new event "
        "waits to be fetched, and how often an idle consumer asks again",
    )
    consumer_session_timeout_ms: int = Field(
        default=6_000,
        ge=1_000,
        le=300_000,
        description="How long the group waits for a crashed routing process before giving its partitions to "
        "another (at least the broker's group.min.session.timeout.ms, 6 s by default)",
    )
    consumer_heartbeat_interval_ms: int = Field(
        default=2_000, ge=100, le=100_000, description="At most a third of the session timeout"
    )

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> RoutingSettings:
        if self.consumer_heartbeat_interval_ms * 3 > self.consumer_session_timeout_ms:
            raise ValueError(
                "ROUTING_CONSUMER_HEARTBEAT_INTERVAL_MS must be at most a third of the session timeout"
            )
        return self
