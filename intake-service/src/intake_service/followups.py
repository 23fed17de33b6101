"""Whether the customer wrote after the answers delivered to them were written.

A follow-up sent while an answer was in review does not reopen the ticket, and the answer
delivered after it never addressed it. An answer counts as written when it was submitted for
review (the `answer_submitted` timeline entry of its version), or, with no submission known, when
it was published (its outbound message). Auto-close does not close a ticket with such a follow-up;
a delivery leaves the ticket reopened instead of answered.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, String, cast, func, select
from sqlalchemy.orm import InstrumentedAttribute, aliased

from helpdesk_shared.chassis.uow import UnitOfWork
from intake_service.models import Delivery, Message, Ticket, TimelineEntry

_Outbound = aliased(Message)
# When a delivered answer was written: submitted for review (the earliest submission of that
# version), else published.
_SUBMITTED = (
    select(func.min(TimelineEntry.occurred_at))
    .where(
        TimelineEntry.ticket_id == Delivery.ticket_id,
        TimelineEntry.kind == "answer_submitted",
        TimelineEntry.data["answer_id"].astext == cast(Delivery.answer_id, String),
        TimelineEntry.data["answer_version"].astext == cast(Delivery.answer_version, String),
    )
    .correlate(Delivery)
    .scalar_subquery()
)


def last_answer_written(
    ticket_id: ColumnElement[uuid.UUID] | InstrumentedAttribute[uuid.UUID] | uuid.UUID,
) -> ScalarSelect[Any]:
    """When the ticket's newest delivered answer was written (NULL: none was delivered); for
    `Ticket.id`, correlated to the enclosing query's ticket."""
    return (
        select(func.max(func.coalesce(_SUBMITTED, _Outbound.created_at)))
        .select_from(Delivery)
        .join(_Outbound, _Outbound.id == Delivery.message_id)
        .where(Delivery.ticket_id == ticket_id, Delivery.status == "delivered")
        .correlate(Ticket)
        .scalar_subquery()
    )


async def unanswered_follow_up(uow: UnitOfWork, ticket_id: uuid.UUID) -> uuid.UUID | None:
    """The newest customer message written after the newest delivered answer was (None: none)."""
    await uow.session.flush()  # the delivery just marked delivered counts
    return await uow.session.scalar(
        select(Message.id)
        .where(
            Message.ticket_id == ticket_id,
            Message.direction == "inbound",
            Message.created_at > last_answer_written(ticket_id),
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )
