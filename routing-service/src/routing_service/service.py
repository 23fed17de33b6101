"""Routing use cases. Each runs in one unit of work and commits once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from helpdesk_shared.chassis.pagination import PageParams, build_page
from helpdesk_shared.chassis.problems import Conflict, InvalidInput, NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import Priority
from helpdesk_shared.contracts.intake import TicketCreated
from helpdesk_shared.contracts.routing import TicketAssigned, TicketQueued
from routing_service import classification
from routing_service.domain.assignment import Candidate, rank_candidates
from routing_service.models import Agent, Team
from routing_service.repository import RoutingRepository
from routing_service.schemas import AgentCreate, AgentOut, TeamCreate, TeamOut


class AgentNotFound(NotFound):
    slug, title = "agent-not-found", "Agent not found"


class TeamNotFound(InvalidInput):
    slug, title = "team-not-found", "Unknown team"


class AlreadyExists(Conflict):
    slug, title = "already-exists", "Already exists"


async def create_team(uow: UnitOfWork, body: TeamCreate) -> TeamOut:
    repo = RoutingRepository(uow.session)
    if await repo.team_named(body.name) is not None:
        raise AlreadyExists(f"A team named {body.name!r} already exists")
    team = Team(id=uuid.uuid4(), name=body.name, lead_id=body.lead_id, created_at=datetime.now(UTC))
    await repo.add(team)
    out = TeamOut.model_validate(team)
    await uow.commit()
    return out


async def list_teams(uow: UnitOfWork) -> list[TeamOut]:
    return [TeamOut.model_validate(t) for t in await RoutingRepository(uow.session).teams()]


async def create_agent(uow: UnitOfWork, body: AgentCreate) -> AgentOut:
    repo = RoutingRepository(uow.session)
    if body.team_id is not None and await repo.team(body.team_id) is None:
        raise TeamNotFound(f"No team with id {body.team_id}")
    if body.id is not None and await repo.agent(body.id) is not None:
        raise AlreadyExists(f"An agent with id {body.id} already exists")
    agent = Agent(
        id=body.id or uuid.uuid4(),
        name=body.name,
        team_id=body.team_id,
        roles=list(body.roles),
        domains=list(body.domains),
        languages=list(body.languages),
        max_concurrent=body.max_concurrent,
        active_tickets=0,
        presence=body.presence,
        created_at=datetime.now(UTC),
    )
    await repo.add(agent)
    out = AgentOut.model_validate(agent)
    await uow.commit()
    return out


async def get_agent(uow: UnitOfWork, agent_id: uuid.UUID) -> AgentOut:
    agent = await RoutingRepository(uow.session).agent(agent_id)
    if agent is None:
        raise AgentNotFound(f"No agent with id {agent_id}")
    return AgentOut.model_validate(agent)


async def list_agents(uow: UnitOfWork, params: PageParams) -> tuple[list[AgentOut], str | None]:
    rows = await RoutingRepository(uow.session).agents_page(params)
    page, cursor = build_page(list(rows), params, key=lambda a: (a.created_at, a.id))
    return [AgentOut.model_validate(a) for a in page], cursor


async def _candidates(
    repo: RoutingRepository, domain: str | None, difficult: bool
) -> list[tuple[Candidate, str]]:
    """Who to try, in order: the lead for difficult tickets (疑難問題), then skill, then anyone free."""
    ordered: list[tuple[Candidate, str]] = []
    if difficult and (lead := await repo.lead_for(domain)) is not None:
        ordered.append((lead, "difficult: the team lead of the ticket's domain"))
    if domain is not None:
        ordered += [
            (c, f"least-loaded online specialist in {domain}")
            for c in rank_candidates(await repo.available_specialists(domain))
        ]
    ordered += [
        (c, "least-loaded online specialist") for c in rank_candidates(await repo.available_specialists())
    ]
    return ordered


async def route_new_ticket(uow: UnitOfWork, ticket: TicketCreated) -> None:
    """Classify, then assign to the least-loaded online specialist with capacity, else queue.

    `ticket.classified` precedes `ticket.assigned` (same key, same transaction) whenever the
    classification says something intake does not already know; a rule can raise the queue
    priority to urgent.
    """
    repo = RoutingRepository(uow.session)
    if await repo.assignment(ticket.ticket_id) is not None:
        return
    now = datetime.now(UTC)
    decision, version = await classification.classify_ticket(uow.session, ticket)
    priority = Priority.URGENT if decision.urgent else ticket.priority
    if decision.informative:
        event = classification.classified_event(ticket, decision, version, now)
        uow.publish(event, subject=str(ticket.ticket_id))
    for candidate, reason in await _candidates(repo, decision.domain, decision.difficult):
        if await repo.take_capacity(candidate.agent_id, now):
            await repo.assign(ticket.ticket_id, candidate.agent_id, reason, now)
            uow.publish(
                TicketAssigned(
                    ticket_id=ticket.ticket_id,
                    agent_id=candidate.agent_id,
                    assigned_at=now,
                    reason=reason,
                    difficult=decision.difficult,
                ),
                subject=str(ticket.ticket_id),
            )
            await uow.commit()
            return
    await repo.enqueue(ticket.ticket_id, priority, priority.rank, now)
    uow.publish(
        TicketQueued(
            ticket_id=ticket.ticket_id,
            priority=priority,
            queued_at=now,
            reason="no online specialist with free capacity",
        ),
        subject=str(ticket.ticket_id),
    )
    await uow.commit()
