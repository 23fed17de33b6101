"""Data access for tickets and customers. Repositories flush, never commit."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    case,
    exists,
    func,
    inspect,
    literal,
    literal_column,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute, aliased

from helpdesk_shared.chassis.pagination import InvalidCursor, PageParams, encode_cursor, keyset_page
from helpdesk_shared.chassis.problems import NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import Priority, TicketStatus
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

# The orders tickets are listed in: by a column, `-` for the other way round; ties go by the id
# (priority: by rank, urgent above low, then by creation, then by id).
TicketSort = Literal["-created_at", "created_at", "-updated_at", "updated_at", "-priority", "priority"]
_RANK_OF = {p.value: p.rank for p in Priority}


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
    # The category filter matches the channel's own category_hint only, not routing's decision (a
    # channel integration's list must not tell which tickets routing put in a category).
    category_hint_only: bool = False
    sort: TicketSort = "-created_at"


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
            # Reading it again discards changes to the copy not yet written (sessions do not
            # autoflush): those of this very transaction — an earlier event of a run of routing's
            # about the same ticket — are written first. Only then: no statement for the others.
            held = self.session.identity_map.get(self.session.identity_key(Ticket, ticket_id))
            if held is not None and inspect(held).modified:
                await self.session.flush()
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
            (
                Ticket.category_hint
                if filters.category_hint_only
                else func.coalesce(Ticket.category, Ticket.category_hint),
                filters.category,
            ),
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
        descending = filters.sort.startswith("-")
        if filters.sort in ("-created_at", "created_at"):
            return keyset_page(
                stmt, created_col=Ticket.created_at, id_col=Ticket.id, params=params, descending=descending
            )
        if filters.sort in ("-updated_at", "updated_at"):
            # No index: one on updated_at would be written by every ticket stored and every change
            # to one (POST /v1/tickets among them), for a list sorted this way now and then. The
            # filtered tickets are sorted instead: narrow large lists with filters.
            order = (Ticket.updated_at, Ticket.id)
            if params.cursor:
                updated_at, row_id = _position(params.cursor, filters.sort)
                stmt = stmt.where(_beyond(order, (updated_at, row_id), descending))
            return stmt.order_by(*_ordered(order, descending)).limit(params.limit + 1)
        return _by_priority(stmt, params, descending, filters.sort)

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


Columns = Sequence[ColumnElement[Any] | QueryableAttribute[Any]]


def _ordered(columns: Columns, descending: bool) -> list[ColumnElement[Any]]:
    return [c.desc() if descending else c.asc() for c in columns]


def _beyond(columns: Columns, position: Sequence[Any], descending: bool) -> ColumnElement[bool]:
    """The rows after `position` in the columns' order: a row comparison, which an index on the
    leading columns serves as a range."""
    row = tuple_(*columns)
    bound = tuple_(*(literal(value, column.type) for column, value in zip(columns, position, strict=True)))
    return row < bound if descending else row > bound


def _by_priority(
    stmt: Select[Ticket], params: PageParams, descending: bool, sort: TicketSort
) -> Select[Ticket]:
    """The page by priority rank, then creation, then id: a branch per priority, each read in
    creation order through ix_tickets_priority_created_at and cut at the page size, then the few
    rows of the branches merged. (An ORDER BY on the rank would sort every matching ticket for
    each page; an index on the rank would cost every new ticket one more write.)"""
    after = _position(params.cursor, sort) if params.cursor else None
    within = (Ticket.created_at, Ticket.id)
    branches = []
    for priority in sorted(Priority, key=lambda p: p.rank, reverse=descending):
        branch = stmt.where(Ticket.priority == priority.value)
        if after is not None:
            rank, created_at, row_id = after
            if rank == priority.rank:
                branch = branch.where(_beyond(within, (created_at, row_id), descending))
            elif (priority.rank > rank) == descending:
                continue  # a priority the cursor is past
        branches.append(branch.order_by(*_ordered(within, descending)).limit(params.limit + 1))
    merged = aliased(Ticket, union_all(*branches).subquery("by_priority"))
    rank_of = case(_RANK_OF, value=merged.priority)
    order = (rank_of, merged.created_at, merged.id)
    return select(merged).order_by(*_ordered(order, descending)).limit(params.limit + 1)


def ticket_cursor(ticket: Ticket, sort: TicketSort) -> str:
    """The cursor of the tickets after `ticket` in the `sort` order.

    By creation it is the lists' usual cursor (the time and the id), as it always was; a cursor of
    another order names its sort first, so that it is refused with any other: `[sort, updated_at,
    id]` or `[sort, rank, created_at, id]`.
    """
    if sort in ("-created_at", "created_at"):
        return encode_cursor(ticket.created_at, ticket.id)
    if sort in ("-updated_at", "updated_at"):
        values: list[Any] = [sort, ticket.updated_at.isoformat(), str(ticket.id)]
    else:
        values = [sort, _RANK_OF[ticket.priority], ticket.created_at.isoformat(), str(ticket.id)]
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def _moment(text: Any) -> datetime:
    """A time as cursors hold it: with a UTC offset, and one UTC can hold (as `decode_cursor`)."""
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        raise ValueError("no UTC offset")
    moment.astimezone(UTC)
    return moment


def _position(cursor: str, sort: TicketSort) -> tuple[Any, ...]:
    """Where a cursor of the `sort` order stands: `(updated_at, id)` or `(rank, created_at, id)`.
    A cursor of another order (or none of ours) is a 422 problem."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidCursor("The cursor is malformed; start again without it") from exc
    if not isinstance(values, list) or not values or values[0] != sort:
        raise InvalidCursor(f"The cursor is not one of sort={sort}'s pages; start again without it")
    try:
        if sort in ("-updated_at", "updated_at"):
            _, updated_at, row_id = values
            return _moment(updated_at), uuid.UUID(row_id)
        _, rank, created_at, row_id = values
        if type(rank) is not int or rank not in _RANK_OF.values():  # a bool is an int too
            raise ValueError("not a priority rank")
        return rank, _moment(created_at), uuid.UUID(row_id)
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise InvalidCursor("The cursor is malformed; start again without it") from exc


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
