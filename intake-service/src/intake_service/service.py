"""Intake use cases. Each runs in one unit of work and commits once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from helpdesk_shared.chassis.pagination import PageParams, build_page
from helpdesk_shared.chassis.problems import NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import TicketStatus
from helpdesk_shared.contracts.intake import TicketCreated
from helpdesk_shared.contracts.routing import TicketAssigned
from intake_service.domain.lifecycle import status_after_assignment
from intake_service.domain.urgency import detect_urgent
from intake_service.models import Ticket
from intake_service.repository import CustomerRepository, TicketRepository
from intake_service.schemas import TicketCreate, TicketOut


class TicketNotFound(NotFound):
    slug, title = "ticket-not-found", "Ticket not found"


async def create_ticket(uow: UnitOfWork, body: TicketCreate, *, number_prefix: str) -> TicketOut:
    tickets = TicketRepository(uow.session)
    customer_id = await CustomerRepository(uow.session).upsert(
        external_id=body.customer.external_id,
        name=body.customer.name,
        email=body.customer.email,
        phone=body.customer.phone,
    )
    now = datetime.now(UTC)
    ticket = await tickets.add(
        Ticket(
            id=uuid.uuid4(),
            number=f"{number_prefix}-{await tickets.next_number():06d}",
            channel=body.channel,
            kind=body.kind,
            status=TicketStatus.NEW,
            priority=body.priority,
            urgent_detected=detect_urgent(body.subject, body.description),
            subject=body.subject,
            description=body.description,
            reference=body.reference,
            category_hint=body.category_hint,
            tags=list(body.tags),
            customer_id=customer_id,
            created_at=now,
            updated_at=now,
        )
    )
    uow.publish(
        TicketCreated(
            ticket_id=ticket.id,
            number=ticket.number,
            channel=body.channel,
            kind=body.kind,
            subject=ticket.subject,
            description=ticket.description,
            priority=body.priority,
            urgent_detected=ticket.urgent_detected,
            customer_id=customer_id,
            category_hint=ticket.category_hint,
            tags=ticket.tags,
            created_at=now,
        ),
        subject=str(ticket.id),
    )
    out = TicketOut.model_validate(ticket)
    await uow.commit()
    return out


async def get_ticket(uow: UnitOfWork, ticket_id: uuid.UUID) -> TicketOut:
    ticket = await TicketRepository(uow.session).get(ticket_id)
    if ticket is None:
        raise TicketNotFound(f"No ticket with id {ticket_id}")
    return TicketOut.model_validate(ticket)


async def list_tickets(
    uow: UnitOfWork, params: PageParams, *, status: TicketStatus | None
) -> tuple[list[TicketOut], str | None]:
    rows = await TicketRepository(uow.session).page(params, status=status)
    page, cursor = build_page(list(rows), params, key=lambda t: (t.created_at, t.id))
    return [TicketOut.model_validate(t) for t in page], cursor


async def apply_assignment(uow: UnitOfWork, event: TicketAssigned) -> None:
    """Mirror routing's decision: the ticket shows its assignee and status."""
    ticket = await TicketRepository(uow.session).get(event.ticket_id, for_update=True)
    if ticket is None:
        raise TicketNotFound(f"ticket.assigned for unknown ticket {event.ticket_id}")
    ticket.status = status_after_assignment(TicketStatus(ticket.status))
    ticket.assignee_id = event.agent_id
    await uow.commit()
