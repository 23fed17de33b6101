"""Data access for routing. Repositories flush, never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk_shared.chassis.pagination import PageParams, keyset_page
from helpdesk_shared.contracts.enums import AgentPresence
from routing_service.domain.assignment import SPECIALIST_ROLES, Candidate
from routing_service.models import Agent, Assignment, QueueEntry, Team


class RoutingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: Team | Agent) -> None:
        self.session.add(row)
        await self.session.flush()

    async def team(self, team_id: uuid.UUID) -> Team | None:
        return await self.session.get(Team, team_id)

    async def team_named(self, name: str) -> Team | None:
        return (await self.session.execute(select(Team).where(Team.name == name))).scalar_one_or_none()

    async def teams(self) -> Sequence[Team]:
        return (await self.session.execute(select(Team).order_by(Team.name))).scalars().all()

    async def agent(self, agent_id: uuid.UUID) -> Agent | None:
        return await self.session.get(Agent, agent_id)

    async def agents_page(self, params: PageParams) -> Sequence[Agent]:
        stmt = keyset_page(select(Agent), created_col=Agent.created_at, id_col=Agent.id, params=params)
        return (await self.session.execute(stmt)).scalars().all()

    async def available_specialists(self, domain: str | None = None) -> list[Candidate]:
        """Online specialists with a free slot; with `domain`, only those who have that skill."""
        stmt = select(Agent.id, Agent.active_tickets, Agent.max_concurrent, Agent.last_assigned_at).where(
            Agent.presence == AgentPresence.ONLINE,
            Agent.roles.overlap(list(SPECIALIST_ROLES)),
            Agent.active_tickets < Agent.max_concurrent,
        )
        if domain is not None:
            stmt = stmt.where(Agent.domains.any_() == domain)
        rows = await self.session.execute(stmt)
        return [Candidate(r.id, r.active_tickets, r.max_concurrent, r.last_assigned_at) for r in rows]

    async def online_candidate(self, agent_id: uuid.UUID | None) -> Candidate | None:
        """The agent as a candidate if online (capacity is checked when the slot is taken)."""
        if agent_id is None:
            return None
        row = (
            await self.session.execute(
                select(Agent.id, Agent.active_tickets, Agent.max_concurrent, Agent.last_assigned_at).where(
                    Agent.id == agent_id, Agent.presence == AgentPresence.ONLINE
                )
            )
        ).first()
        return (
            Candidate(row.id, row.active_tickets, row.max_concurrent, row.last_assigned_at) if row else None
        )

    async def lead_of(self, agent_id: uuid.UUID | None) -> uuid.UUID | None:
        """The lead of the agent's team."""
        if agent_id is None:
            return None
        return await self.session.scalar(
            select(Team.lead_id).join(Agent, Agent.team_id == Team.id).where(Agent.id == agent_id)
        )

    async def lead_for(self, domain: str | None) -> Candidate | None:
        """The lead of the team holding most specialists in `domain` (any team with a lead if None)."""
        skilled = (
            func.count(Agent.id).filter(Agent.domains.any_() == domain) if domain else func.count(Agent.id)
        )
        team = (
            select(Team.lead_id)
            .join(Agent, Agent.team_id == Team.id)
            .where(Team.lead_id.is_not(None))
            .group_by(Team.id, Team.lead_id)
            .order_by(skilled.desc(), Team.created_at)
            .limit(1)
        ).scalar_subquery()
        row = (
            await self.session.execute(
                select(Agent.id, Agent.active_tickets, Agent.max_concurrent, Agent.last_assigned_at).where(
                    Agent.id == team, Agent.presence == AgentPresence.ONLINE
                )
            )
        ).first()
        return (
            Candidate(row.id, row.active_tickets, row.max_concurrent, row.last_assigned_at) if row else None
        )

    async def take_capacity(self, agent_id: uuid.UUID, now: datetime) -> bool:
        """Atomically claim one slot; False if the agent filled up or went away meanwhile."""
        result = await self.session.execute(
            update(Agent)
            .where(
                Agent.id == agent_id,
                Agent.presence == AgentPresence.ONLINE,
                Agent.active_tickets < Agent.max_concurrent,
            )
            .values(active_tickets=Agent.active_tickets + 1, last_assigned_at=now)
            .returning(Agent.id)
        )
        return result.first() is not None

    async def assignment(self, ticket_id: uuid.UUID) -> Assignment | None:
        return await self.session.get(Assignment, ticket_id)

    async def assign(self, ticket_id: uuid.UUID, agent_id: uuid.UUID, reason: str, now: datetime) -> None:
        self.session.add(Assignment(ticket_id=ticket_id, agent_id=agent_id, reason=reason, assigned_at=now))
        await self.session.flush()

    async def enqueue(self, ticket_id: uuid.UUID, priority: str, rank: int, now: datetime) -> None:
        await self.session.execute(
            pg_insert(QueueEntry)
            .values(ticket_id=ticket_id, priority=priority, priority_rank=rank, queued_at=now)
            .on_conflict_do_nothing()
        )

    async def release_assignment(self, ticket_id: uuid.UUID) -> uuid.UUID | None:
        """Drop the ticket's assignment and give its agent the slot back; returns that agent."""
        result = await self.session.execute(
            delete(Assignment).where(Assignment.ticket_id == ticket_id).returning(Assignment.agent_id)
        )
        agent_id = result.scalar_one_or_none()
        if agent_id is not None:
            await self.session.execute(
                update(Agent)
                .where(Agent.id == agent_id, Agent.active_tickets > 0)
                .values(active_tickets=Agent.active_tickets - 1)
            )
        return agent_id

    async def dequeue(self, ticket_id: uuid.UUID) -> None:
        await self.session.execute(delete(QueueEntry).where(QueueEntry.ticket_id == ticket_id))

    async def next_queued(self) -> QueueEntry | None:
        """Highest priority, then oldest; skipped if another replica is assigning it right now."""
        stmt = (
            select(QueueEntry)
            .order_by(QueueEntry.priority_rank.desc(), QueueEntry.queued_at, QueueEntry.ticket_id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def queue_depth(self) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(QueueEntry)) or 0)
