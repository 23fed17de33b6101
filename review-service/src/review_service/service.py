"""Review use cases."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert

from helpdesk_shared.chassis.problems import NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.routing import (
    TicketAssigned,
    TicketCollaboratorsChanged,
    TicketQueued,
    TicketTransferred,
)
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
    await _hand_over(uow, event.ticket_id, event.agent_id, event.assigned_at)


async def record_transfer(uow: UnitOfWork, event: TicketTransferred) -> None:
    """The new assignee owns the ticket from the transfer on (unless something newer is known)."""
    await _hand_over(uow, event.ticket_id, event.to_agent_id, event.transferred_at)


async def record_queued(uow: UnitOfWork, event: TicketQueued) -> None:
    """A ticket back in the queue has no owner until it is assigned again."""
    await _hand_over(uow, event.ticket_id, None, event.queued_at)


async def _hand_over(uow: UnitOfWork, ticket_id: uuid.UUID, agent_id: uuid.UUID | None, at: datetime) -> None:
    # One stamp orders assignments, transfers and hand-backs of a ticket alike: whichever
    # routing made last wins, whatever order they arrive in. A tie goes to the later event:
    # routing stamps a hand-back to the queue and the drain that reassigns it in the same
    # transaction with one clock reading, and publishes them in that order.
    await _keep_latest(
        uow,
        TicketOwner,
        {"ticket_id": ticket_id, "agent_id": agent_id, "assigned_at": at},
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
    # The response has no way to say "nobody": a queued ticket answers as one never assigned.
    if owner is None or owner.agent_id is None:
        raise TicketOwnerUnknown(f"Nobody holds ticket {ticket_id} (never assigned, or back in the queue)")
    collaborators = await uow.session.get(TicketCollaborators, ticket_id)
    return Drafters(
        ticket_id=owner.ticket_id,
        agent_id=owner.agent_id,
        assigned_at=owner.assigned_at,
        collaborator_ids=list(collaborators.agent_ids) if collaborators is not None else [],
    )
