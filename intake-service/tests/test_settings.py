"""Intake's own secrets: production refuses the development defaults written in the source."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from intake_service.settings import IntakeSettings

URL = "postgresql://helpdesk@127.0.0.1:5432/intake"
REAL = "a-real-secret-of-sufficient-length-0123456789"
PUBLIC = "https://support.example.com/v1/tickets"
PRODUCTION = {"database_url": URL, "environment": "production", "jwt_secret": REAL}


@pytest.mark.parametrize(
    ("missing", "variable"),
    [("survey_secret", "INTAKE_SURVEY_SECRET"), ("webhook_secret", "INTAKE_WEBHOOK_SECRET")],
)
def test_production_refuses_a_development_secret(missing: str, variable: str) -> None:
    # Survey links and answer webhooks are signed with these: anyone could forge a rating (naming
    # any agent) or a webhook with the development defaults, which are in the source.
    given = {"survey_secret": REAL, "webhook_secret": REAL, "survey_base_url": PUBLIC}
    del given[missing]
    with pytest.raises(ValidationError, match=variable):
        IntakeSettings(**PRODUCTION, **given)


@pytest.mark.parametrize("variable", ["survey_secret", "webhook_secret"])
@pytest.mark.parametrize("short", ["", "short"])
def test_production_refuses_an_empty_or_short_secret(variable: str, short: str) -> None:
    given = {"survey_secret": REAL, "webhook_secret": REAL, "survey_base_url": PUBLIC, variable: short}
    with pytest.raises(ValidationError, match=f"INTAKE_{variable.upper()} must be at least 32 bytes"):
        IntakeSettings(**PRODUCTION, **given)


def test_production_refuses_survey_links_to_the_development_address() -> None:
    # Customers open these links: the default points at a developer's own machine.
    with pytest.raises(ValidationError, match="INTAKE_SURVEY_BASE_URL"):
        IntakeSettings(**PRODUCTION, survey_secret=REAL, webhook_secret=REAL)


@pytest.mark.parametrize("url", ["support.example.com/v1/tickets", "ftp://support.example.com", "https://"])
def test_a_survey_base_url_must_be_an_http_url(url: str) -> None:
    with pytest.raises(ValidationError, match="survey_base_url"):
        IntakeSettings(database_url=URL, survey_base_url=url)


def test_production_starts_with_real_secrets_and_development_with_the_defaults() -> None:
    settings = IntakeSettings(**PRODUCTION, survey_secret=REAL, webhook_secret=REAL, survey_base_url=PUBLIC)
    assert settings.environment == "production"
    assert settings.survey_base_url == PUBLIC
    assert (
        IntakeSettings(
            **PRODUCTION, survey_secret=REAL, webhook_secret=REAL, survey_base_url=PUBLIC + "/"
        ).survey_base_url
        == PUBLIC
    )
    assert IntakeSettings(database_url=URL, environment="local").environment == "local"
