"""Projecting events into read models, and reading them back."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import case, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.intake import TicketCreated
from helpdesk_shared.contracts.routing import TicketAssigned, TicketTransferred
from metrics_service.models import TicketFact

TICKETS_CREATED = Counter(
    "helpdesk_tickets_created_total", "Tickets created, by channel and kind", ["channel", "kind"]
)
TICKETS_ASSIGNED = Counter("helpdesk_tickets_assigned_total", "Ticket assignments")
TICKETS_TRANSFERRED = Counter("helpdesk_tickets_transferred_total", "Ticket transfers")


async def _upsert_fact(uow: UnitOfWork, ticket_id: Any, **values: Any) -> None:
    insert = pg_insert(TicketFact).values(ticket_id=ticket_id, **values)
    await uow.session.execute(
        insert.on_conflict_do_update(
            index_elements=[TicketFact.ticket_id], set_={k: insert.excluded[k] for k in values}
        )
    )


async def project_ticket_created(uow: UnitOfWork, event: TicketCreated) -> None:
    await _upsert_fact(
        uow,
        event.ticket_id,
        channel=event.channel,
        kind=event.kind,
        priority=event.priority,
        created_at=event.created_at,
    )
    await uow.commit()
    TICKETS_CREATED.labels(event.channel, event.kind).inc()


async def _credit_agent(
    uow: UnitOfWork, ticket_id: uuid.UUID, agent_id: uuid.UUID, since: datetime, **values: Any
) -> None:
    """Upsert the fact, moving the credit to `agent_id` unless a newer hand-over is already known
    (``values`` are set regardless)."""
    insert = pg_insert(TicketFact).values(ticket_id=ticket_id, agent_id=agent_id, agent_since=since, **values)
    # A tie goes to the later event, as routing publishes a ticket's changes in the order it made them.
    newer = or_(TicketFact.agent_since.is_(None), TicketFact.agent_since <= insert.excluded.agent_since)
    await uow.session.execute(
        insert.on_conflict_do_update(
            index_elements=[TicketFact.ticket_id],
            set_={
                **{k: insert.excluded[k] for k in values},
                "agent_id": case((newer, insert.excluded.agent_id), else_=TicketFact.agent_id),
                "agent_since": case((newer, insert.excluded.agent_since), else_=TicketFact.agent_since),
            },
        )
    )


async def project_ticket_assigned(uow: UnitOfWork, event: TicketAssigned) -> None:
    await _credit_agent(
        uow, event.ticket_id, event.agent_id, event.assigned_at, assigned_at=event.assigned_at
    )
    await uow.commit()
    TICKETS_ASSIGNED.inc()


async def project_ticket_transferred(uow: UnitOfWork, event: TicketTransferred) -> None:
    await _credit_agent(uow, event.ticket_id, event.to_agent_id, event.transferred_at)
    await uow.commit()
    TICKETS_TRANSFERRED.inc()


async def summary(uow: UnitOfWork) -> dict[str, int]:
    row = (
        await uow.session.execute(
            select(
                func.count(TicketFact.created_at).label("tickets_created"),
                func.count(TicketFact.assigned_at).label("tickets_assigned"),
            )
        )
    ).one()
    return {"tickets_created": row.tickets_created, "tickets_assigned": row.tickets_assigned}
