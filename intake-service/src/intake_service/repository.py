"""Data access for tickets and customers. Repositories flush, never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk_shared.chassis.pagination import PageParams, keyset_page
from intake_service.models import TICKET_NUMBER_SEQ, Customer, Ticket


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
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def page(self, params: PageParams, *, status: str | None = None) -> Sequence[Ticket]:
        stmt = select(Ticket)
        if status:
            stmt = stmt.where(Ticket.status == status)
        stmt = keyset_page(stmt, created_col=Ticket.created_at, id_col=Ticket.id, params=params)
        return (await self.session.execute(stmt)).scalars().all()


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
