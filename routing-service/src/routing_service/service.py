"""Routing use cases. Each runs in one unit of work and commits once."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from sqlalchemy import update

from helpdesk_shared.chassis.auth import Principal
from helpdesk_shared.chassis.pagination import PageParams, build_page
from helpdesk_shared.chassis.problems import Conflict
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import AgentPresence, Priority, Role
from helpdesk_shared.contracts.intake import TicketCreated
from routing_service import classification, collaborators, presence, sla
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
from routing_service.models import Agent, Assignment, Team
from routing_service.presence import announce_status
from routing_service.repository import Lead, RoutingRepository
from routing_service.schemas import (
    AgentCreate,
    AgentOut,
    AgentUpdate,
    PresenceUpdate,
    TeamCreate,
    TeamOut,
    TeamUpdate,
)
from routing_service.transfers import Profile, missing_qualifications

__all__ = [  # the problems stay importable from here, where the API has always found them
    "AgentNotFound",
    "AlreadyExists",
    "InvalidSkillLevels",
    "TeamNotFound",
    "UnknownAgent",
    "UnknownTeam",
]


PROFILE_CHANGED_REASON = "returned to the queue: the assignee's roles, domains or languages no longer fit it"
"""The ``ticket.queued`` reason of an untouched ticket handed back by an edit of its agent's skills."""


class AgentDeactivated(Conflict):
    slug, title = "agent-deactivated", "The agent was deactivated"


class AgentLeadsTeam(Conflict):
    slug, title = "agent-leads-team", "The agent leads a team"


class TeamNotEmpty(Conflict):
    slug, title = "team-not-empty", "Agents still belong to the team"


async def create_team(uow: UnitOfWork, body: TeamCreate) -> TeamOut:
    repo = RoutingRepository(uow.session)
    if await repo.team_named(body.name) is not None:
        raise AlreadyExists(f"A team named {body.name!r} already exists")
    if body.lead_id is not None and (lead := await repo.agent(body.lead_id)) and lead.deactivated_at:
        raise UnknownAgent(
            f"Agent {body.lead_id} was deactivated",
            errors=[_field_error("body.lead_id", "a deactivated agent leads no team")],
        )
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
    # Locked: a concurrent deactivation of the new lead waits for this edit (and then refuses).
    lead = await repo.lock_agent(body.lead_id) if body.lead_id is not None else None
    if body.lead_id is not None and (lead is None or lead.deactivated_at is not None):
        raise UnknownAgent(
            f"No active agent with id {body.lead_id}",
            errors=[_field_error("body.lead_id", "not an existing, active agent")],
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


async def delete_team(uow: UnitOfWork, team_id: uuid.UUID) -> None:
    """Delete a team nobody belongs to any more (409 while agents do: move or remove them first).
    Its lead, if any, keeps their tickets; difficult tickets waiting for them, now no team's lead,
    become any specialist's to take."""
    repo = RoutingRepository(uow.session)
    team = await uow.session.get(Team, team_id, with_for_update=True)
    if team is None:
        raise UnknownTeam(f"No team with id {team_id}")
    if members := await repo.team_size(team_id):
        raise TeamNotEmpty(
            f"{members} agent(s) still belong to {team.name}: move them to another team "
            "(PATCH /v1/agents/{id}) or remove them (DELETE /v1/agents/{id}) first"
        )
    lead_id = team.lead_id
    await uow.session.delete(team)
    await uow.flush()
    if lead_id is not None:
        await repo.hand_over_waiting(lead_id, None)
        await drain_queue(uow, repo, datetime.now(UTC))
    await uow.commit()


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
    now = datetime.now(UTC)
    if agent.presence == AgentPresence.ONLINE:  # a new agent online is capacity freed: drain the queue
        await drain_queue(uow, repo, now)
        await uow.session.refresh(agent)
    announce_status(uow, agent, None, now)  # a new agent: no previous presence
    out = AgentOut.model_validate(agent)
    await uow.commit()
    return out


async def update_agent(uow: UnitOfWork, agent_id: uuid.UUID, body: AgentUpdate) -> AgentOut:
    """Change what was sent (see `AgentUpdate`); a capacity or team change is announced, and the
    queue is drained since more capacity, a new role or a new skill can make the agent a candidate.
    A deactivated agent is not changed (409).

    A role, domain or language taken away sends the agent's untouched tickets it no longer covers
    back to the queue and on to whoever is free (`_hand_back_uncovered`). That also undoes, after
    the fact, a run of new tickets that read the agent's old profile and committed its assignment
    before this edit locked the agent; a run that commits after this edit (it read the profile
    before, and waited for the agent's row) still assigns by the old profile: the batch's take
    re-checks presence and capacity only."""
    repo = RoutingRepository(uow.session)
    if body.roles is not None or body.domains is not None or body.languages is not None:
        # Skills taken away hand tickets back: their assignments first, then the agent (the usual order).
        await repo.lock_assignments_of(agent_id)
    agent = await repo.lock_agent(agent_id)
    if agent is None:
        raise AgentNotFound(f"No agent with id {agent_id}")
    if agent.deactivated_at is not None:
        raise AgentDeactivated(
            f"{agent.name} was deactivated on {agent.deactivated_at:%Y-%m-%d}: a removed agent is not edited"
        )
    before = Profile(list(agent.roles), list(agent.domains), list(agent.languages))
    sent = body.model_fields_set
    if "team_id" in sent and body.team_id is not None and await repo.team(body.team_id) is None:
        raise TeamNotFound(f"No team with id {body.team_id}")
    domains = list(body.domains) if body.domains is not None else list(agent.domains)
    if body.skill_levels is not None:
        _check_levels(domains, body.skill_levels)
        levels = dict(body.skill_levels)
    else:
        levels = {d: level for d, level in (agent.skill_levels or {}).items() if d in domains}
    previous_capacity, previous_team = agent.max_concurrent, agent.team_id
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
    await _hand_back_uncovered(uow, repo, agent, before, now)
    await drain_queue(uow, repo, now)
    agent = await repo.lock_agent(agent_id)  # re-read: the hand-back and the drain changed its load
    assert agent is not None
    if agent.max_concurrent != previous_capacity or agent.team_id != previous_team:
        announce_status(uow, agent, AgentPresence(agent.presence), now)
    out = AgentOut.model_validate(agent)
    await uow.commit()
    return out


async def _hand_back_uncovered(
    uow: UnitOfWork, repo: RoutingRepository, agent: Agent, before: Profile, now: datetime
) -> list[uuid.UUID]:
    """The untouched tickets (holding a slot, no work in them) that the agent could work with the
    profile ``before`` and no longer can — a role, a domain or a language of theirs taken away —
    go back to the queue (`PROFILE_CHANGED_REASON`), as a transfer would refuse them now: see
    `transfers.missing_qualifications`. A lead answerable for a ticket keeps it, as a transfer may
    give them any. Tickets they never matched (given to them as anyone free) stay. Returns those
    handed back; the caller drains the queue."""
    after = Profile(list(agent.roles), list(agent.domains), list(agent.languages))
    if all(set(was) <= set(now_) for was, now_ in zip(before, after, strict=True)):
        return []  # nothing taken away
    uncovered = []
    for held in await repo.assignments_of([agent.id]):
        if held.touched_at is not None or held.slot_released_at is not None:
            continue
        lost = set(missing_qualifications(after, held.domain, held.language)) - set(
            missing_qualifications(before, held.domain, held.language)
        )
        if lost and agent.id not in await collaborators.responsible_leads(uow.session, agent.id, held.domain):
            uncovered.append(held.ticket_id)
    if not uncovered:
        return []
    return await presence._hand_back_untouched(
        uow, repo, agent.id, now, reason=PROFILE_CHANGED_REASON, only=uncovered
    )


async def deactivate_agent(uow: UnitOfWork, agent_id: uuid.UUID, principal: Principal) -> None:
    """Remove an agent (idempotent). The row stays — assignments, transfers and collaborators of
    the past name it — stamped `deactivated_at`: the agent is offline for good and in no team, so
    no assignment path considers them and no team counts their skills; they are left out of
    `GET /v1/agents` unless asked for. A team's lead cannot be removed (409): give the team another
    lead first.

    A removed agent works nothing: every ticket holding one of their slots — worked on or not —
    goes back to the queue and on to whoever is free, by the offline hand-back (`presence`;
    difficult tickets to their lead by the queue's rules), and they leave every ticket's
    collaborators. (An answered ticket waiting for its customer holds no slot and is left as the
    hand-back leaves it: the customer's reply reopens it, to someone online — never a removed
    agent.) Announced as `agent.status_changed` (offline, under the team they left)."""
    session = uow.session
    repo = RoutingRepository(session)
    await collaborators.lock_tickets_of(session, agent_id)  # assignments, then the agent
    agent = await repo.lock_agent(agent_id)
    if agent is None:
        raise AgentNotFound(f"No agent with id {agent_id}")
    if agent.deactivated_at is not None:
        return
    if led := await repo.teams_led_by(agent_id):
        raise AgentLeadsTeam(
            f"{agent.name} leads {', '.join(t.name for t in led)}: give the team another lead "
            "(PATCH /v1/teams/{id}) before removing them"
        )
    now = datetime.now(UTC)
    previous = AgentPresence(agent.presence)
    agent.presence, agent.deactivated_at = AgentPresence.OFFLINE, now
    await uow.flush()
    # The offline hand-back takes back what was not worked on: here everything goes.
    await session.execute(update(Assignment).where(Assignment.agent_id == agent_id).values(touched_at=None))
    await presence._hand_back_untouched(uow, repo, agent_id, now, reason=presence.REMOVED_REASON)
    await collaborators.drop_everywhere(uow, agent_id, changed_by=principal.user_id)
    await drain_queue(uow, repo, now)
    agent = await repo.lock_agent(agent_id)  # re-read: the hand-back changed its load
    assert agent is not None
    agent.active_tickets = 0  # no slot is held now, whatever the count had drifted to
    announce_status(uow, agent, previous, now)
    agent.team_id = None  # after the announcement, which names the team they left
    await uow.commit()


async def ensure_presence_may_change(
    uow: UnitOfWork, agent_id: uuid.UUID, body: PresenceUpdate, principal: Principal
) -> None:
    """A deactivated agent's presence stays offline (409). Checked before `presence.set_presence`,
    in its unit of work, for the callers it would not refuse (it answers others 403 before looking
    the agent up, so that they cannot probe ids)."""
    if not principal.has_any({Role.LEAD, Role.ADMIN}) and principal.user_id != agent_id:
        return
    repo = RoutingRepository(uow.session)
    # Going online or away: the agent's row is locked as a deactivation locks it, so one waits for
    # the other. Going offline locks the agent's tickets first (as a deactivation does): unlocked,
    # which is harmless — a deactivated agent is offline already.
    offline = body.presence == AgentPresence.OFFLINE
    agent = await (repo.agent(agent_id) if offline else repo.lock_agent(agent_id))
    if agent is not None and agent.deactivated_at is not None:
        raise AgentDeactivated(f"{agent.name} was deactivated: their presence stays offline")


async def get_agent(uow: UnitOfWork, agent_id: uuid.UUID) -> AgentOut:
    agent = await RoutingRepository(uow.session).agent(agent_id)
    if agent is None:
        raise AgentNotFound(f"No agent with id {agent_id}")
    return AgentOut.model_validate(agent)


async def list_agents(
    uow: UnitOfWork, params: PageParams, *, include_inactive: bool = False
) -> tuple[list[AgentOut], str | None]:
    rows = await RoutingRepository(uow.session).agents_page(params, include_inactive=include_inactive)
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
    if classification.announces_classification(decision, timers is not None):
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
