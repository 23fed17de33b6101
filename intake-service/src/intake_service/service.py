"""Intake use cases for accepting and finding tickets. Each runs in one unit of work."""

from __future__ import annotations

import uuid

from helpdesk_shared.chassis.auth import Principal
from helpdesk_shared.chassis.pagination import PageParams
from helpdesk_shared.chassis.problems import Conflict
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import Role, TicketKind
from intake_service.models import ComplaintCase, Ticket
from intake_service.new_ticket import (
    TicketDraft,
    created_events,
    created_timeline_data,
    ticket_number,
    ticket_row,
)
from intake_service.repository import (
    CustomerRepository,
    TicketFilters,
    TicketRepository,
    load_ticket,
    ticket_cursor,
)
from intake_service.schemas import AttachmentOut, TicketCreate, TicketOut


class IdempotencyKeyReused(Conflict):
    slug, title = "idempotency-key-reused", "Idempotency-Key already used for a different request"


# The people who work tickets. Every other reader of a ticket is a channel integration: a
# customer-facing front, which may show the customer whatever it is given.
STAFF_ROLES = frozenset({Role.AGENT, Role.REVIEWER, Role.LEAD, Role.ADMIN})
# Routing's decisions mirrored on a ticket: its internal taxonomy (domain, category), its judgement
# of the ticket (difficult), which SLA policy (and so which class of customer) matched, its
# internal targets and its escalations — for staff, as the timeline keeps `classified` and
# `escalated` entries to them. The due times are not a promise to make to a customer either:
# intake's copies are as matched at classification, while routing's clocks pause and move them.
ROUTING_DECISIONS = (
    "domain",
    "category",
    "difficult",
    "sla_policy_id",
    "first_response_due_at",
    "resolution_due_at",
    "escalated_at",
)
_NOT_SHOWN_TO_CHANNELS = dict.fromkeys(ROUTING_DECISIONS)


def channel_view(ticket: TicketOut) -> TicketOut:
    """The ticket as a channel integration sees it: routing's decisions null."""
    return ticket.model_copy(update=_NOT_SHOWN_TO_CHANNELS)


def ticket_view(ticket: Ticket, reader: Principal) -> TicketOut:
    """The ticket as `reader` may see it: whole for staff, else `channel_view`."""
    out = TicketOut.model_validate(ticket)
    return out if reader.has_any(STAFF_ROLES) else channel_view(out)


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
    # Only channels create tickets: their view, as the first response gave it (routing may have
    # decided since).
    return channel_view(TicketOut.model_validate(await load_ticket(uow, claimed.ticket_id)))


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


async def get_ticket(uow: UnitOfWork, ticket_id: uuid.UUID, reader: Principal) -> TicketOut:
    return ticket_view(await load_ticket(uow, ticket_id), reader)


async def list_tickets(
    uow: UnitOfWork, params: PageParams, filters: TicketFilters, reader: Principal
) -> tuple[list[TicketOut], str | None]:
    rows = list(await TicketRepository(uow.session).page(params, filters))
    if len(rows) <= params.limit:
        return [ticket_view(t, reader) for t in rows], None
    page = rows[: params.limit]
    return [ticket_view(t, reader) for t in page], ticket_cursor(page[-1], filters.sort)


async def list_attachments(uow: UnitOfWork, ticket_id: uuid.UUID) -> list[AttachmentOut]:
    await load_ticket(uow, ticket_id)
    return [
        AttachmentOut.model_validate(a) for a in await TicketRepository(uow.session).attachments(ticket_id)
    ]
