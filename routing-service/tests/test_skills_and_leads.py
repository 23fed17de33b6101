"""Skill match (domain) before least load, and difficult tickets (疑難問題) to the team lead."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from routing_factories import ADMIN, agent, domain_rule, isolated_team, team, team_with_lead, ticket_created
from sqlalchemy import delete, select

from helpdesk_runtime.testing import ServiceHarness
from helpdesk_shared.contracts import EventEnvelope, TicketKind, TicketReopened, TicketStatus
from routing_service.models import Agent, Assignment, RoutingRule


async def handle(routing: ServiceHarness, event: EventEnvelope[Any]) -> uuid.UUID | None:
    consumer = routing.runtime.consumer
    assert consumer is not None
    await consumer.handle_event(event, topic="helpdesk.intake")
    async with routing.uow() as uow:
        return await uow.session.scalar(
            select(Assignment.agent_id).where(Assignment.ticket_id == event.data.ticket_id)
        )


async def test_complaints_go_to_the_team_lead(routing: ServiceHarness) -> None:
    lead, _ = await team_with_lead(routing, "auto-insurance", "home-insurance")
    complaint = ticket_created(kind=TicketKind.COMPLAINT)
    question = ticket_created()

    assert str(await handle(routing, complaint)) == lead
    assert str(await handle(routing, question)) != lead  # the lead is not everyone's first choice


async def test_a_rule_domain_sends_the_ticket_to_the_skilled_specialist(routing: ServiceHarness) -> None:
    _, (auto, home) = await team_with_lead(routing, "auto-insurance", "home-insurance")
    async with routing.uow() as uow:
        await uow.session.execute(delete(RoutingRule))
        await uow.commit()
    rule = await routing.client.post(
        "/v1/routing/rules",
        headers=ADMIN,
        json={"name": "房屋", "pattern": "房屋|住宅", "domain": "home-insurance"},
    )
    assert rule.status_code == 201, rule.text
    for _ in range(3):  # load the home specialist: skill must still win over least load
        await handle(routing, ticket_created(subject="房屋漏水理賠", description="住宅漏水"))

    owner = await handle(routing, ticket_created(subject="住宅火災", description="房屋火災怎麼理賠"))

    assert str(owner) == home
    async with routing.uow() as uow:
        loads = dict(
            (
                await uow.session.execute(
                    select(Agent.id, Agent.active_tickets).where(
                        Agent.id.in_([uuid.UUID(auto), uuid.UUID(home)])
                    )
                )
            ).all()
        )
    assert loads[uuid.UUID(home)] == 4
    assert loads[uuid.UUID(auto)] == 0


async def test_a_ticket_reopened_twice_goes_to_the_lead_and_a_lead_gets_its_own_back(
    routing: ServiceHarness,
) -> None:
    lead, (member,) = await team_with_lead(routing, "auto-insurance")
    ticket = ticket_created()
    assert str(await handle(routing, ticket)) == member

    def reopened(count: int, previous: str) -> EventEnvelope[Any]:
        return EventEnvelope.wrap(
            TicketReopened(
                ticket_id=ticket.data.ticket_id,
                previous_status=TicketStatus.RESOLVED,
                previous_agent_id=uuid.UUID(previous),
                reopen_count=count,
                reopened_at=datetime.now(UTC),
            ),
            source="/helpdesk/intake",
            subject=str(ticket.data.ticket_id),
        )

    assert str(await handle(routing, reopened(1, member))) == member
    assert str(await handle(routing, reopened(2, member))) == lead
    assert str(await handle(routing, reopened(3, lead))) == lead  # leads are not specialists, yet get it back


async def test_a_difficult_ticket_goes_to_the_lead_of_the_team_the_queue_files_its_domain_under(
    routing: ServiceHarness,
) -> None:
    """The domain's team is one thing everywhere: the highest summed skill level in it (what
    `GET /v1/queues` groups by), not merely the most agents holding it."""
    await isolated_team(routing)
    domain = f"lead-{uuid.uuid4().hex[:8]}"
    keyword = await domain_rule(routing, domain)
    leads = {}
    for name, levels in (("many-juniors", [1, 1]), ("one-expert", [5])):
        leads[name] = await agent(routing, name=f"組長 {name}", roles=["lead"])
        team_id = await team(routing, name=f"{name}-{uuid.uuid4()}", lead_id=leads[name])
        for level in levels:
            await agent(routing, team_id=team_id, domains=[domain], skill_levels={domain: level})

    complaint = ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴")
    assert str(await handle(routing, complaint)) == leads["one-expert"]
