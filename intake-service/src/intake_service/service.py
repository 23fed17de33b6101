"""Intake use cases for accepting and finding tickets. Each runs in one unit of work."""

from __future__ import annotations

import uuid

from helpdesk_shared.chassis.pagination import PageParams, build_page
from helpdesk_shared.chassis.problems import Conflict
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import TicketKind
from intake_service.models import ComplaintCase, Ticket
from intake_service.new_ticket import (
    TicketDraft,
    created_events,
    created_timeline_data,
    ticket_number,
    ticket_row,
)
from intake_service.repository import CustomerRepository, TicketFilters, TicketRepository, load_ticket
from intake_service.schemas import AttachmentOut, TicketCreate, TicketOut


class IdempotencyKeyReused(Conflict):
    slug, title = "idempotency-key-reused", "Idempotency-Key already used for a different request"


async def replay_ticket(uow: UnitOfWork, draft: TicketDraft) -> TicketOut:
    """The ticket first created with the draft's Idempotency-Key (the same body, or a 409).

    The ticket writer claims a key in the same transaction that stores its ticket, and a
    twin request's claim waits for that transaction, so the key's ticket is stored by now.
    """
    assert draft.idempotency_key is not None
    claimed = await TicketRepository(uow.session).idempotency_key(draft.caller, draft.idempotency_key)
    if claimed is None or claimed.ticket_id is None:
        raise Conflict("A request with this Idempotency-Key is still being processed; retry")
    if claimed.request_hash != draft.fingerprint:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {draft.idempotency_key!r} was used with a different body"
        )
    return await get_ticket(uow, claimed.ticket_id)


async def stage_ticket(uow: UnitOfWork, body: TicketCreate, *, number_prefix: str, caller: str) -> Ticket:
    """Add a new ticket, its rows and its events to the unit of work (no commit).

    The email channel creates tickets this way, inside the transaction that archives the
    message and records its thread ids; the API goes through the group-commit `ticket_writer`.
    Both build the rows and events from `new_ticket`.
    """
    draft = TicketDraft(body=body, caller=caller)
    tickets = TicketRepository(uow.session)
    customer_id = await CustomerRepository(uow.session).upsert(
        external_id=body.customer.external_id,
        name=body.customer.name,
        email=body.customer.email,
        phone=body.customer.phone,
    )
    number = ticket_number(number_prefix, await tickets.next_number())
    ticket = await tickets.add(Ticket(**ticket_row(draft, number=number, customer_id=customer_id)))
    await tickets.add_attachments(ticket.id, body.attachments)
    if body.kind == TicketKind.COMPLAINT:
        uow.session.add(ComplaintCase(ticket_id=ticket.id, archived=False, updated_at=draft.created_at))
    await tickets.add_timeline(
        ticket.id, "created", at=draft.created_at, actor=caller, **created_timeline_data(draft)
    )
    for event in created_events(draft, number=number, customer_id=customer_id):
        uow.publish(event, subject=str(ticket.id))
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
