"""No request makes review answer 500: schemathesis-generated requests, valid and invalid, for every
operation of its OpenAPI document (see `helpdesk_runtime.api_fuzz`)."""

from __future__ import annotations

from helpdesk_runtime.api_fuzz import fuzz
from helpdesk_runtime.testing import auth_headers
from review_service.app import create_app
from review_service.settings import ReviewSettings

ROLES = ("channel", "agent", "reviewer", "lead", "kb_editor", "admin", "ops")


async def test_no_generated_request_is_answered_with_a_server_error(make_service) -> None:  # type: ignore[no-untyped-def]
    async with make_service("review", ReviewSettings, create_app, label="fuzz") as service:
        report = await fuzz(service.client, headers=auth_headers(*ROLES))

    assert not report.errors, "\n".join(map(str, report.errors))
    assert report.answered(200, 300) > 0, report.statuses
