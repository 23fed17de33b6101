"""Presence (online / away / offline) and what each change does to tickets.

* **online** — the agent takes new tickets; the queue is drained at once.
* **away** — the agent keeps their tickets and takes no new ones. The queue is drained too: a
  lead's leaving lets specialists take the difficult tickets that were waiting for them.
* **offline** — as away, and the tickets the agent has not worked on yet (no answer submitted by
  them or a collaborator, see `touch`; none delivered) go back to the queue, each announced as
  `ticket.queued`, and are offered to the other free agents right away by the normal drain. They
  keep their place in the queue (the customer's wait counts from the ticket's creation or
  reopening) and their priority and difficulty. Tickets with work in them stay: moving a
  half-written answer to a stranger costs more than waiting for its author.

Every change of presence or capacity is announced as `agent.status_changed` (key = agent id).
The agent's row is locked for the change, so a concurrent assignment either completes before
it (and an offline agent's new ticket is handed back with the others) or sees the new presence.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime

from helpdesk_shared.chassis.auth import Principal
from helpdesk_shared.chassis.problems import Forbidden
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import AgentPresence, Role
from helpdesk_shared.contracts.review import AnswerSubmitted
from helpdesk_shared.contracts.routing import AgentStatusChanged
from routing_service.capacity import drain_queue, queue_ticket
from routing_service.errors import AgentNotFound
from routing_service.models import Agent
from routing_service.repository import RoutingRepository
from routing_service.schemas import PresenceOut, PresenceUpdate

RETURNED_REASON = "returned to the queue: the assignee went offline before working on it"
REMOVED_REASON = "returned to the queue: agent removed"
"""The ``ticket.queued`` reason (shown on intake's timeline) of a ticket its removed agent held."""


def announce_status(uow: UnitOfWork, agent: Agent, previous: AgentPresence | None, now: datetime) -> None:
    """Publish the agent's presence and capacity as they are now (after any hand-back and drain)."""
    uow.publish(
        AgentStatusChanged(
            agent_id=agent.id,
            team_id=agent.team_id,
            presence=AgentPresence(agent.presence),
            previous_presence=previous,
            active_tickets=agent.active_tickets,
            max_concurrent=agent.max_concurrent,
            changed_at=now,
        ),
        subject=str(agent.id),
    )


async def set_presence(
    uow: UnitOfWork, agent_id: uuid.UUID, body: PresenceUpdate, principal: Principal
) -> PresenceOut:
    # Checked before the lookup so that agents cannot probe which ids exist.
    if not principal.has_any({Role.LEAD, Role.ADMIN}) and principal.user_id != agent_id:
        raise Forbidden("Agents set their own presence; a lead or an admin may set anyone's")
    repo = RoutingRepository(uow.session)
    if body.presence == AgentPresence.OFFLINE:  # it hands back assignments: lock them first
        await repo.lock_assignments_of(agent_id)
    agent = await repo.lock_agent(agent_id)
    if agent is None:
        raise AgentNotFound(f"No agent with id {agent_id}")
    previous = AgentPresence(agent.presence)
    if body.presence == previous:
        return PresenceOut.model_validate(agent)
    now = datetime.now(UTC)
    agent.presence = body.presence
    await uow.flush()
    returned: list[uuid.UUID] = []
    if body.presence == AgentPresence.OFFLINE:
        returned = await _hand_back_untouched(uow, repo, agent_id, now)
    await drain_queue(uow, repo, now)
    agent = await repo.lock_agent(agent_id)  # re-read: the hand-back and the drain changed its load
    assert agent is not None
    announce_status(uow, agent, previous, now)
    out = PresenceOut.model_validate(agent).model_copy(update={"returned_ticket_ids": returned})
    await uow.commit()
    return out


async def _hand_back_untouched(
    uow: UnitOfWork,
    repo: RoutingRepository,
    agent_id: uuid.UUID,
    now: datetime,
    *,
    reason: str = RETURNED_REASON,
    only: Collection[uuid.UUID] | None = None,
) -> list[uuid.UUID]:
    """Queue the tickets the agent has not worked on (``only``: those of them), each announced as
    `ticket.queued` with ``reason`` — why it left its agent (went offline, removed, skills changed)
    — and returns them. The caller drains the queue. Does not commit."""
    returned = await repo.release_untouched(agent_id, only=only)
    for ticket in returned:
        await queue_ticket(
            uow,
            repo,
            ticket.ticket_id,
            priority=await repo.ticket_priority(ticket.ticket_id),
            waiting_since=ticket.waiting_since,
            now=now,
            reason=reason,
            domain=ticket.domain,
            language=ticket.language,
            difficult=ticket.difficult,
            lead=await repo.lead_for(ticket.domain) if ticket.difficult else None,
        )
    return [ticket.ticket_id for ticket in returned]


async def touch(uow: UnitOfWork, event: AnswerSubmitted) -> None:
    """An answer by the ticket's assignee or one of its collaborators marks the ticket as worked on
    (a lead's collaborator drafts what the lead then sends). Does not commit."""
    await RoutingRepository(uow.session).touch(event.ticket_id, event.author_id, event.submitted_at)
