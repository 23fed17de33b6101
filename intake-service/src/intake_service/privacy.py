"""Customer data: masked views, export and erasure on request (保密).

Personal data lives only in intake (the `customers` table, and the raw emails the email channel
archived); events and logs carry the customer's id. Erasure blanks the contact data and the
customer's archived emails and keeps the tickets, so the team's history and metrics survive
while the person becomes anonymous.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select, update

from helpdesk_shared.chassis.auth import Principal
from helpdesk_shared.chassis.problems import NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import Role
from intake_service.domain.privacy import mask_email, mask_name, mask_phone
from intake_service.models import Customer, InboundEmail, Message, Ticket
from intake_service.schemas import CustomerExport, CustomerOut, MessageOut, TicketOut

# Roles that handle contact data themselves: leads and admins. Not channels: an integration
# already holds what it sent, and one channel's token must not read every other channel's customers.
UNMASKED_ROLES = frozenset({Role.LEAD, Role.ADMIN})


class CustomerNotFound(NotFound):
    slug, title = "customer-not-found", "Customer not found"


def customer_view(customer: Customer, principal: Principal) -> CustomerOut:
    masked = not principal.has_any(UNMASKED_ROLES)
    return CustomerOut(
        id=customer.id,
        external_id=customer.external_id,
        name=mask_name(customer.name) if masked else customer.name,
        email=mask_email(customer.email) if masked else customer.email,
        phone=mask_phone(customer.phone) if masked else customer.phone,
        masked=masked,
        erased=customer.erased_at is not None,
        created_at=customer.created_at,
    )


async def _load(uow: UnitOfWork, customer_id: uuid.UUID, *, for_update: bool = False) -> Customer:
    customer = await uow.session.get(Customer, customer_id, with_for_update=for_update)
    if customer is None:
        raise CustomerNotFound(f"No customer with id {customer_id}")
    return customer


async def get_customer(uow: UnitOfWork, customer_id: uuid.UUID, principal: Principal) -> CustomerOut:
    return customer_view(await _load(uow, customer_id), principal)


async def export_customer(uow: UnitOfWork, customer_id: uuid.UUID, principal: Principal) -> CustomerExport:
    """Everything intake holds about one customer (a data subject access request)."""
    customer = await _load(uow, customer_id)
    tickets = (
        (
            await uow.session.execute(
                select(Ticket).where(Ticket.customer_id == customer_id).order_by(Ticket.created_at)
            )
        )
        .scalars()
        .all()
    )
    messages = (
        (
            await uow.session.execute(
                select(Message)
                .join(Ticket, Ticket.id == Message.ticket_id)
                .where(Ticket.customer_id == customer_id)
                .order_by(Message.created_at)
            )
        )
        .scalars()
        .all()
    )
    return CustomerExport(
        customer=customer_view(customer, principal),
        tickets=[TicketOut.model_validate(t) for t in tickets],
        messages=[MessageOut.model_validate(m) for m in messages],
    )


async def erase_customer(uow: UnitOfWork, customer_id: uuid.UUID, principal: Principal) -> CustomerOut:
    """Blank the contact data; the tickets stay, attributed to an anonymous customer.

    The raw emails archived for the customer's tickets go too (their headers name the sender):
    each archive row stays, emptied, so a redelivery of one is still recognised.
    """
    customer = await _load(uow, customer_id, for_update=True)
    customer.name = customer.email = customer.phone = customer.external_id = None
    customer.erased_at = customer.erased_at or datetime.now(UTC)
    await uow.session.execute(
        update(InboundEmail)
        .where(InboundEmail.ticket_id.in_(select(Ticket.id).where(Ticket.customer_id == customer_id)))
        .values(raw=b"")
    )
    out = customer_view(customer, principal)
    await uow.commit()
    return out
