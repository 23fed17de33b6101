"""An erased customer's words leave routing: the classification text of their tickets and the
training examples their resolved tickets became."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from routing_factories import consume, isolated_team, resolved, ticket_created
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness
from helpdesk_shared.contracts import CustomerErased, EventEnvelope
from routing_service.models import RoutedTicket, TrainingExample

NAME = "王小明"


def ticket_of(customer_id: uuid.UUID, **overrides: Any) -> EventEnvelope[Any]:
    fields = {"description": f"我是{NAME}，保單號碼遺失怎麼辦 {uuid.uuid4()}", **overrides}
    return ticket_created(customer_id=customer_id, **fields)


def text_of(event: EventEnvelope[Any]) -> str:
    return f"{event.data.subject}\n{event.data.description}"


def erased(customer_id: uuid.UUID, *tickets: EventEnvelope[Any]) -> EventEnvelope[Any]:
    payload = CustomerErased(
        customer_id=customer_id, ticket_ids=[t.data.ticket_id for t in tickets], erased_at=datetime.now(UTC)
    )
    return EventEnvelope.wrap(payload, source="/helpdesk/intake")


async def stored_text(routing: ServiceHarness, ticket_id: uuid.UUID) -> str | None:
    async with routing.uow() as uow:
        return await uow.session.scalar(select(RoutedTicket.text).where(RoutedTicket.ticket_id == ticket_id))


async def examples(routing: ServiceHarness, text: str) -> list[tuple[str, uuid.UUID | None]]:
    async with routing.uow() as uow:
        rows = await uow.session.execute(
            select(TrainingExample.source, TrainingExample.ticket_id).where(TrainingExample.text == text)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_erasure_drops_the_text_of_open_tickets_and_the_examples_resolved_ones_became(
    routing: ServiceHarness,
) -> None:
    await isolated_team(routing, 5)
    customer, other = uuid.uuid4(), uuid.uuid4()
    open_ticket, resolved_ticket, others = ticket_of(customer), ticket_of(customer), ticket_of(other)
    for event in (open_ticket, resolved_ticket, others):
        await consume(routing, event)
    for event in (resolved_ticket, others):
        await consume(routing, resolved(event.data.ticket_id, domain="壽險"))
    assert await examples(routing, text_of(resolved_ticket)) == [
        ("resolved_ticket", resolved_ticket.data.ticket_id)
    ]

    erasure = erased(customer, open_ticket, resolved_ticket)
    assert await consume(routing, erasure)

    assert await stored_text(routing, open_ticket.data.ticket_id) is None
    assert await examples(routing, text_of(resolved_ticket)) == []
    assert await examples(routing, text_of(others)) == [("resolved_ticket", others.data.ticket_id)]
    # Resolving the open ticket after erasure teaches nothing: its text is gone.
    await consume(routing, resolved(open_ticket.data.ticket_id, domain="壽險"))
    assert await examples(routing, text_of(open_ticket)) == []
    assert not await consume(routing, erasure)  # a redelivery is a duplicate


async def test_an_example_two_tickets_share_goes_with_the_ticket_it_names(routing: ServiceHarness) -> None:
    await isolated_team(routing, 5)
    first_customer, twin_customer = uuid.uuid4(), uuid.uuid4()
    first = ticket_of(first_customer)
    twin = ticket_of(twin_customer, subject=first.data.subject, description=first.data.description)
    for event in (first, twin):
        await consume(routing, event)
        await consume(routing, resolved(event.data.ticket_id, domain="健康險"))
    assert await examples(routing, text_of(first)) == [("resolved_ticket", first.data.ticket_id)]

    await consume(routing, erased(twin_customer, twin))
    assert await examples(routing, text_of(first)) == [("resolved_ticket", first.data.ticket_id)]
    await consume(routing, erased(first_customer, first))
    assert await examples(routing, text_of(first)) == []


async def test_erasure_of_tickets_routing_never_saw_changes_nothing(routing: ServiceHarness) -> None:
    unknown = ticket_of(uuid.uuid4())
    assert await consume(routing, erased(unknown.data.customer_id, unknown))
    assert await stored_text(routing, unknown.data.ticket_id) is None
