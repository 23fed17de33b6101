"""Every `ticket.assigned` names the assignee's team (intake files the ticket under it): new,
dequeued, reopened and handed-back tickets alike; a lead's team is the one they lead when they
are not a member of one. Transfers name the new assignee's team the same way."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from routing_factories import (
    ADMIN,
    agent,
    consume,
    domain_rule,
    isolated_team,
    owner_of,
    published,
    resolved,
    team,
    ticket_created,
)

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import EventEnvelope, TicketKind, TicketReopened, TicketStatus

ASSIGNED = "helpdesk.ticket.assigned.v1"
TRANSFERRED = "helpdesk.ticket.transferred.v1"


async def team_of(routing: ServiceHarness, agent_id: str) -> str:
    response = await routing.client.get(f"/v1/agents/{agent_id}", headers=ADMIN)
    team_id: str = response.json()["team_id"]
    return team_id


async def presence(routing: ServiceHarness, agent_id: str, value: str) -> None:
    response = await routing.client.put(
        f"/v1/agents/{agent_id}/presence",
        headers=auth_headers("agent", sub=agent_id),
        json={"presence": value},
    )
    assert response.status_code == 200, response.text


async def assignments(routing: ServiceHarness, ticket_id: uuid.UUID) -> list[tuple[str, str | None]]:
    return [(a["agent_id"], a["team_id"]) for a in await published(routing, str(ticket_id), ASSIGNED)]


def reopened(ticket_id: uuid.UUID, previous_agent_id: str) -> EventEnvelope[object]:
    return EventEnvelope.wrap(
        TicketReopened(
            ticket_id=ticket_id,
            previous_status=TicketStatus.RESOLVED,
            previous_agent_id=uuid.UUID(previous_agent_id),
            reopen_count=1,
            reopened_at=datetime.now(UTC),
        ),
        source="/helpdesk/intake",
        subject=str(ticket_id),
    )


async def test_new_handed_back_dequeued_and_reopened_assignments_carry_the_team(
    routing: ServiceHarness,
) -> None:
    first, second = await isolated_team(routing, 1, 1)
    team_id = await team_of(routing, first)
    await presence(routing, second, "away")
    handed_back = ticket_created()
    await consume(routing, handed_back)  # new → first
    await presence(routing, second, "online")
    await presence(routing, first, "offline")  # untouched → queue → second
    assert await assignments(routing, handed_back.data.ticket_id) == [(first, team_id), (second, team_id)]

    dequeued = ticket_created()
    await consume(routing, dequeued)  # nobody free
    await presence(routing, first, "online")
    assert await assignments(routing, dequeued.data.ticket_id) == [(first, team_id)]

    await consume(routing, resolved(dequeued.data.ticket_id))
    await consume(routing, reopened(dequeued.data.ticket_id, first))
    assert await assignments(routing, dequeued.data.ticket_id) == [(first, team_id), (first, team_id)]


async def test_a_lead_outside_the_team_they_lead_files_tickets_under_that_team(
    routing: ServiceHarness,
) -> None:
    await isolated_team(routing)
    domain = f"疑難-{uuid.uuid4().hex[:8]}"
    keyword = await domain_rule(routing, domain)
    lead = await agent(routing, name="組長", roles=["lead"], domains=[], max_concurrent=2)
    led = await team(routing, lead_id=lead)
    member = await agent(routing, team_id=led, domains=[domain], max_concurrent=2)
    complaint = ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴")
    await consume(routing, complaint)
    assert await assignments(routing, complaint.data.ticket_id) == [(lead, led)]

    question = ticket_created(subject=f"{keyword} 保單")
    await consume(routing, question)
    assert await owner_of(routing, question.data.ticket_id) == member
    response = await routing.client.post(
        f"/v1/tickets/{question.data.ticket_id}/transfer",
        headers=auth_headers("lead", sub=lead),
        json={"to_agent_id": lead, "reason": "客戶要求主管處理"},
    )
    assert response.status_code == 201, response.text
    (transferred,) = await published(routing, str(question.data.ticket_id), TRANSFERRED)
    assert transferred["to_team_id"] == led
