"""Delivery settings: production refuses to send answers to a remote SMTP server in clear, a CA
file must be readable, and deliveries give up by age (the old attempts cap is accepted, ignored)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from intake_service.settings import IntakeSettings, is_loopback_host

URL = "postgresql://helpdesk@127.0.0.1:5432/intake"
REAL = "a-real-secret-of-sufficient-length-0123456789"
PRODUCTION = {
    "database_url": URL,
    "environment": "production",
    "jwt_secret": REAL,
    "survey_secret": REAL,
    "webhook_secret": REAL,
    "survey_base_url": "https://support.example.com/v1/tickets",
}


def test_production_refuses_a_remote_smtp_server_without_tls() -> None:
    # Answers carry the customer's data, and the login the SMTP password: never in clear on a network.
    with pytest.raises(ValidationError, match="INTAKE_SMTP_STARTTLS"):
        IntakeSettings(**PRODUCTION, smtp_host="smtp.example.com", smtp_port=587)


@pytest.mark.parametrize("tls", [{"smtp_starttls": True}, {"smtp_tls": True, "smtp_port": 465}])
def test_production_sends_to_a_remote_server_over_starttls_or_implicit_tls(tls: dict[str, object]) -> None:
    settings = IntakeSettings(**PRODUCTION, smtp_host="smtp.example.com", **tls)
    assert settings.smtp_starttls or settings.smtp_tls


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "LOCALHOST.", "::1", "[::1]"])
def test_a_relay_on_this_host_may_be_spoken_to_without_tls(host: str) -> None:
    assert IntakeSettings(**PRODUCTION, smtp_host=host).smtp_host == host


@pytest.mark.parametrize("host", ["smtp.example.com", "127.example.com", "10.0.0.5", "localhost.example.com"])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)


def test_development_may_use_a_remote_server_without_tls() -> None:
    assert IntakeSettings(database_url=URL, smtp_host="mailhog.internal").smtp_host == "mailhog.internal"


def test_starttls_and_implicit_tls_exclude_each_other() -> None:
    with pytest.raises(ValidationError, match="not both"):
        IntakeSettings(database_url=URL, smtp_starttls=True, smtp_tls=True)


def test_a_ca_file_must_be_readable_pem(tmp_path: Path) -> None:
    # Refused at start: otherwise every send would fail, and be retried for days.
    with pytest.raises(ValidationError, match="INTAKE_SMTP_CA_FILE"):
        IntakeSettings(database_url=URL, smtp_starttls=True, smtp_ca_file=str(tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ValidationError, match="INTAKE_SMTP_CA_FILE"):
        IntakeSettings(database_url=URL, smtp_starttls=True, smtp_ca_file=str(garbage))


def test_deliveries_give_up_by_age_and_the_old_attempts_cap_still_starts() -> None:
    settings = IntakeSettings(database_url=URL)
    assert settings.delivery_give_up_after_seconds == 3 * 24 * 3600
    assert settings.delivery_max_backoff_seconds == 600
    assert settings.delivery_max_attempts is None
    # Configurations that set it keep starting; it is ignored (and logged by the worker).
    assert IntakeSettings(database_url=URL, delivery_max_attempts=10).delivery_max_attempts == 10
