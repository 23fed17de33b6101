"""Resolved tickets teach the classifier: their text under their final domain, kept no longer than needed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from routing_factories import consume, domain_rule, isolated_team, resolved, ticket_created
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness
from helpdesk_shared.contracts import EventEnvelope, TicketClosed, TicketStatus
from helpdesk_shared.contracts.enums import CloseReason
from routing_service.models import RoutedTicket, TrainingExample


def unique_ticket(**overrides: Any) -> EventEnvelope[Any]:
    return ticket_created(description=f"保單號碼遺失怎麼辦 {uuid.uuid4()}", **overrides)


def text_of(event: EventEnvelope[Any]) -> str:
    return f"{event.data.subject}\n{event.data.description}"


async def examples(routing: ServiceHarness, text: str) -> list[tuple[str, str]]:
    async with routing.uow() as uow:
        rows = await uow.session.execute(
            select(TrainingExample.domain, TrainingExample.source).where(TrainingExample.text == text)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def stored_text(routing: ServiceHarness, ticket_id: uuid.UUID) -> str | None:
    async with routing.uow() as uow:
        return await uow.session.scalar(select(RoutedTicket.text).where(RoutedTicket.ticket_id == ticket_id))


async def test_a_resolved_ticket_becomes_an_example_of_its_final_domain(routing: ServiceHarness) -> None:
    await isolated_team(routing, 3)
    event = unique_ticket()
    await consume(routing, event)
    assert await stored_text(routing, event.data.ticket_id) == text_of(event)

    await consume(routing, resolved(event.data.ticket_id, domain="壽險"))
    await consume(routing, resolved(event.data.ticket_id, domain="車險"))  # resolved again: the text is gone

    assert await examples(routing, text_of(event)) == [("壽險", "resolved_ticket")]
    assert await stored_text(routing, event.data.ticket_id) is None


async def test_without_a_final_domain_the_classified_one_is_used(routing: ServiceHarness) -> None:
    await isolated_team(routing, 3)
    keyword = await domain_rule(routing, "年金")
    event = unique_ticket(subject=f"{keyword} 領取")
    await consume(routing, event)
    await consume(routing, resolved(event.data.ticket_id))
    assert await examples(routing, text_of(event)) == [("年金", "resolved_ticket")]


async def test_the_same_text_and_domain_is_stored_once(routing: ServiceHarness) -> None:
    await isolated_team(routing, 3)
    first = unique_ticket()
    twin = ticket_created(subject=first.data.subject, description=first.data.description)
    for event in (first, twin):
        await consume(routing, event)
        await consume(routing, resolved(event.data.ticket_id, domain="健康險"))
    assert await examples(routing, text_of(first)) == [("健康險", "resolved_ticket")]
    assert await stored_text(routing, twin.data.ticket_id) is None


async def test_no_domain_at_all_or_a_close_without_resolution_only_drops_the_text(
    routing: ServiceHarness,
) -> None:
    await isolated_team(routing, 3)
    unknown, closed = unique_ticket(), unique_ticket()
    for event in (unknown, closed):
        assert await consume(routing, event)  # handled, not skipped as a duplicate
        assert await stored_text(routing, event.data.ticket_id) == text_of(event)  # kept until the end

    assert await consume(routing, resolved(unknown.data.ticket_id))
    assert await consume(
        routing,
        EventEnvelope.wrap(
            TicketClosed(
                ticket_id=closed.data.ticket_id,
                reason=CloseReason.SPAM,
                previous_status=TicketStatus.ASSIGNED,
                closed_at=datetime.now(UTC),
            ),
            source="/helpdesk/intake",
            subject=str(closed.data.ticket_id),
        ),
    )

    for event in (unknown, closed):
        assert await examples(routing, text_of(event)) == []
        assert await stored_text(routing, event.data.ticket_id) is None
