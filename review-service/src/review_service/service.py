"""Review use cases."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
    await _keep_latest(
        uow,
        TicketOwner,
        {"ticket_id": event.ticket_id, "agent_id": event.agent_id, "assigned_at": event.assigned_at},
        stamp="assigned_at",
    )


async def record_collaborators(uow: UnitOfWork, event: TicketCollaboratorsChanged) -> None:
    """Keep the latest list (each event carries all of it); an older event changes nothing."""
    await _keep_latest(
        uow,
        TicketCollaborators,
        {"ticket_id": event.ticket_id, "agent_ids": event.collaborator_ids, "changed_at": event.changed_at},
        stamp="changed_at",
    )


async def _keep_latest(
    uow: UnitOfWork, model: type[TicketOwner] | type[TicketCollaborators], row: dict[str, Any], *, stamp: str
) -> None:
    """Upsert a ticket's mirrored row unless the stored one is newer (events may arrive out of order)."""
    insert = pg_insert(model).values(**row)
    await uow.session.execute(
        insert.on_conflict_do_update(
            index_elements=["ticket_id"],
            set_={column: insert.excluded[column] for column in row if column != "ticket_id"},
            where=getattr(model, stamp) <= insert.excluded[stamp],
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
