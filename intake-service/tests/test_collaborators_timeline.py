"""A ticket's collaborators, as routing announces them, on the staff timeline only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from intake_factories import CHANNEL, assign, post_ticket
from intake_factories import deliver as deliver_from
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import INBOX, OUTBOX
from helpdesk_shared.contracts import EventEnvelope, TicketCollaboratorsChanged

LEAD = auth_headers("lead")


async def deliver(intake: ServiceHarness, payload: TicketCollaboratorsChanged) -> EventEnvelope[Any]:
    return await deliver_from(intake, payload, service="routing")


async def new_ticket(intake: ServiceHarness) -> str:
    return await post_ticket(
        intake, kind="complaint", subject="理賠拖延", description="理賠申請一個月沒有回音"
    )


async def timeline(intake: ServiceHarness, ticket_id: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items


async def test_collaborator_changes_are_on_the_staff_timeline_but_not_the_customers(
    intake: ServiceHarness,
) -> None:
    ticket_id = await new_ticket(intake)
    await assign(intake, ticket_id)
    lead_id, helper, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    await deliver(
        intake,
        TicketCollaboratorsChanged(
            ticket_id=uuid.UUID(ticket_id),
            collaborator_ids=[helper, other],
            changed_by=lead_id,
            changed_at=datetime.now(UTC),
        ),
    )
    await deliver(
        intake,
        TicketCollaboratorsChanged(
            ticket_id=uuid.UUID(ticket_id), collaborator_ids=[], changed_by=None, changed_at=datetime.now(UTC)
        ),
    )

    entries = [i for i in await timeline(intake, ticket_id, LEAD) if i["kind"] == "collaborators"]
    assert [(e["actor"], e["data"]) for e in entries] == [
        (str(lead_id), {"collaborator_ids": [str(helper), str(other)]}),
        ("routing", {"collaborator_ids": []}),
    ]
    shown_to_channel = await timeline(intake, ticket_id, CHANNEL)
    assert "collaborators" not in {i["kind"] for i in shown_to_channel}
    assert all(str(helper) not in str(i) for i in shown_to_channel)


async def test_a_change_for_an_unknown_ticket_is_ignored_not_dead_lettered(intake: ServiceHarness) -> None:
    ghost = uuid.uuid4()

    event = await deliver(
        intake,
        TicketCollaboratorsChanged(
            ticket_id=ghost, collaborator_ids=[uuid.uuid4()], changed_by=None, changed_at=datetime.now(UTC)
        ),
    )

    async with intake.uow() as uow:
        outcome = await uow.session.scalar(select(INBOX.c.outcome).where(INBOX.c.event_id == event.id))
        dead = (await uow.session.execute(select(OUTBOX.c.event_id).where(OUTBOX.c.key == str(ghost)))).all()
    assert (outcome, dead) == ("processed", [])
