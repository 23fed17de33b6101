"""Collaborators (疑難問題): agents a lead adds to a ticket besides its assignee.

A difficult ticket goes to the team lead, who may bring in colleagues: collaborators may draft
answers on the ticket (review mirrors the list) but do not hold it — no capacity is taken and
routing's assignment stays with the assignee. The policy:

* Only an admin, or a lead answerable for the ticket (`responsible_leads`: the lead of the
  assignee's team or of the ticket's domain team), changes the list — any other caller 403, and a
  lead who leads no team 403 before the ticket is looked up — and only while someone holds the
  ticket (a queued, resolved or unknown ticket: 404). A collaborator is a known, active agent
  (else 422) other than the assignee (409); a ticket has at most `MAX_COLLABORATORS`.
* Adding a collaborator already there, or removing one who is not, changes nothing and announces
  nothing. Every real change is announced in the same transaction as `ticket.collaborators_changed`
  with the **whole** list, in the order they were added, so consumers replace what they hold.
* Changes of one ticket are serialised on its assignment row (as transfers and the release of a
  resolved ticket are), and stamped with the database's clock, so successive announcements of a
  ticket carry increasing `changed_at` whichever replica made them.
* Resolving or closing the ticket clears the list (announced with ``changed_by: null``). A transfer
  keeps it: the collaborators belong to the ticket, not to whoever holds it — except the one who
  now holds it, who leaves the list (an assignee is never also a collaborator; see `now_holds`).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk_shared.chassis.auth import Principal
from helpdesk_shared.chassis.problems import Conflict, Forbidden, InvalidInput, NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.common import MAX_LIST
from helpdesk_shared.contracts.enums import Role
from helpdesk_shared.contracts.routing import TicketCollaboratorsChanged
from routing_service.models import Agent, Assignment, Team, TicketCollaborator
from routing_service.repository import RoutingRepository

MAX_COLLABORATORS = MAX_LIST
"""At most this many collaborators per ticket (the event's list holds no more)."""


class CollaboratorOut(BaseModel):
    agent_id: uuid.UUID
    name: str = Field(description="The agent's name")
    added_by: uuid.UUID = Field(description="Lead or admin who added them")
    added_at: datetime


class CollaboratorsOut(BaseModel):
    ticket_id: uuid.UUID
    assignee_id: uuid.UUID | None = Field(description="Who holds the ticket now (None: nobody)")
    collaborators: list[CollaboratorOut] = Field(description="In the order they were added")


class TicketNotAssigned(NotFound):
    slug, title = "ticket-not-assigned", "The ticket is not assigned (queued, resolved or unknown)"


class TicketUnknown(NotFound):
    slug, title = "ticket-unknown", "Routing has never routed this ticket"


class UnknownCollaborator(InvalidInput):
    slug, title = "unknown-collaborator", "The collaborator is not a known agent"


class CollaboratorIsAssignee(Conflict):
    slug, title = "collaborator-is-assignee", "The assignee cannot also be a collaborator"


class TooManyCollaborators(Conflict):
    slug, title = "too-many-collaborators", "The ticket has the most collaborators allowed"


async def collaborators_of(uow: UnitOfWork, ticket_id: uuid.UUID) -> CollaboratorsOut:
    session = uow.session
    assignee = await session.scalar(select(Assignment.agent_id).where(Assignment.ticket_id == ticket_id))
    out = await _view(session, ticket_id, assignee)
    if (
        assignee is None
        and not out.collaborators
        and not await RoutingRepository(session).already_routed(ticket_id)
    ):
        raise TicketUnknown(f"Routing knows no ticket {ticket_id}")
    return out


async def leads_a_team(session: AsyncSession, agent_id: uuid.UUID) -> bool:
    """Whether the agent is some team's lead (a lead's right to act on tickets at all)."""
    return bool(await session.scalar(select(exists().where(Team.lead_id == agent_id))))


async def responsible_leads(session: AsyncSession, assignee: uuid.UUID, domain: str | None) -> set[uuid.UUID]:
    """The leads answerable for a ticket `assignee` holds: the lead of the assignee's team (for a
    lead who is no team's member, the team they lead) and the lead of the ticket's domain team —
    the one its difficult tickets go to (`RoutingRepository.lead_for`; none without a domain)."""
    repo = RoutingRepository(session)
    leads: set[uuid.UUID] = set()
    team_id = await repo.team_of(assignee)
    team_lead = await session.scalar(select(Team.lead_id).where(Team.id == team_id)) if team_id else None
    if team_lead is not None:
        leads.add(team_lead)
    if domain is not None and (domain_lead := await repo.lead_for(domain)) is not None:
        leads.add(domain_lead.candidate.agent_id)
    return leads


def check_lead_scope(principal: Principal, caller: uuid.UUID, leads: set[uuid.UUID], action: str) -> None:
    """An admin may act on any ticket; a lead only on one they are answerable for (`leads`)."""
    if not principal.has_any({Role.ADMIN}) and caller not in leads:
        raise Forbidden(
            f"Only the lead of the assignee's team or of the ticket's domain team, or an admin, may {action}"
        )


async def add(
    uow: UnitOfWork, ticket_id: uuid.UUID, agent_id: uuid.UUID, principal: Principal
) -> CollaboratorsOut:
    """Add `agent_id` to the ticket's collaborators (nothing happens when already there)."""
    changed_by = await _acting_lead(uow.session, principal)
    session = uow.session
    assignee = await _lock_in_scope(session, ticket_id, principal, changed_by)
    agent = await session.get(Agent, agent_id)
    if agent is None or agent.deactivated_at is not None:
        raise UnknownCollaborator(
            f"No active agent with id {agent_id}",
            errors=[{"field": "path.agent_id", "message": "not an active agent", "type": "value_error"}],
        )
    if agent_id == assignee:
        raise CollaboratorIsAssignee(
            f"{agent.name} is the ticket's assignee, who may already draft its answers; "
            "add someone else, or transfer the ticket"
        )
    current = await _ids(session, ticket_id)
    if agent_id not in current:
        if len(current) >= MAX_COLLABORATORS:
            raise TooManyCollaborators(f"A ticket has at most {MAX_COLLABORATORS} collaborators")
        now = await _db_now(session)
        await session.execute(
            pg_insert(TicketCollaborator).values(
                ticket_id=ticket_id, agent_id=agent_id, added_by=changed_by, added_at=now
            )
        )
        _announce(uow, ticket_id, [*current, agent_id], changed_by=changed_by, at=now)
    out = await _view(session, ticket_id, assignee)
    await uow.commit()
    return out


async def remove(uow: UnitOfWork, ticket_id: uuid.UUID, agent_id: uuid.UUID, principal: Principal) -> None:
    """Remove `agent_id` from the ticket's collaborators (nothing happens when not there)."""
    changed_by = await _acting_lead(uow.session, principal)
    session = uow.session
    await _lock_in_scope(session, ticket_id, principal, changed_by)
    removed = await session.scalar(
        delete(TicketCollaborator)
        .where(TicketCollaborator.ticket_id == ticket_id, TicketCollaborator.agent_id == agent_id)
        .returning(TicketCollaborator.agent_id)
    )
    if removed is not None:
        now = await _db_now(session)
        _announce(uow, ticket_id, await _ids(session, ticket_id), changed_by=changed_by, at=now)
    await uow.commit()


async def clear(uow: UnitOfWork, ticket_id: uuid.UUID) -> None:
    """The ticket was resolved or closed: drop its collaborators (announced when there were any).

    Never commits: the consumer's handler calls it before the use case that commits.
    """
    session = uow.session
    await _lock_assignee(session, ticket_id, required=False)  # waits for a change in progress
    removed = (
        (
            await session.execute(
                delete(TicketCollaborator)
                .where(TicketCollaborator.ticket_id == ticket_id)
                .returning(TicketCollaborator.agent_id)
            )
        )
        .scalars()
        .all()
    )
    if removed:
        _announce(uow, ticket_id, [], changed_by=None, at=await _db_now(session))


async def now_holds(
    uow: UnitOfWork, ticket_id: uuid.UUID, agent_id: uuid.UUID, *, changed_by: uuid.UUID | None = None
) -> None:
    """The ticket was just given to `agent_id` (transfer, queue, reopening): if they were one of its
    collaborators they now hold it instead, and the shorter list is announced.

    Never commits; the caller holds the ticket's new assignment (so changes stay serialised)."""
    session = uow.session
    removed = await session.scalar(
        delete(TicketCollaborator)
        .where(TicketCollaborator.ticket_id == ticket_id, TicketCollaborator.agent_id == agent_id)
        .returning(TicketCollaborator.agent_id)
    )
    if removed is not None:
        _announce(
            uow, ticket_id, await _ids(session, ticket_id), changed_by=changed_by, at=await _db_now(session)
        )


async def lock_tickets_of(session: AsyncSession, agent_id: uuid.UUID) -> None:
    """Lock, in ticket order, the assignments of every ticket the agent holds or helps on: the
    locks collaborator changes serialise on, taken before the agent's row (assignment, then
    agent, as everyone does) by whoever then changes both."""
    helped = select(TicketCollaborator.ticket_id).where(TicketCollaborator.agent_id == agent_id)
    await session.execute(
        select(Assignment.ticket_id)
        .where((Assignment.agent_id == agent_id) | Assignment.ticket_id.in_(helped))
        .order_by(Assignment.ticket_id)
        .with_for_update()
    )


async def drop_everywhere(uow: UnitOfWork, agent_id: uuid.UUID, *, changed_by: uuid.UUID | None) -> None:
    """The agent was removed: they leave every ticket's list, each change announced. Never commits;
    the caller holds the tickets' locks (`lock_tickets_of`)."""
    session = uow.session
    tickets = (
        (
            await session.execute(
                delete(TicketCollaborator)
                .where(TicketCollaborator.agent_id == agent_id)
                .returning(TicketCollaborator.ticket_id)
            )
        )
        .scalars()
        .all()
    )
    for ticket_id in sorted(tickets):
        left = await _ids(session, ticket_id)
        _announce(uow, ticket_id, left, changed_by=changed_by, at=await _db_now(session))


async def _acting_lead(session: AsyncSession, principal: Principal) -> uuid.UUID:
    """The caller's user id, once it is known they may change some ticket's collaborators at all:
    an admin, or a lead who leads a team — others get 403 before any ticket is looked up."""
    if principal.user_id is None:
        raise Forbidden("Changing collaborators needs a lead or admin signed in as a user (a UUID subject)")
    if not principal.has_any({Role.ADMIN}) and not await leads_a_team(session, principal.user_id):
        raise Forbidden("Only a team's lead or an admin may change a ticket's collaborators")
    return principal.user_id


async def _lock_in_scope(
    session: AsyncSession, ticket_id: uuid.UUID, principal: Principal, caller: uuid.UUID
) -> uuid.UUID:
    """Lock the ticket's assignment (404 when nobody holds it) and check that the caller may change
    its collaborators (`check_lead_scope`); returns the assignee."""
    assignee = await _lock_assignee(session, ticket_id)
    assert assignee is not None
    domain = await session.scalar(select(Assignment.domain).where(Assignment.ticket_id == ticket_id))
    leads = set() if principal.has_any({Role.ADMIN}) else await responsible_leads(session, assignee, domain)
    check_lead_scope(principal, caller, leads, "change its collaborators")
    return assignee


async def _lock_assignee(
    session: AsyncSession, ticket_id: uuid.UUID, *, required: bool = True
) -> uuid.UUID | None:
    """Lock the ticket's assignment (serialising its collaborator changes); returns the assignee."""
    assignee = await session.scalar(
        select(Assignment.agent_id).where(Assignment.ticket_id == ticket_id).with_for_update()
    )
    if assignee is None and required:
        raise TicketNotAssigned(
            f"Ticket {ticket_id} is not assigned (queued, resolved or unknown): "
            "collaborators are added while someone holds it"
        )
    return assignee


async def _db_now(session: AsyncSession) -> datetime:
    """The database's clock: one clock for every replica, so a ticket's changes stay ordered."""
    now: datetime | None = await session.scalar(select(func.clock_timestamp()))
    assert now is not None
    return now


async def _ids(session: AsyncSession, ticket_id: uuid.UUID) -> list[uuid.UUID]:
    return list(
        (
            await session.execute(
                select(TicketCollaborator.agent_id)
                .where(TicketCollaborator.ticket_id == ticket_id)
                .order_by(TicketCollaborator.added_at, TicketCollaborator.agent_id)
            )
        )
        .scalars()
        .all()
    )


async def _view(session: AsyncSession, ticket_id: uuid.UUID, assignee: uuid.UUID | None) -> CollaboratorsOut:
    rows = await session.execute(
        select(
            TicketCollaborator.agent_id, Agent.name, TicketCollaborator.added_by, TicketCollaborator.added_at
        )
        .join(Agent, Agent.id == TicketCollaborator.agent_id)
        .where(TicketCollaborator.ticket_id == ticket_id)
        .order_by(TicketCollaborator.added_at, TicketCollaborator.agent_id)
    )
    return CollaboratorsOut(
        ticket_id=ticket_id,
        assignee_id=assignee,
        collaborators=[
            CollaboratorOut(agent_id=r.agent_id, name=r.name, added_by=r.added_by, added_at=r.added_at)
            for r in rows
        ],
    )


def _announce(
    uow: UnitOfWork,
    ticket_id: uuid.UUID,
    collaborator_ids: list[uuid.UUID],
    *,
    changed_by: uuid.UUID | None,
    at: datetime,
) -> None:
    uow.publish(
        TicketCollaboratorsChanged(
            ticket_id=ticket_id, collaborator_ids=collaborator_ids, changed_by=changed_by, changed_at=at
        ),
        subject=str(ticket_id),
    )
