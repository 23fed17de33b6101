"""Intake's own secrets: production refuses the development defaults written in the source."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from intake_service.settings import IntakeSettings

URL = "postgresql://helpdesk@127.0.0.1:5432/intake"
REAL = "a-real-secret-of-sufficient-length-0123456789"
PRODUCTION = {"database_url": URL, "environment": "production", "jwt_secret": REAL}


@pytest.mark.parametrize(
    ("missing", "variable"),
    [("survey_secret", "INTAKE_SURVEY_SECRET"), ("webhook_secret", "INTAKE_WEBHOOK_SECRET")],
)
def test_production_refuses_a_development_secret(missing: str, variable: str) -> None:
    # Survey links and answer webhooks are signed with these: anyone could forge a rating (naming
    # any agent) or a webhook with the development defaults, which are in the source.
    given = {"survey_secret": REAL, "webhook_secret": REAL}
    del given[missing]
    with pytest.raises(ValidationError, match=variable):
        IntakeSettings(**PRODUCTION, **given)


def test_production_starts_with_real_secrets_and_development_with_the_defaults() -> None:
    assert IntakeSettings(**PRODUCTION, survey_secret=REAL, webhook_secret=REAL).environment == "production"
    assert IntakeSettings(database_url=URL, environment="local").environment == "local"
