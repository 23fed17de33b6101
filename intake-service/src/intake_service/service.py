"""Intake use cases for accepting and finding tickets. Each runs in one unit of work."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from helpdesk_shared.chassis.pagination import PageParams, build_page
from helpdesk_shared.chassis.problems import Conflict
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import TicketKind, TicketStatus
from helpdesk_shared.contracts.intake import TicketCreated
from helpdesk_shared.text import tokens
from intake_service import complaints
from intake_service.domain.privacy import redact_contacts
from intake_service.domain.urgency import detect_urgent
from intake_service.models import Ticket
from intake_service.repository import CustomerRepository, TicketFilters, TicketRepository, load_ticket
from intake_service.schemas import AttachmentOut, TicketCreate, TicketOut


class IdempotencyKeyReused(Conflict):
    slug, title = "idempotency-key-reused", "Idempotency-Key already used for a different request"


def request_fingerprint(body: TicketCreate) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


async def create_ticket(
    uow: UnitOfWork,
    body: TicketCreate,
    *,
    number_prefix: str,
    caller: str,
    idempotency_key: str | None = None,
) -> tuple[TicketOut, bool]:
    """Store a ticket and its `ticket.created` event; returns (ticket, replayed).

    With an Idempotency-Key the first request claims the key in the same
    transaction that creates the ticket; a concurrent retry blocks on that
    claim until it commits and then replays the ticket instead of creating one.
    """
    tickets = TicketRepository(uow.session)
    if idempotency_key is not None:
        fingerprint = request_fingerprint(body)
        if not await tickets.claim_idempotency_key(caller, idempotency_key, fingerprint):
            claimed = await tickets.idempotency_key(caller, idempotency_key)
            if claimed is None or claimed.ticket_id is None:
                raise Conflict("A request with this Idempotency-Key is still being processed; retry")
            if claimed.request_hash != fingerprint:
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {idempotency_key!r} was used with a different body"
                )
            return await get_ticket(uow, claimed.ticket_id), True

    ticket = await stage_ticket(uow, body, number_prefix=number_prefix, caller=caller)
    if idempotency_key is not None:
        claimed = await tickets.idempotency_key(caller, idempotency_key)
        assert claimed is not None
        claimed.ticket_id = ticket.id
    out = TicketOut.model_validate(ticket)
    await uow.commit()
    return out, False


async def stage_ticket(uow: UnitOfWork, body: TicketCreate, *, number_prefix: str, caller: str) -> Ticket:
    """Add a new ticket, its rows and its `ticket.created` event to the unit of work (no commit)."""
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
            callback_url=body.callback_url,
            category_hint=body.category_hint,
            tags=list(body.tags),
            customer_id=customer_id,
            reopen_count=0,
            resolution_count=0,
            search_tokens=" ".join(tokens(f"{body.subject} {body.description}", for_search=True)),
            created_at=now,
            updated_at=now,
        )
    )
    await tickets.add_attachments(ticket.id, body.attachments)
    if body.kind == TicketKind.COMPLAINT:
        complaints.open_case(uow, ticket, now)
    await tickets.add_timeline(
        ticket.id, "created", at=now, actor=caller, status=TicketStatus.NEW, channel=body.channel
    )
    uow.publish(
        TicketCreated(
            ticket_id=ticket.id,
            number=ticket.number,
            channel=body.channel,
            kind=body.kind,
            subject=redact_contacts(ticket.subject, body.customer.email, body.customer.phone),
            description=redact_contacts(ticket.description, body.customer.email, body.customer.phone),
            priority=body.priority,
            urgent_detected=ticket.urgent_detected,
            customer_id=customer_id,
            category_hint=ticket.category_hint,
            tags=ticket.tags,
            reference=ticket.reference,
            attachment_count=len(body.attachments),
            created_at=now,
        ),
        subject=str(ticket.id),
    )
    return ticket


async def get_ticket(uow: UnitOfWork, ticket_id: uuid.UUID) -> TicketOut:
    return TicketOut.model_validate(await load_ticket(uow, ticket_id))


async def list_tickets(
    uow: UnitOfWork, params: PageParams, filters: TicketFilters
) -> tuple[list[TicketOut], str | None]:
    rows = await TicketRepository(uow.session).page(params, filters)
    page, cursor = build_page(list(rows), params, key=lambda t: (t.created_at, t.id))
    return [TicketOut.model_validate(t) for t in page], cursor


async def list_attachments(uow: UnitOfWork, ticket_id: uuid.UUID) -> list[AttachmentOut]:
    await load_ticket(uow, ticket_id)
    return [
        AttachmentOut.model_validate(a) for a in await TicketRepository(uow.session).attachments(ticket_id)
    ]
