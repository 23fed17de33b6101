"""Transfers (不得私自轉接): only the assignee or a lead, always with a reason, always audited."""

from __future__ import annotations

import uuid

from routing_factories import agent, consume, domain_rule, isolated_team, owner_of, ticket_created
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from routing_service.models import Agent, Assignment, Transfer


async def assigned_ticket(routing: ServiceHarness) -> tuple[uuid.UUID, str, str]:
    first, second = await isolated_team(routing, 2, 2)
    event = ticket_created()
    consumer = routing.runtime.consumer
    assert consumer is not None
    await consumer.handle_event(event, topic="helpdesk.intake")
    async with routing.uow() as uow:
        owner = str(
            await uow.session.scalar(
                select(Assignment.agent_id).where(Assignment.ticket_id == event.data.ticket_id)
            )
        )
    return event.data.ticket_id, owner, second if owner == first else first


async def test_the_assignee_transfers_with_a_reason_and_it_is_audited(routing: ServiceHarness) -> None:
    ticket_id, owner, other = await assigned_ticket(routing)

    response = await routing.client.post(
        f"/v1/tickets/{ticket_id}/transfer",
        headers=auth_headers("agent", sub=owner),
        json={"to_agent_id": other, "reason": "客戶要求粵語服務"},
    )

    assert response.status_code == 201, response.text
    async with routing.uow() as uow:
        audit = (
            await uow.session.execute(
                select(Transfer.from_agent_id, Transfer.to_agent_id, Transfer.reason).where(
                    Transfer.ticket_id == ticket_id
                )
            )
        ).one()
        loads = dict(
            (
                await uow.session.execute(
                    select(Agent.id, Agent.active_tickets).where(
                        Agent.id.in_([uuid.UUID(owner), uuid.UUID(other)])
                    )
                )
            ).all()
        )
        events = [
            r.event_type
            for r in await uow.session.execute(
                select(OUTBOX.c.event_type).where(OUTBOX.c.key == str(ticket_id)).order_by(OUTBOX.c.seq)
            )
        ]
    assert (str(audit.from_agent_id), str(audit.to_agent_id), audit.reason) == (
        owner,
        other,
        "客戶要求粵語服務",
    )
    assert (loads[uuid.UUID(owner)], loads[uuid.UUID(other)]) == (0, 1)
    assert events[-1] == "helpdesk.ticket.transferred.v1"


async def test_anyone_else_gets_403_and_a_reason_is_required(routing: ServiceHarness) -> None:
    ticket_id, owner, other = await assigned_ticket(routing)
    stranger = await routing.client.post(
        f"/v1/tickets/{ticket_id}/transfer",
        headers=auth_headers("agent", sub=other),
        json={"to_agent_id": other, "reason": "我想接"},
    )
    no_reason = await routing.client.post(
        f"/v1/tickets/{ticket_id}/transfer",
        headers=auth_headers("agent", sub=owner),
        json={"to_agent_id": other, "reason": ""},
    )
    blank_reason = await routing.client.post(
        f"/v1/tickets/{ticket_id}/transfer",
        headers=auth_headers("agent", sub=owner),
        json={"to_agent_id": other, "reason": "  \n "},
    )
    channel = await routing.client.post(
        f"/v1/tickets/{ticket_id}/transfer",
        headers=auth_headers("channel"),
        json={"to_agent_id": other, "reason": "x"},
    )
    assert (stranger.status_code, no_reason.status_code, channel.status_code) == (403, 422, 403)
    assert no_reason.json()["errors"][0]["field"] == "body.reason"
    assert blank_reason.status_code == 422  # an audit entry needs a reason someone can read
    assert blank_reason.json()["errors"][0]["field"] == "body.reason"
    async with routing.uow() as uow:
        assert (
            await uow.session.execute(select(Transfer).where(Transfer.ticket_id == ticket_id))
        ).first() is None


async def lead_of_team_of(routing: ServiceHarness, member: str) -> dict[str, str]:
    """A lead (an agent) made the lead of the member's team; their token."""
    lead_id = await agent(routing, name="組長", roles=["lead"], presence="offline")
    team_id = (await routing.client.get(f"/v1/agents/{member}", headers=auth_headers("admin"))).json()[
        "team_id"
    ]
    led = await routing.client.patch(
        f"/v1/teams/{team_id}", headers=auth_headers("admin"), json={"lead_id": lead_id}
    )
    assert led.status_code == 200, led.text
    return auth_headers("lead", sub=lead_id)


async def test_a_lead_may_transfer_but_not_to_an_unknown_or_full_agent(routing: ServiceHarness) -> None:
    ticket_id, owner, other = await assigned_ticket(routing)
    lead = await lead_of_team_of(routing, owner)  # a lead of the ticket's team: any lead may not
    unknown = await routing.client.post(
        f"/v1/tickets/{ticket_id}/transfer",
        headers=lead,
        json={"to_agent_id": str(uuid.uuid4()), "reason": "x"},
    )
    async with routing.uow() as uow:
        await uow.session.execute(
            Agent.__table__.update()
            .where(Agent.id == uuid.UUID(other))
            .values(active_tickets=Agent.max_concurrent)
        )
        await uow.commit()
    full = await routing.client.post(
        f"/v1/tickets/{ticket_id}/transfer", headers=lead, json={"to_agent_id": other, "reason": "x"}
    )
    unassigned = await routing.client.post(
        f"/v1/tickets/{uuid.uuid4()}/transfer", headers=lead, json={"to_agent_id": other, "reason": "x"}
    )
    assert (unknown.status_code, full.status_code, unassigned.status_code) == (422, 409, 404)


async def test_an_assignee_transfers_only_to_someone_with_the_tickets_domain(routing: ServiceHarness) -> None:
    await isolated_team(routing)
    keyword = await domain_rule(routing, "車險")
    skilled = [await agent(routing, domains=["車險"]), await agent(routing, domains=["車險"])]
    unskilled = await agent(routing, domains=["壽險"])
    event = ticket_created(subject=f"{keyword} 理賠")
    await consume(routing, event)
    ticket_id = event.data.ticket_id
    owner = await owner_of(routing, ticket_id)
    assert owner in skilled
    colleague = next(a for a in skilled if a != owner)

    def by(sub: str) -> dict[str, str]:
        return auth_headers("agent", sub=sub)

    refused = await routing.client.post(
        f"/v1/tickets/{ticket_id}/transfer",
        headers=by(owner),
        json={"to_agent_id": unskilled, "reason": "忙"},
    )
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "車險" in refused.json()["detail"]
    moved = await routing.client.post(
        f"/v1/tickets/{ticket_id}/transfer",
        headers=by(owner),
        json={"to_agent_id": colleague, "reason": "專長"},
    )
    assert moved.status_code == 201, moved.text
    # Nobody hands it to someone without its domain, not even an admin (nor a lead).
    by_admin = await routing.client.post(
        f"/v1/tickets/{ticket_id}/transfer",
        headers=auth_headers("admin"),
        json={"to_agent_id": unskilled, "reason": "組長調度"},
    )
    assert by_admin.status_code == 403, by_admin.text
    assert "車險" in by_admin.json()["detail"]
    assert await owner_of(routing, ticket_id) == colleague
    async with routing.uow() as uow:
        audited = (
            (
                await uow.session.execute(
                    select(Transfer.to_agent_id)
                    .where(Transfer.ticket_id == ticket_id)
                    .order_by(Transfer.transferred_at)
                )
            )
            .scalars()
            .all()
        )
        kept = (
            await uow.session.execute(select(Assignment.domain).where(Assignment.ticket_id == ticket_id))
        ).scalar_one()
    assert [str(a) for a in audited] == [colleague]
    assert kept == "車險"  # the ticket's domain moves with it
