"""Transfers (不得私自轉接): only the current assignee or a lead may move a ticket, with a reason.

The assignee may only hand a ticket to someone holding its domain (when routing knows the
domain): passing it to whoever is free is exactly the silent transfer the policy forbids.
Leads and admins may move it to anyone. Every transfer is stored in the `transfers` audit
table and announced as `ticket.transferred`; the slot moves atomically from the old agent to
the new one, which must be online with free capacity. The ticket's domain and language move
with it; the new assignee has not worked on it yet. `ticket.transferred` names the new assignee's
team (for a lead who is no team's member, the team they lead), as `ticket.assigned` does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from helpdesk_shared.chassis.auth import Principal
from helpdesk_shared.chassis.problems import Conflict, Forbidden, InvalidInput, NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import AgentPresence, Role
from helpdesk_shared.contracts.routing import TicketTransferred
from routing_service import collaborators
from routing_service.capacity import drain_queue
from routing_service.models import Agent, Assignment, Transfer
from routing_service.repository import RoutingRepository


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_agent_id: uuid.UUID
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1_000)] = Field(
        description="Required: why the ticket moves"
    )


class TransferOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    ticket_id: uuid.UUID
    from_agent_id: uuid.UUID | None
    to_agent_id: uuid.UUID
    requested_by: uuid.UUID
    reason: str
    transferred_at: datetime


class TicketNotAssigned(NotFound):
    slug, title = "ticket-not-assigned", "The ticket has no assignee to transfer from"


class UnknownTargetAgent(InvalidInput):
    slug, title = "unknown-target-agent", "The target agent does not exist"


class TargetUnavailable(Conflict):
    slug, title = "target-unavailable", "The target agent is not online with free capacity"


async def transfer(
    uow: UnitOfWork, ticket_id: uuid.UUID, body: TransferRequest, principal: Principal
) -> TransferOut:
    repo = RoutingRepository(uow.session)
    assignment = await uow.session.get(Assignment, ticket_id, with_for_update=True)
    if assignment is None:
        raise TicketNotAssigned(f"Ticket {ticket_id} is not assigned (queued or unknown)")
    is_lead = principal.has_any({Role.LEAD, Role.ADMIN})
    if principal.user_id is None or (not is_lead and principal.user_id != assignment.agent_id):
        raise Forbidden("Only the ticket's current assignee or a lead may transfer it")
    target = await uow.session.get(Agent, body.to_agent_id)
    if target is None:
        raise UnknownTargetAgent(f"No agent with id {body.to_agent_id}")
    if target.id == assignment.agent_id:
        raise Conflict("The ticket is already assigned to that agent")
    domain, language = assignment.domain, assignment.language
    if not is_lead and domain is not None and domain not in target.domains:
        raise Forbidden(
            f"{target.name} does not hold the ticket's domain {domain}; only a lead may transfer it there"
        )
    now = datetime.now(UTC)
    if target.presence != AgentPresence.ONLINE or not await repo.take_capacity(target.id, now):
        raise TargetUnavailable(f"{target.name} is {target.presence} or at capacity")
    previous = assignment.agent_id
    await repo.release_assignment(ticket_id)
    await repo.assign(ticket_id, target.id, f"transfer: {body.reason}", now, domain=domain, language=language)
    await collaborators.now_holds(uow, ticket_id, target.id, changed_by=principal.user_id)
    record = Transfer(
        id=uuid.uuid4(),
        ticket_id=ticket_id,
        from_agent_id=previous,
        to_agent_id=target.id,
        requested_by=principal.user_id,
        reason=body.reason,
        transferred_at=now,
    )
    uow.session.add(record)
    await drain_queue(uow, repo, now)  # the previous agent's freed slot goes to the queue
    uow.publish(
        TicketTransferred(
            ticket_id=ticket_id,
            transfer_id=record.id,
            from_agent_id=previous,
            to_agent_id=target.id,
            to_team_id=await repo.team_of(target.id),  # a lead outside any team: the team they lead
            requested_by=principal.user_id,
            reason=body.reason,
            transferred_at=now,
        ),
        subject=str(ticket_id),
    )
    out = TransferOut.model_validate(record)
    await uow.commit()
    return out
