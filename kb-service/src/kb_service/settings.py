"""Kb service settings (env prefix `KB_`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from helpdesk_shared.chassis.settings import ServiceSettings


class KbSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KB_", extra="ignore", frozen=True)

    service_name: str = "kb"
