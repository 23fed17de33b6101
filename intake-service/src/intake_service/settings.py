"""Intake service settings (env prefix `INTAKE_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from helpdesk_shared.chassis.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore", frozen=True)

    service_name: str = "intake"
    ticket_number_prefix: str = "HD"
    survey_secret: SecretStr = Field(
        default=SecretStr("helpdesk-local-survey-secret-not-for-production"),
        description="Signs satisfaction-survey links sent to customers",
    )
    survey_ttl_days: int = Field(default=14, ge=1, le=365)
    survey_base_url: str = "http://127.0.0.1:8001/v1/tickets"
