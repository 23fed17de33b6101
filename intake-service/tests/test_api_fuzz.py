"""No request makes intake answer 500: schemathesis-generated requests, valid and invalid, for
every operation of its OpenAPI document (see `helpdesk_runtime.api_fuzz`). The e-mail endpoint
takes raw messages (`message/rfc822`): `test_email_channel` and `test_email_parsing` feed it the
real corpus, whole and damaged."""

from __future__ import annotations

import uuid

from intake_factories import assign

from helpdesk_runtime.api_fuzz import fuzz
from helpdesk_runtime.testing import ServiceHarness, auth_headers
from intake_service.app import create_app
from intake_service.settings import IntakeSettings

ROLES = ("channel", "agent", "reviewer", "lead", "kb_editor", "admin", "ops")


async def test_no_generated_request_is_answered_with_a_server_error(make_service) -> None:  # type: ignore[no-untyped-def]
    # An instance of its own: the requests create, change and erase whatever they may.
    async with make_service("intake", IntakeSettings, create_app, label="fuzz") as intake:
        await _fuzz(intake)


async def _fuzz(intake: ServiceHarness) -> None:
    agent = uuid.uuid4()
    caller = auth_headers(*ROLES, sub=str(agent))
    created = await intake.client.post(
        "/v1/tickets",
        headers=caller,
        json={
            "channel": "web",
            "kind": "complaint",
            "subject": "投訴：理賠拖延",
            "description": "三個月還沒有結果",
            "customer": {
                "external_id": f"c-{uuid.uuid4()}",
                "email": "a@example.com",
                "phone": "+886 912 345 678",
            },
            "attachments": [
                {
                    "name": "保單.pdf",
                    "content_type": "application/pdf",
                    "size_bytes": 10,
                    "url": "https://files.example.com/a.pdf",
                }
            ],
        },
    )
    assert created.status_code == 201, created.text
    ticket = created.json()
    await assign(intake, ticket["id"], agent)
    attachments = (await intake.client.get(f"/v1/tickets/{ticket['id']}/attachments", headers=caller)).json()

    report = await fuzz(
        intake.client,
        headers=caller,
        path_parameters={
            "ticket_id": ticket["id"],
            "customer_id": ticket["customer_id"],
            "attachment_id": attachments[0]["id"],
        },
        skip_paths={"/v1/channels/email/inbound"},
    )

    report.check(at_least_sent=300, at_least_succeeded=30)  # the rest: 409s of the state machine, 422s
