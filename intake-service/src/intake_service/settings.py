"""Intake service settings (env prefix `INTAKE_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from helpdesk_shared.chassis.settings import ServiceSettings, require_real_secret

# Development defaults, public in the source: production refuses to start with them.
DEV_SURVEY_SECRET = "helpdesk-local-survey-secret-not-for-production"
DEV_WEBHOOK_SECRET = "helpdesk-local-webhook-secret-not-for-production"
# Where `make run` serves intake: customers could not open survey links pointing here.
DEV_SURVEY_BASE_URL = "http://127.0.0.1:8001/v1/tickets"


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore", frozen=True)

    service_name: str = "intake"
    # Channels post tickets in bursts, each group commit waking the relay: pace its passes.
    outbox_wake_interval_seconds: float = Field(default=0.025, ge=0, le=1)
    ticket_number_prefix: str = "HD"
    survey_secret: SecretStr = Field(
        default=SecretStr(DEV_SURVEY_SECRET),
        description="Signs satisfaction-survey links sent to customers",
    )
    survey_ttl_days: int = Field(default=14, ge=1, le=365)
    survey_base_url: str = Field(
        default=DEV_SURVEY_BASE_URL,
        pattern=r"^https?://[^/?#\s]+[^?#\s]*$",
        description="Public URL of intake's tickets, before /{id}/satisfaction, in survey links",
    )
    # Delivery of approved answers: email over SMTP, other channels as signed webhooks.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "support@helpdesk.local"
    mail_domain: str = "helpdesk.local"
    webhook_secret: SecretStr = Field(
        default=SecretStr(DEV_WEBHOOK_SECRET),
        description="HMAC-SHA256 key of the X-Helpdesk-Signature header on answer webhooks",
    )
    channel_callbacks: dict[str, str] = Field(
        default_factory=dict, description='Default callback URL per channel, e.g. {"app": "https://…"}'
    )
    delivery_max_attempts: int = Field(default=10, ge=1)
    delivery_backoff_seconds: float = Field(default=2.0, gt=0)
    delivery_poll_seconds: float = Field(default=1.0, gt=0)
    delivery_timeout_seconds: float = Field(default=15.0, gt=0)
    # Auto-close: answered or resolved tickets the customer has not replied to for this long.
    auto_close_after_days: int = Field(
        default=7, ge=0, le=3650, description="Days without a customer reply before closing; 0 disables"
    )
    auto_close_poll_seconds: float = Field(default=60.0, gt=0)

    @field_validator("survey_base_url")
    @classmethod
    def _without_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")  # links append /{id}/satisfaction

    @model_validator(mode="after")
    def _refuse_development_secrets(self) -> IntakeSettings:
        if self.environment == "production":
            for variable, secret, default in (
                ("INTAKE_SURVEY_SECRET", self.survey_secret, DEV_SURVEY_SECRET),
                ("INTAKE_WEBHOOK_SECRET", self.webhook_secret, DEV_WEBHOOK_SECRET),
            ):
                require_real_secret(variable, secret, default)
            if self.survey_base_url == DEV_SURVEY_BASE_URL:
                raise ValueError("INTAKE_SURVEY_BASE_URL must be set to the public address customers open")
        return self
