"""Intake service settings (env prefix `INTAKE_`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from helpdesk_shared.chassis.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore", frozen=True)

    service_name: str = "intake"
    ticket_number_prefix: str = "HD"
