"""Data access for tickets and customers. Repositories flush, never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, exists, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk_shared.chassis.pagination import PageParams, keyset_page
from helpdesk_shared.chassis.problems import NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import TicketStatus
from intake_service.models import (
    TICKET_NUMBER_SEQ,
    Attachment,
    Customer,
    Delivery,
    IdempotencyKey,
    Message,
    Ticket,
    TimelineEntry,
)
from intake_service.schemas import AttachmentIn


@dataclass(frozen=True)
class TicketFilters:
    status: str | None = None
    kind: str | None = None
    channel: str | None = None
    priority: str | None = None
    assignee_id: uuid.UUID | None = None
    team_id: uuid.UUID | None = None
    category: str | None = None
    domain: str | None = None
    difficult: bool | None = None
    first_response_due_before: datetime | None = None
    resolution_due_before: datetime | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    search_terms: tuple[str, ...] = ()
    newest_first: bool = True


class TicketRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def next_number(self) -> int:
        return int(await self.session.scalar(TICKET_NUMBER_SEQ.next_value().select()) or 0)

    async def add(self, ticket: Ticket) -> Ticket:
        self.session.add(ticket)
        await self.session.flush()
        return ticket

    async def get(self, ticket_id: uuid.UUID, *, for_update: bool = False) -> Ticket | None:
        stmt = select(Ticket).where(Ticket.id == ticket_id)
        if for_update:
            # Locked to be changed: decide on the row as it is now, not on a copy this session
            # loaded before the lock (the ORM keeps an object's attributes unless told otherwise).
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def page(self, params: PageParams, filters: TicketFilters) -> Sequence[Ticket]:
        return (await self.session.execute(self.page_query(params, filters))).scalars().all()

    @staticmethod
    def page_query(params: PageParams, filters: TicketFilters) -> Select[Ticket]:
        stmt = select(Ticket)
        for column, value in (
            (Ticket.status, filters.status),
            (Ticket.kind, filters.kind),
            (Ticket.channel, filters.channel),
            (Ticket.priority, filters.priority),
            (Ticket.assignee_id, filters.assignee_id),
            (Ticket.team_id, filters.team_id),
            # Routing's category, else the channel's hint while routing has not decided one (the
            # expression of ix_tickets_category_created_at).
            (func.coalesce(Ticket.category, Ticket.category_hint), filters.category),
            (Ticket.domain, filters.domain),
            (Ticket.difficult, filters.difficult),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if filters.first_response_due_before is not None:
            # Only tickets still waiting for their first response: no answer delivered, never
            # resolved (a resolution is a response) nor closed — as routing stops that clock.
            answered = exists().where(Delivery.ticket_id == Ticket.id, Delivery.status == "delivered")
            stmt = stmt.where(
                Ticket.first_response_due_at < filters.first_response_due_before,
                Ticket.resolution_count == 0,
                Ticket.status != TicketStatus.CLOSED,
                ~answered,
            )
        if filters.resolution_due_before is not None:
            stmt = stmt.where(
                Ticket.resolution_due_at < filters.resolution_due_before,
                Ticket.status.not_in((TicketStatus.RESOLVED, TicketStatus.CLOSED)),
            )
        if filters.created_from is not None:
            stmt = stmt.where(Ticket.created_at >= filters.created_from)
        if filters.created_to is not None:
            stmt = stmt.where(Ticket.created_at < filters.created_to)
        if filters.search_terms:
            query = func.plainto_tsquery(
                literal_column("'simple'::regconfig"), " ".join(filters.search_terms)
            )
            # The search index's own expression: the planner uses an expression index for it alone.
            vector = func.to_tsvector(literal_column("'simple'::regconfig"), Ticket.search_tokens)
            stmt = stmt.where(vector.op("@@")(query))
        return keyset_page(
            stmt,
            created_col=Ticket.created_at,
            id_col=Ticket.id,
            params=params,
            descending=filters.newest_first,
        )

    async def add_timeline(
        self, ticket_id: uuid.UUID, kind: str, *, at: datetime, actor: str | None, **data: Any
    ) -> None:
        self.session.add(
            TimelineEntry(
                ticket_id=ticket_id,
                kind=kind,
                occurred_at=at,
                actor=actor,
                data=orjson.loads(orjson.dumps(data, default=str)),
            )
        )

    async def timeline(self, ticket_id: uuid.UUID, limit: int) -> Sequence[TimelineEntry]:
        stmt = (
            select(TimelineEntry)
            .where(TimelineEntry.ticket_id == ticket_id)
            .order_by(TimelineEntry.seq)
            .limit(limit)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def add_message(self, message: Message) -> Message:
        self.session.add(message)
        await self.session.flush()
        return message

    async def add_attachments(
        self, ticket_id: uuid.UUID, attachments: Sequence[AttachmentIn], message_id: uuid.UUID | None = None
    ) -> None:
        for a in attachments:
            self.session.add(
                Attachment(
                    id=uuid.uuid4(),
                    ticket_id=ticket_id,
                    message_id=message_id,
                    name=a.name,
                    content_type=a.content_type,
                    size_bytes=a.size_bytes,
                    url=a.url,
                    storage_key=a.storage_key,
                )
            )
        await self.session.flush()

    async def attachments(self, ticket_id: uuid.UUID) -> Sequence[Attachment]:
        stmt = select(Attachment).where(Attachment.ticket_id == ticket_id).order_by(Attachment.created_at)
        return (await self.session.execute(stmt)).scalars().all()

    async def claim_idempotency_key(self, caller: str, key: str, request_hash: str) -> bool:
        """True if this request is the first with the key; a concurrent twin waits for it to commit."""
        result = await self.session.execute(
            pg_insert(IdempotencyKey)
            .values(caller=caller, key=key, request_hash=request_hash)
            .on_conflict_do_nothing()
            .returning(IdempotencyKey.key)
        )
        return result.first() is not None

    async def idempotency_key(self, caller: str, key: str) -> IdempotencyKey | None:
        return await self.session.get(IdempotencyKey, (caller, key), populate_existing=True)


class CustomerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert(
        self, *, external_id: str | None, name: str | None, email: str | None, phone: str | None
    ) -> uuid.UUID:
        """The customer with this external id, created or refreshed (race-free)."""
        if external_id is None:
            customer = Customer(name=name, email=email, phone=phone)
            self.session.add(customer)
            await self.session.flush()
            return customer.id
        insert = pg_insert(Customer).values(
            id=uuid.uuid4(), external_id=external_id, name=name, email=email, phone=phone
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[Customer.external_id],
            set_={
                col: func.coalesce(insert.excluded[col], getattr(Customer, col))
                for col in ("name", "email", "phone")
            },
        ).returning(Customer.id)
        return (await self.session.execute(stmt)).scalar_one()


class TicketNotFound(NotFound):
    slug, title = "ticket-not-found", "Ticket not found"


async def load_ticket(uow: UnitOfWork, ticket_id: uuid.UUID, *, for_update: bool = False) -> Ticket:
    """The ticket, or a 404 problem."""
    ticket = await TicketRepository(uow.session).get(ticket_id, for_update=for_update)
    if ticket is None:
        raise TicketNotFound(f"No ticket with id {ticket_id}")
    return ticket
