"""Routing use cases. Each runs in one unit of work and commits once."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from helpdesk_shared.chassis.pagination import PageParams, build_page
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import AgentPresence, Priority
from helpdesk_shared.contracts.intake import TicketCreated
from routing_service import classification, sla
from routing_service.capacity import assign_first_free, drain_queue, queue_ticket, waits_for
from routing_service.domain.assignment import Candidate, Match, order_candidates
from routing_service.errors import (
    AgentNotFound,
    AlreadyExists,
    InvalidSkillLevels,
    TeamNotFound,
    UnknownAgent,
    UnknownTeam,
)
from routing_service.models import Agent, Team
from routing_service.presence import announce_status
from routing_service.repository import Lead, RoutingRepository
from routing_service.schemas import AgentCreate, AgentOut, AgentUpdate, TeamCreate, TeamOut, TeamUpdate

__all__ = [  # the problems stay importable from here, where the API has always found them
    "AgentNotFound",
    "AlreadyExists",
    "InvalidSkillLevels",
    "TeamNotFound",
    "UnknownAgent",
    "UnknownTeam",
]


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


async def update_team(uow: UnitOfWork, team_id: uuid.UUID, body: TeamUpdate) -> TeamOut:
    """Rename a team or change its lead. Unlike at creation, a new lead must be a known agent:
    creation takes ids ahead of the agents (seeding), an edit is a person choosing from a list."""
    repo = RoutingRepository(uow.session)
    team = await uow.session.get(Team, team_id, with_for_update=True)
    if team is None:
        raise UnknownTeam(f"No team with id {team_id}")
    if body.name is not None and body.name != team.name and await repo.team_named(body.name) is not None:
        raise AlreadyExists(f"A team named {body.name!r} already exists")
    if body.lead_id is not None and await repo.agent(body.lead_id) is None:
        raise UnknownAgent(
            f"No agent with id {body.lead_id}", errors=[_field_error("body.lead_id", "not an existing agent")]
        )
    if body.name is not None:
        team.name = body.name
    previous_lead = team.lead_id
    if "lead_id" in body.model_fields_set:
        team.lead_id = body.lead_id
    await uow.flush()
    if team.lead_id != previous_lead:
        # Difficult tickets waiting for a lead who no longer leads anyone now wait for the new
        # lead, and either may be free to take some right away.
        if previous_lead is not None:
            await repo.hand_over_waiting(previous_lead, team.lead_id)
        await drain_queue(uow, repo, datetime.now(UTC))
    out = TeamOut.model_validate(team)
    await uow.commit()
    return out


async def create_agent(uow: UnitOfWork, body: AgentCreate) -> AgentOut:
    repo = RoutingRepository(uow.session)
    _check_levels(body.domains, body.skill_levels)
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
        skill_levels=dict(body.skill_levels),
        languages=list(body.languages),
        max_concurrent=body.max_concurrent,
        active_tickets=0,
        presence=body.presence,
        schedule=body.schedule.model_dump(mode="json") if body.schedule else None,
        created_at=datetime.now(UTC),
    )
    await repo.add(agent)
    if agent.presence == AgentPresence.ONLINE:  # a new agent online is capacity freed: drain the queue
        await drain_queue(uow, repo, datetime.now(UTC))
        await uow.session.refresh(agent)
    out = AgentOut.model_validate(agent)
    await uow.commit()
    return out


async def update_agent(uow: UnitOfWork, agent_id: uuid.UUID, body: AgentUpdate) -> AgentOut:
    """Change what was sent (see `AgentUpdate`); a capacity change is announced, and the queue is
    drained since more capacity, a new role or a new skill can make the agent a candidate."""
    repo = RoutingRepository(uow.session)
    agent = await repo.lock_agent(agent_id)
    if agent is None:
        raise AgentNotFound(f"No agent with id {agent_id}")
    sent = body.model_fields_set
    if "team_id" in sent and body.team_id is not None and await repo.team(body.team_id) is None:
        raise TeamNotFound(f"No team with id {body.team_id}")
    domains = list(body.domains) if body.domains is not None else list(agent.domains)
    if body.skill_levels is not None:
        _check_levels(domains, body.skill_levels)
        levels = dict(body.skill_levels)
    else:
        levels = {d: level for d, level in (agent.skill_levels or {}).items() if d in domains}
    previous_capacity = agent.max_concurrent
    if body.name is not None:
        agent.name = body.name
    if "team_id" in sent:
        agent.team_id = body.team_id
    if body.roles is not None:
        agent.roles = list(body.roles)
    agent.domains, agent.skill_levels = domains, levels
    if body.languages is not None:
        agent.languages = list(body.languages)
    if body.max_concurrent is not None:
        agent.max_concurrent = body.max_concurrent
    if "schedule" in sent:
        agent.schedule = body.schedule.model_dump(mode="json") if body.schedule else None
    await uow.flush()
    now = datetime.now(UTC)
    await drain_queue(uow, repo, now)
    agent = await repo.lock_agent(agent_id)  # re-read: the drain may have given it tickets
    assert agent is not None
    if agent.max_concurrent != previous_capacity:
        announce_status(uow, agent, AgentPresence(agent.presence), now)
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


def _check_levels(domains: Iterable[str], levels: Mapping[str, int]) -> None:
    held = set(domains)
    if stray := [domain for domain in levels if domain not in held]:
        raise InvalidSkillLevels(
            f"Levels given for domains the agent does not hold: {', '.join(stray)}",
            errors=[_field_error(f"body.skill_levels.{d}", "not among the agent's domains") for d in stray],
        )


def _field_error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message, "type": "value_error"}


def assignment_reason(match: Match, domain: str | None, language: str | None) -> str:
    if match == "domain+language":
        return f"least-loaded online specialist in {domain} speaking {language}"
    if match == "domain":
        return f"least-loaded online specialist in {domain}"
    return "least-loaded online specialist"


LEAD_REASON = "difficult: the team lead of the ticket's domain"


async def _candidates(
    repo: RoutingRepository, domain: str | None, language: str | None, lead: Lead | None
) -> list[tuple[Candidate, str]]:
    """Who to try, in order. A difficult ticket's lead when online — only them: if they are full
    the ticket waits for them (see `capacity`). Otherwise skill (domain and language, then
    domain), then anyone free."""
    if (waiting_for := waits_for(lead)) is not None:
        return [(waiting_for, LEAD_REASON)]
    return [
        (candidate, assignment_reason(match, domain, language))
        for candidate, match in order_candidates(
            await repo.available_specialists(), domain=domain, language=language
        )
    ]


async def route_new_ticket(uow: UnitOfWork, ticket: TicketCreated) -> None:
    """Classify, start the SLA clocks, then assign to the best free specialist (a difficult
    ticket: its team lead), else queue — by the time the ticket was created, not processed.

    The clocks start from routing's own decision — a rule or the model can make a ticket urgent
    or difficult, and the matching SLA policy must see that. `ticket.classified` (with the matched
    policy and due times) precedes `ticket.assigned` (same key, same transaction) whenever the
    classification says something intake does not already know.
    """
    repo = RoutingRepository(uow.session)
    if await repo.already_routed(ticket.ticket_id):
        return  # replayed under a new event id: the first routing stands
    now = datetime.now(UTC)
    decision, version = await classification.classify_ticket(uow.session, ticket)
    domain, language, difficult = decision.domain, ticket.language, decision.difficult
    priority = Priority.URGENT if decision.urgent else ticket.priority
    text = classification.ticket_text(ticket)
    if not await repo.remember(
        ticket.ticket_id,
        domain=domain,
        language=language,
        text=text,
        now=now,
        priority=priority,
        difficult=difficult,
        waiting_since=ticket.created_at,
    ):
        return  # a concurrent delivery of the same ticket got there first
    timers = await sla.start_timers(uow, ticket, difficult=difficult, priority=priority)
    if decision.informative:
        event = classification.classified_event(ticket, decision, version, now, timers)
        uow.publish(event, subject=str(ticket.ticket_id))
    await assign_or_queue(
        uow,
        repo,
        ticket.ticket_id,
        domain=domain,
        language=language,
        difficult=difficult,
        priority=priority,
        waiting_since=ticket.created_at,
        now=now,
    )
    await uow.commit()


async def assign_or_queue(
    uow: UnitOfWork,
    repo: RoutingRepository,
    ticket_id: uuid.UUID,
    *,
    domain: str | None,
    language: str | None,
    difficult: bool,
    priority: Priority,
    waiting_since: datetime,
    now: datetime,
) -> None:
    """A new ticket to the best free specialist (a difficult one: its team lead, or waiting for
    them), else the queue.

    Stamped when decided, not with ``now`` (when the event was taken up): an assignment after
    the candidates were read, a queueing after every slot was found taken — so a ticket is
    never queued "before" a concurrent transaction's assignment that filled the last slot."""
    lead = await repo.lead_for(domain) if difficult else None
    candidates = await _candidates(repo, domain, language, lead)
    if not await assign_first_free(
        uow,
        repo,
        ticket_id,
        candidates,
        now=max(now, datetime.now(UTC)),
        difficult=difficult,
        domain=domain,
        language=language,
    ):
        await queue_ticket(
            uow,
            repo,
            ticket_id,
            priority=priority,
            waiting_since=waiting_since,
            now=max(now, datetime.now(UTC)),
            reason="difficult: its team lead is busy"
            if waits_for(lead)
            else "no online specialist with free capacity",
            domain=domain,
            language=language,
            difficult=difficult,
            lead=lead,
        )
