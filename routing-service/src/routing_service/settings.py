"""Routing service settings (env prefix `ROUTING_`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from helpdesk_shared.chassis.settings import ServiceSettings


class RoutingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ROUTING_", extra="ignore", frozen=True)

    service_name: str = "routing"
    sla_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the SLA worker looks for warnings and breaches that are due"
    )
    sla_batch_size: int = Field(default=100, ge=1, le=10_000, description="Tickets fired per SLA worker pass")
