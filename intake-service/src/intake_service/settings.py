"""Intake service settings (env prefix `INTAKE_`).

Answer delivery is retried by age, not by count: `INTAKE_DELIVERY_BACKOFF_SECONDS` doubles up to
`INTAKE_DELIVERY_MAX_BACKOFF_SECONDS`, and retries go on at that pace until the delivery has been
pending for `INTAKE_DELIVERY_GIVE_UP_AFTER_SECONDS` (3 days). `INTAKE_DELIVERY_MAX_ATTEMPTS` is
deprecated and ignored: as a cap it gave up after ~17 minutes (10 attempts, 2 s doubling, the
10-minute backoff cap never reached), so a callback down for a 20-minute deploy lost the approved
answer; a count says nothing about how long an outage lasted, and an age does. It is still
accepted (and logged as ignored) so that configurations setting it keep starting.
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from helpdesk_shared.chassis.settings import ServiceSettings, require_real_secret
from intake_service.domain.callbacks import callback_url_refusal, host_pattern

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
    smtp_starttls: bool = Field(
        default=False, description="Upgrade the connection with STARTTLS, verifying the server's certificate"
    )
    smtp_tls: bool = Field(
        default=False,
        description="Implicit TLS (SMTPS, usually port 465) instead of STARTTLS, the certificate verified",
    )
    smtp_ca_file: str | None = Field(
        default=None,
        description="PEM file of the CA(s) that issued the SMTP server's certificate (a private CA); "
        "unset: the system's trusted CAs",
    )
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
    # Read as a comma-separated list (NoDecode: not as JSON, which pydantic-settings expects of a
    # list from the environment); see `domain.callbacks`.
    callback_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated hosts a ticket's own callback_url may name (`*.example.com`: any "
        "name under example.com). Unset: any host outside production; no per-ticket URL in production",
    )
    # Deliveries are retried until the channel takes the answer or the delivery has been pending
    # for `delivery_give_up_after_seconds`: an attempts cap gave up after ~17 minutes of retries
    # (10 attempts, 2 s doubling), so a callback down for a deploy lost the approved answer.
    delivery_max_attempts: int | None = Field(
        default=None,
        ge=1,
        description="Deprecated and ignored (a warning is logged when set): deliveries give up by age, "
        "INTAKE_DELIVERY_GIVE_UP_AFTER_SECONDS. Still accepted so that existing configurations start",
    )
    delivery_backoff_seconds: float = Field(
        default=2.0, gt=0, description="The first pause between attempts; it doubles up to the cap"
    )
    delivery_max_backoff_seconds: float = Field(
        default=600.0, gt=0, description="The longest pause between attempts: retries go on at this pace"
    )
    delivery_give_up_after_seconds: float = Field(
        default=259_200.0,
        gt=0,
        description="How long a delivery is retried (since its answer was published, or since a lead "
        "retried it) before it is marked failed on the ticket; 3 days by default",
    )
    delivery_poll_seconds: float = Field(default=1.0, gt=0)
    delivery_timeout_seconds: float = Field(default=15.0, gt=0)
    # Sends run at once, each on a delivery of its own: a webhook that hangs for its whole timeout
    # holds one slot, not the whole worker (and fresh answers are claimed before retries).
    delivery_concurrency: int = Field(
        default=8,
        ge=1,
        le=100,
        description="How many deliveries one replica sends at once (each holds a database connection "
        "only while it is claimed and recorded, never during the send)",
    )
    # Auto-close: answered or resolved tickets the customer has not replied to for this long.
    auto_close_after_days: int = Field(
        default=7, ge=0, le=3650, description="Days without a customer reply before closing; 0 disables"
    )
    auto_close_poll_seconds: float = Field(default=60.0, gt=0)

    @field_validator("survey_base_url")
    @classmethod
    def _without_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")  # links append /{id}/satisfaction

    @field_validator("callback_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment; empty entries (`a.com,`, ``) are none
            value = [entry for entry in value.split(",") if entry.strip()]
        if isinstance(value, list | tuple):
            return tuple(host_pattern(entry) if isinstance(entry, str) else entry for entry in value)
        return value

    def callback_url_refusal(self, url: str) -> str | None:
        """Why answers may not go to this ticket's own callback URL under these settings, or None."""
        return callback_url_refusal(
            url, allowed_hosts=self.callback_hosts, production=self.environment == "production"
        )

    @model_validator(mode="after")
    def _smtp_transport_security(self) -> IntakeSettings:
        if self.smtp_starttls and self.smtp_tls:
            raise ValueError("Set one of INTAKE_SMTP_STARTTLS and INTAKE_SMTP_TLS, not both")
        if self.smtp_ca_file:
            try:  # refused at start rather than by every send: each would be retried for days
                ssl.create_default_context(cafile=self.smtp_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"INTAKE_SMTP_CA_FILE cannot be read as PEM certificates: {exc}") from exc
        # Answers (and the SMTP password) must not cross a network in clear: only a relay on this
        # very host (a sidecar, a local MTA) may be spoken to without TLS.
        if (
            self.environment == "production"
            and not (self.smtp_starttls or self.smtp_tls)
            and not is_loopback_host(self.smtp_host)
        ):
            raise ValueError(
                f"INTAKE_SMTP_STARTTLS (or INTAKE_SMTP_TLS) must be on for the SMTP server "
                f"{self.smtp_host!r} in production: only a loopback server may be used without TLS"
            )
        return self

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


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1, bracketed or not)."""
    name = host.strip().rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False
