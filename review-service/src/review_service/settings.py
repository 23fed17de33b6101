"""Review service settings (env prefix `REVIEW_`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from helpdesk_shared.chassis.settings import ServiceSettings


class ReviewSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REVIEW_", extra="ignore", frozen=True)

    service_name: str = "review"
