"""Read views for leads and dashboards: the queue by team and priority, and agents' workload.

The queue has no team column: a queued ticket belongs to the team that holds its domain best
(`RoutingRepository.team_for_domain`), computed when the view is read so that it follows team
and skill edits. Tickets of an unknown domain, or of one no team holds, are counted under
`team_id: null`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from helpdesk_shared.chassis.pagination import PageParams, build_page
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import AgentPresence, Priority
from routing_service.errors import AgentNotFound
from routing_service.models import Agent, Assignment
from routing_service.repository import RoutingRepository
from routing_service.schemas import (
    AgentWorkload,
    AssignmentOut,
    PriorityDepth,
    QueueOverview,
    TeamQueue,
)


@dataclass
class _Tally:
    depth: int = 0
    by_priority: dict[str, int] = field(default_factory=dict)
    oldest: datetime | None = None

    def add(self, priority: str, count: int, oldest: datetime) -> None:
        self.depth += count
        self.by_priority[priority] = self.by_priority.get(priority, 0) + count
        self.oldest = oldest if self.oldest is None else min(self.oldest, oldest)

    def priorities(self) -> PriorityDepth:
        known = {p.value: self.by_priority.get(p.value, 0) for p in Priority}
        return PriorityDepth(**known)


def _waited(now: datetime, since: datetime | None) -> float | None:
    return max((now - since).total_seconds(), 0.0) if since is not None else None


async def queue_overview(uow: UnitOfWork) -> QueueOverview:
    repo = RoutingRepository(uow.session)
    now = datetime.now(UTC)
    rows = await repo.queue_summary()
    teams: dict[str | None, tuple[uuid.UUID, str] | None] = {}
    for domain in {row[0] for row in rows}:
        teams[domain] = await repo.team_for_domain(domain)
    total = _Tally()
    by_team: dict[uuid.UUID | None, _Tally] = {}
    names: dict[uuid.UUID | None, str | None] = {None: None}
    for domain, priority, count, oldest in rows:
        team = teams[domain]
        key = team[0] if team else None
        if team:
            names[key] = team[1]
        by_team.setdefault(key, _Tally()).add(priority, count, oldest)
        total.add(priority, count, oldest)
    ordered = sorted(by_team.items(), key=lambda item: (-item[1].depth, item[1].oldest or now))
    return QueueOverview(
        depth=total.depth,
        oldest_queued_at=total.oldest,
        oldest_wait_seconds=_waited(now, total.oldest),
        by_priority=total.priorities(),
        teams=[
            TeamQueue(
                team_id=key,
                team_name=names[key],
                depth=tally.depth,
                by_priority=tally.priorities(),
                oldest_queued_at=tally.oldest or now,
                oldest_wait_seconds=_waited(now, tally.oldest) or 0.0,
            )
            for key, tally in ordered
        ],
        as_of=now,
    )


def _workload(agent: Agent, assignments: Sequence[Assignment]) -> AgentWorkload:
    """Every ticket the agent holds is listed, answered ones too (they wait for the customer, and
    come back to this agent if reopened); ``active_tickets`` and ``utilisation`` count the slots
    taken — an answered ticket gave its slot back at the delivery (`Assignment.slot_released_at`)."""
    return AgentWorkload(
        agent_id=agent.id,
        name=agent.name,
        team_id=agent.team_id,
        presence=AgentPresence(agent.presence),
        active_tickets=agent.active_tickets,
        max_concurrent=agent.max_concurrent,
        utilisation=agent.active_tickets / agent.max_concurrent if agent.max_concurrent else None,
        assignments=[
            AssignmentOut(
                ticket_id=a.ticket_id,
                assigned_at=a.assigned_at,
                reason=a.reason,
                domain=a.domain,
                language=a.language,
                touched=a.touched_at is not None,
                touched_at=a.touched_at,
            )
            for a in assignments
        ],
    )


async def agent_workload(uow: UnitOfWork, agent_id: uuid.UUID) -> AgentWorkload:
    repo = RoutingRepository(uow.session)
    agent = await repo.agent(agent_id)
    if agent is None:
        raise AgentNotFound(f"No agent with id {agent_id}")
    return _workload(agent, await repo.assignments_of([agent_id]))


async def workload_page(
    uow: UnitOfWork,
    params: PageParams,
    *,
    team_id: uuid.UUID | None = None,
    presence: AgentPresence | None = None,
) -> tuple[list[AgentWorkload], str | None]:
    repo = RoutingRepository(uow.session)
    rows = await repo.agents_page(params, team_id=team_id, presence=presence)
    page, cursor = build_page(list(rows), params, key=lambda a: (a.created_at, a.id))
    held: dict[uuid.UUID, list[Assignment]] = {a.id: [] for a in page}
    for assignment in await repo.assignments_of(list(held)):
        held[assignment.agent_id].append(assignment)
    return [_workload(a, held[a.id]) for a in page], cursor
