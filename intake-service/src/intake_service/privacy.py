"""Customer data: masked views, export and erasure on request (保密).

Personal data lives only in intake: the `customers` table, the text customers wrote (tickets,
messages, rating comments, attachment names), what staff wrote about them (complaint case files,
the timeline's notes) and the raw emails the email channel archived; events and logs carry the
customer's id. Erasure blanks the contact data and the archived emails, and takes the person out
of the text: the tickets stay, so the team's history and metrics survive while the person becomes
anonymous. Routing and kb keep copies of customers' text (classification text, training
examples, FAQ candidates): `customer.erased` events, one per batch of tickets, tell them which
tickets' text to forget.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import any_, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from helpdesk_shared.chassis.auth import Principal
from helpdesk_shared.chassis.problems import NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import Role
from helpdesk_shared.contracts.intake import ERASED_TICKETS_PER_EVENT, CustomerErased
from intake_service.domain.privacy import (
    email_in_external_id,
    field_max_length,
    mask_email,
    mask_external_id,
    mask_name,
    mask_phone,
    redact_person,
    sender_hash,
)
from intake_service.inbound_email import lock_sender
from intake_service.models import (
    Attachment,
    ComplaintCase,
    Customer,
    InboundEmail,
    Message,
    Rating,
    Ticket,
    TimelineEntry,
)
from intake_service.new_ticket import search_tokens, ticket_text
from intake_service.schemas import (
    AttachmentExport,
    AttachmentIn,
    ComplaintCaseUpdate,
    CustomerExport,
    CustomerOut,
    MessageOut,
    RatingExport,
    TicketCreate,
    TicketExport,
)

# Roles that handle contact data themselves: leads and admins. Not channels: an integration
# already holds what it sent, and one channel's token must not read every other channel's customers.
UNMASKED_ROLES = frozenset({Role.LEAD, Role.ADMIN})
# Tickets rewritten per round of statements: a customer with thousands of tickets is erased in a
# few dozen statements, never one per ticket, and never with all their text in memory at once.
# Each batch is one customer.erased event, which names at most this many tickets.
ERASURE_BATCH = ERASED_TICKETS_PER_EVENT
# Redaction can lengthen text (`a@b.c` → `[email]`): cut back to what the columns hold.
_SUBJECT_LENGTH = field_max_length(TicketCreate, "subject")


@dataclass(frozen=True)
class _TextColumns:
    """A table of a ticket's rows whose text columns erasure rewrites in place: each column with
    its limit (None: a text column), the primary key to write back by, and whether the row keeps
    an `updated_at`."""

    model: Any
    key: tuple[str, ...]
    text: dict[str, int | None]
    stamped: bool = False


_TEXT_COLUMNS = (
    _TextColumns(Message, ("id",), {"body": None}),
    _TextColumns(Rating, ("ticket_id", "resolution_count"), {"comment": None}),
    _TextColumns(Attachment, ("id",), {"name": field_max_length(AttachmentIn, "name")}),
    # What staff write about the customer in a complaint's case file.
    _TextColumns(
        ComplaintCase,
        ("ticket_id",),
        {
            "responsible_department": field_max_length(ComplaintCaseUpdate, "responsible_department"),
            "plan": None,
            "result": None,
            "root_cause": None,
            "corrective_action": None,
        },
        stamped=True,
    ),
)
# The timeline's staff notes, by kind: the keys of an entry's `data` that hold text as written
# (a resolve note, a complaint's progress note, a transfer's reason, a reviewer's comment, a mail
# server's refusal). The other keys are ids, statuses, times or intake's and routing's own words.
_TIMELINE_TEXT: dict[str, tuple[str, ...]] = {
    "status_changed": ("note",),
    "complaint": ("note",),
    "transferred": ("reason",),
    "escalated": ("note",),
    "answer_rejected": ("comment",),
    "answer_approved": ("comment",),
    "delivery_failed": ("error",),
}
# A stored phone this short would match business numbers too (an order `1234567` holds `123`):
# erasure rewrites text for good, so only the patterns look for such a phone.
_MIN_KNOWN_PHONE_DIGITS = 6
_DIGIT = re.compile(r"\d")


class CustomerNotFound(NotFound):
    slug, title = "customer-not-found", "Customer not found"


def customer_view(customer: Customer, principal: Principal) -> CustomerOut:
    masked = not principal.has_any(UNMASKED_ROLES)
    return CustomerOut(
        id=customer.id,
        external_id=mask_external_id(customer.external_id) if masked else customer.external_id,
        name=mask_name(customer.name) if masked else customer.name,
        email=mask_email(customer.email) if masked else customer.email,
        phone=mask_phone(customer.phone) if masked else customer.phone,
        masked=masked,
        erased=customer.erased_at is not None,
        created_at=customer.created_at,
    )


async def _load(uow: UnitOfWork, customer_id: uuid.UUID, *, for_update: bool = False) -> Customer:
    customer = await uow.session.get(
        Customer, customer_id, with_for_update=for_update, populate_existing=for_update
    )
    if customer is None:
        raise CustomerNotFound(f"No customer with id {customer_id}")
    return customer


async def get_customer(uow: UnitOfWork, customer_id: uuid.UUID, principal: Principal) -> CustomerOut:
    return customer_view(await _load(uow, customer_id), principal)


async def export_customer(uow: UnitOfWork, customer_id: uuid.UUID, principal: Principal) -> CustomerExport:
    """Everything intake holds about one customer (a data subject access request)."""
    customer = await _load(uow, customer_id)
    tickets = select(Ticket.id).where(Ticket.customer_id == customer_id)

    async def rows(stmt: Any) -> Sequence[Any]:
        found: Sequence[Any] = (await uow.session.execute(stmt)).scalars().all()
        return found

    return CustomerExport(
        customer=customer_view(customer, principal),
        tickets=[
            TicketExport.model_validate(t)
            for t in await rows(
                select(Ticket).where(Ticket.customer_id == customer_id).order_by(Ticket.created_at, Ticket.id)
            )
        ],
        messages=[
            MessageOut.model_validate(m)
            for m in await rows(
                select(Message).where(Message.ticket_id.in_(tickets)).order_by(Message.created_at, Message.id)
            )
        ],
        attachments=[
            AttachmentExport.model_validate(a)
            for a in await rows(
                select(Attachment)
                .where(Attachment.ticket_id.in_(tickets))
                .order_by(Attachment.created_at, Attachment.id)
            )
        ],
        ratings=[
            RatingExport.model_validate(r)
            for r in await rows(
                select(Rating)
                .where(Rating.ticket_id.in_(tickets))
                .order_by(Rating.rated_at, Rating.ticket_id)
            )
        ],
    )


@dataclass(frozen=True)
class _Person:
    """What erasure looks for in text: the customer's contacts and name as they were stored."""

    name: str | None
    known: tuple[str, ...]

    @classmethod
    def of(cls, customer: Customer) -> _Person:
        phone = customer.phone
        if phone and len(_DIGIT.findall(phone)) < _MIN_KNOWN_PHONE_DIGITS:
            phone = None
        known = (customer.email, phone, email_in_external_id(customer.external_id))
        return cls(name=customer.name, known=tuple(v for v in known if v))

    def redact(self, text: str) -> str:
        return redact_person(text, name=self.name, known=self.known)


def _rewrite(rows: Sequence[Any], redact: Callable[[Any], dict[str, Any] | None]) -> list[dict[str, Any]]:
    return [change for row in rows if (change := redact(row)) is not None]


async def _rewrite_batch(uow: UnitOfWork, person: _Person, ticket_ids: Sequence[uuid.UUID]) -> None:
    """Take the person out of one batch of their (locked) tickets: a query and at most one
    UPDATE (executemany) per table, the text work in a thread (segmentation is CPU-bound)."""
    session, now = uow.session, datetime.now(UTC)
    tickets = (
        await session.execute(
            select(Ticket.id, Ticket.subject, Ticket.description).where(Ticket.id.in_(ticket_ids))
        )
    ).all()
    columns = [
        (
            table,
            (
                await session.execute(
                    select(*(getattr(table.model, name) for name in (*table.key, *table.text))).where(
                        table.model.ticket_id.in_(ticket_ids)
                    )
                )
            ).all(),
        )
        for table in _TEXT_COLUMNS
    ]
    entries = (
        await session.execute(
            select(TimelineEntry.seq, TimelineEntry.kind, TimelineEntry.data).where(
                TimelineEntry.ticket_id.in_(ticket_ids), TimelineEntry.kind.in_(_TIMELINE_TEXT)
            )
        )
    ).all()

    def ticket(row: Any) -> dict[str, Any] | None:
        subject = person.redact(row.subject)[:_SUBJECT_LENGTH]
        description = person.redact(row.description)
        if (subject, description) == (row.subject, row.description):
            return None
        return {
            "id": row.id,
            "subject": subject,
            "description": description,
            "search_tokens": search_tokens(ticket_text(subject, description)),
            "updated_at": now,
        }

    def text_columns(table: _TextColumns) -> Callable[[Any], dict[str, Any] | None]:
        def rewrite(row: Any) -> dict[str, Any] | None:
            # Every column of every changed row, changed or not: rows with one key set make one
            # executemany.
            text = {
                name: None if (value := getattr(row, name)) is None else person.redact(value)[:limit]
                for name, limit in table.text.items()
            }
            if all(text[name] == getattr(row, name) for name in table.text):
                return None
            key = {name: getattr(row, name) for name in table.key}
            return {**key, **text, **({"updated_at": now} if table.stamped else {})}

        return rewrite

    def entry(row: Any) -> dict[str, Any] | None:
        data = dict(row.data or {})
        for key in _TIMELINE_TEXT[row.kind]:
            if isinstance(text := data.get(key), str):
                data[key] = person.redact(text)
        return None if data == row.data else {"seq": row.seq, "data": data}

    def redact_all() -> list[tuple[Any, list[dict[str, Any]]]]:
        return [
            (Ticket, _rewrite(tickets, ticket)),
            *((table.model, _rewrite(rows, text_columns(table))) for table, rows in columns),
            (TimelineEntry, _rewrite(entries, entry)),
        ]

    for model, changes in await asyncio.to_thread(redact_all):
        if changes:
            await session.execute(update(model), changes)  # by primary key, as one executemany


async def _lock_tickets(uow: UnitOfWork, customer_id: uuid.UUID) -> list[uuid.UUID]:
    return list(
        (
            await uow.session.execute(
                select(Ticket.id)
                .where(Ticket.customer_id == customer_id)
                .order_by(Ticket.id)
                .with_for_update()
            )
        ).scalars()
    )


async def erase_customer(uow: UnitOfWork, customer_id: uuid.UUID, principal: Principal) -> CustomerOut:
    """Blank the contact data, take the person out of their tickets' text, empty their emails.

    Locks, in the order every other writer takes them: the customer's tickets (in id order), the
    customer, then the archive's sender lock. A follow-up, a threaded email or a rating either
    commits before erasure reads the ticket or waits until erasure has committed. The email
    channel locks a ticket before it upserts the ticket's customer (a reply to a closed ticket
    opens a follow-up), so the customer is locked after the tickets, not before.

    Each archived email stays, emptied, so a redelivery of one is still recognised. Each batch of
    tickets is announced (`customer.erased`) in the same transaction, so routing and kb forget
    their copies of the text exactly when intake does; a customer without tickets announces nothing.
    """
    await _lock_tickets(uow, customer_id)
    customer = await _load(uow, customer_id, for_update=True)
    # Again: a ticket created while erasure waited for the customer. None can follow it now
    # (a new ticket's row needs the customer's, which erasure holds).
    ticket_ids = await _lock_tickets(uow, customer_id)
    person = _Person.of(customer)
    addresses = (customer.email, email_in_external_id(customer.external_id))
    senders = sorted({digest for digest in map(sender_hash, addresses) if digest})
    erased_at = customer.erased_at or datetime.now(UTC)
    for start in range(0, len(ticket_ids), ERASURE_BATCH):
        batch = ticket_ids[start : start + ERASURE_BATCH]
        await _rewrite_batch(uow, person, batch)
        # Erasing again announces again: a service that missed the first one (restored from a
        # backup, say) catches up, and the others find nothing left to forget.
        uow.publish(
            CustomerErased(customer_id=customer_id, ticket_ids=batch, erased_at=erased_at),
            subject=str(customer_id),
        )
    for digest in senders:
        await lock_sender(uow, digest)
    # The ids as one array, not a subquery: each arm of the OR then reads its own index.
    tickets = bindparam("tickets", ticket_ids, type_=ARRAY(PG_UUID(as_uuid=True)))
    await uow.session.execute(
        update(InboundEmail)
        .where(
            or_(
                InboundEmail.ticket_id == any_(tickets),
                InboundEmail.thread_ticket_id == any_(tickets),
                InboundEmail.sender_hash.in_(senders),
            )
        )
        .values(raw=b"", sender_hash=None)
    )
    customer.name = customer.email = customer.phone = customer.external_id = None
    customer.erased_at = erased_at
    out = customer_view(customer, principal)
    await uow.commit()
    return out
