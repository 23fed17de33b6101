"""Review use cases."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert

from helpdesk_shared.chassis.problems import NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.routing import TicketAssigned, TicketCollaboratorsChanged
from review_service.models import TicketCollaborators, TicketOwner


class TicketOwnerUnknown(NotFound):
    slug, title = "ticket-owner-unknown", "No assignment known for this ticket"


@dataclass(frozen=True, slots=True)
class Drafters:
    """Who may draft a ticket's answers: its owner and its collaborators."""

    ticket_id: uuid.UUID
    agent_id: uuid.UUID
    assigned_at: datetime
    collaborator_ids: list[uuid.UUID]


async def record_owner(uow: UnitOfWork, event: TicketAssigned) -> None:
    """Keep the latest assignment; an older event never overwrites a newer one."""
    insert = pg_insert(TicketOwner).values(
        ticket_id=event.ticket_id, agent_id=event.agent_id, assigned_at=event.assigned_at
    )
    await uow.session.execute(
        insert.on_conflict_do_update(
            index_elements=[TicketOwner.ticket_id],
            set_={"agent_id": insert.excluded.agent_id, "assigned_at": insert.excluded.assigned_at},
            where=TicketOwner.assigned_at <= insert.excluded.assigned_at,
        )
    )
    await uow.commit()


async def record_collaborators(uow: UnitOfWork, event: TicketCollaboratorsChanged) -> None:
    """Keep the latest list (each event carries all of it); an older event changes nothing."""
    insert = pg_insert(TicketCollaborators).values(
        ticket_id=event.ticket_id, agent_ids=event.collaborator_ids, changed_at=event.changed_at
    )
    await uow.session.execute(
        insert.on_conflict_do_update(
            index_elements=[TicketCollaborators.ticket_id],
            set_={"agent_ids": insert.excluded.agent_ids, "changed_at": insert.excluded.changed_at},
            where=TicketCollaborators.changed_at <= insert.excluded.changed_at,
        )
    )
    await uow.commit()


async def owner_of(uow: UnitOfWork, ticket_id: uuid.UUID) -> Drafters:
    owner = await uow.session.get(TicketOwner, ticket_id)
    if owner is None:
        raise TicketOwnerUnknown(f"No assignment recorded for ticket {ticket_id}")
    collaborators = await uow.session.get(TicketCollaborators, ticket_id)
    return Drafters(
        ticket_id=owner.ticket_id,
        agent_id=owner.agent_id,
        assigned_at=owner.assigned_at,
        collaborator_ids=list(collaborators.agent_ids) if collaborators is not None else [],
    )
