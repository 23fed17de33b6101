"""Review use cases."""

from __future__ import annotations

import uuid

from sqlalchemy.dialects.postgresql import insert as pg_insert

from helpdesk_shared.chassis.problems import NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.routing import TicketAssigned
from review_service.models import TicketOwner


class TicketOwnerUnknown(NotFound):
    slug, title = "ticket-owner-unknown", "No assignment known for this ticket"


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


async def owner_of(uow: UnitOfWork, ticket_id: uuid.UUID) -> TicketOwner:
    owner = await uow.session.get(TicketOwner, ticket_id)
    if owner is None:
        raise TicketOwnerUnknown(f"No assignment recorded for ticket {ticket_id}")
    return owner
