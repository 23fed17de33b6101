"""Transfers (不得私自轉接): only the current assignee or a lead may move a ticket, with a reason.

Who may transfer: the ticket's current assignee, a lead answerable for the ticket (the lead of the
assignee's team or of the ticket's domain team, see `collaborators.responsible_leads`), or an
admin. Anyone else gets 403 — and the caller's right is checked before the ticket is looked up:
an agent who does not hold the ticket gets 403 whether it is unknown, queued or held by someone
else (only leads and admins learn that a ticket is not assigned: 404).

To whom, for everyone alike: an active agent (else 422) other than the assignee (409) who can
work the ticket — a specialist or lead holding the ticket's domain and speaking its language
(when routing knows them; else 403: passing a ticket to whoever is free is exactly the silent
transfer the policy forbids). A lead answerable for the ticket may always be handed it: difficult
tickets go to the lead whatever their own skills. The target must be online with a free slot
(else 409): a transfer never pushes an agent over capacity, a lead's neither.

An answered ticket (its slot given back at the delivery, `Assignment.slot_released_at`) waits for
its customer: it moves as it is — the new assignee takes no slot for it and needs none free (they
must be online all the same) — and the customer's reopening gives it back to them, taking a slot,
when they have one free (`capacity.reassign_reopened`: as for any agent who held a ticket).

Every transfer is stored in the `transfers` audit table and announced as `ticket.transferred`;
the slot (if the ticket holds one) moves atomically from the old agent to the new one. The
ticket's domain and language move with it; the new assignee has not worked on it yet.
`ticket.transferred` names the new assignee's team (for a lead who is no team's member, the team
they lead), as `ticket.assigned` does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from helpdesk_shared.chassis.auth import Principal
from helpdesk_shared.chassis.problems import Conflict, Forbidden, InvalidInput, NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import AgentPresence, Role
from helpdesk_shared.contracts.routing import TicketTransferred
from routing_service import collaborators
from routing_service.capacity import drain_queue
from routing_service.domain.assignment import same_language
from routing_service.models import Agent, Assignment, Transfer
from routing_service.repository import RoutingRepository

WORKING_ROLES = frozenset({"specialist", "lead"})
"""The roles that work tickets (a reviewer only reviews answers)."""

_ONLY = "Only the ticket's current assignee, a lead of its team or domain, or an admin may transfer it"


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


class TargetNotQualified(Forbidden):
    slug, title = "target-not-qualified", "The target agent cannot work this ticket"


class Profile(NamedTuple):
    """What an agent can work, as `missing_qualifications` reads it (an `Agent` has the same)."""

    roles: Sequence[str]
    domains: Sequence[str]
    languages: Sequence[str]


def missing_qualifications(agent: Agent | Profile, domain: str | None, language: str | None) -> list[str]:
    """What keeps the agent from working a ticket of `domain` in `language` (empty: nothing)."""
    missing = []
    if WORKING_ROLES.isdisjoint(agent.roles):
        missing.append("is neither a specialist nor a lead")
    if domain is not None and domain not in agent.domains:
        missing.append(f"does not hold the ticket's domain {domain}")
    # As `Candidate.speaks`: languages match on their primary subtag.
    if language is not None and not any(same_language(own, language) for own in agent.languages):
        missing.append(f"does not speak the ticket's language {language}")
    return missing


async def transfer(
    uow: UnitOfWork, ticket_id: uuid.UUID, body: TransferRequest, principal: Principal
) -> TransferOut:
    caller = principal.user_id
    if caller is None:
        raise Forbidden("Transferring needs a caller signed in as a user (a UUID subject)")
    session = uow.session
    repo = RoutingRepository(session)
    # The caller's right first: leads (of some team) and admins may transfer tickets they do not hold.
    may_lead = principal.has_any({Role.ADMIN}) or (
        principal.has_any({Role.LEAD}) and await collaborators.leads_a_team(session, caller)
    )
    assignment = await session.get(Assignment, ticket_id, with_for_update=True)
    if assignment is None:
        if not may_lead:
            raise Forbidden(_ONLY)  # nothing learnt about tickets that are not the caller's
        raise TicketNotAssigned(f"Ticket {ticket_id} is not assigned (queued or unknown)")
    if caller != assignment.agent_id and not may_lead:
        raise Forbidden(_ONLY)
    domain, language = assignment.domain, assignment.language
    leads = await collaborators.responsible_leads(session, assignment.agent_id, domain)
    if caller != assignment.agent_id:
        collaborators.check_lead_scope(principal, caller, leads, "transfer a ticket its assignee holds")
    target = await repo.lock_agent(body.to_agent_id)  # assignment, then agent: the usual order
    if target is None or target.deactivated_at is not None:
        raise UnknownTargetAgent(
            f"No active agent with id {body.to_agent_id}",
            errors=[{"field": "body.to_agent_id", "message": "not an active agent", "type": "value_error"}],
        )
    if target.id == assignment.agent_id:
        raise Conflict("The ticket is already assigned to that agent")
    if target.id not in leads and (missing := missing_qualifications(target, domain, language)):
        raise TargetNotQualified(
            f"{target.name} {' and '.join(missing)}: a ticket goes only to someone who can work it "
            "(or to the lead of its team or domain)"
        )
    if target.presence != AgentPresence.ONLINE:
        raise TargetUnavailable(f"{target.name} is {target.presence}: only an online agent takes a transfer")
    # Answered, the ticket waits for its customer and holds no slot: it moves as it is, taking none.
    answered_at = assignment.slot_released_at
    if answered_at is None and target.active_tickets >= target.max_concurrent:
        raise TargetUnavailable(
            f"{target.name} is at capacity ({target.active_tickets} of {target.max_concurrent} tickets): "
            "a transfer never pushes an agent over capacity; choose someone with a free slot, or wait"
        )
    now = datetime.now(UTC)
    # The slot checked again by the database, atomically.
    if answered_at is None and not await repo.take_capacity(target.id, now):
        raise TargetUnavailable(f"{target.name} is no longer online with a free slot")
    previous = assignment.agent_id
    released = await repo.drop_assignment(ticket_id)
    await repo.assign(
        ticket_id,
        target.id,
        f"transfer: {body.reason}",
        now,
        domain=domain,
        language=language,
        slot_released_at=answered_at,
    )
    await collaborators.now_holds(uow, ticket_id, target.id, changed_by=caller)
    record = Transfer(
        id=uuid.uuid4(),
        ticket_id=ticket_id,
        from_agent_id=previous,
        to_agent_id=target.id,
        requested_by=caller,
        reason=body.reason,
        transferred_at=now,
    )
    uow.session.add(record)
    if released is not None and released.slot_freed:  # the previous agent's freed slot: the queue's
        await drain_queue(uow, repo, now)
    uow.publish(
        TicketTransferred(
            ticket_id=ticket_id,
            transfer_id=record.id,
            from_agent_id=previous,
            to_agent_id=target.id,
            to_team_id=await repo.team_of(target.id),  # a lead outside any team: the team they lead
            requested_by=caller,
            reason=body.reason,
            transferred_at=now,
        ),
        subject=str(ticket_id),
    )
    out = TransferOut.model_validate(record)
    await uow.commit()
    return out
