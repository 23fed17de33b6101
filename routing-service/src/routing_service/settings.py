"""Routing service settings (env prefix `ROUTING_`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from helpdesk_shared.chassis.settings import ServiceSettings


class RoutingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ROUTING_", extra="ignore", frozen=True)

    service_name: str = "routing"
