"""Metrics service settings (env prefix `METRICS_`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from helpdesk_shared.chassis.settings import ServiceSettings


class MetricsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="METRICS_", extra="ignore", frozen=True)

    service_name: str = "metrics"
