"""Review mirrors a ticket's collaborators (who may draft answers besides the assignee) from
routing's `ticket.collaborators_changed`: each event carries the whole list, the latest wins."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import INBOX
from helpdesk_shared.contracts import EventEnvelope, TicketAssigned, TicketCollaboratorsChanged

LEAD = auth_headers("lead")


async def deliver(review: ServiceHarness, payload: TicketAssigned | TicketCollaboratorsChanged) -> bool:
    consumer = review.runtime.consumer
    assert consumer is not None
    event = EventEnvelope.wrap(payload, source="/helpdesk/routing", subject=str(payload.ticket_id))
    return await consumer.handle_event(event, topic="helpdesk.routing")


def changed(ticket_id: uuid.UUID, ids: list[uuid.UUID], at: datetime) -> TicketCollaboratorsChanged:
    return TicketCollaboratorsChanged(
        ticket_id=ticket_id, collaborator_ids=ids, changed_by=uuid.uuid4(), changed_at=at
    )


async def assigned_ticket(review: ServiceHarness) -> tuple[uuid.UUID, uuid.UUID]:
    ticket_id, owner = uuid.uuid4(), uuid.uuid4()
    await deliver(
        review, TicketAssigned(ticket_id=ticket_id, agent_id=owner, assigned_at=datetime.now(UTC), reason="t")
    )
    return ticket_id, owner


async def owner(review: ServiceHarness, ticket_id: uuid.UUID) -> dict[str, object]:
    response = await review.client.get(f"/v1/tickets/{ticket_id}/owner", headers=LEAD)
    assert response.status_code == 200, response.text
    shown: dict[str, object] = response.json()
    return shown


async def test_the_owner_view_lists_the_collaborators_in_the_latest_list(review: ServiceHarness) -> None:
    ticket_id, agent_id = await assigned_ticket(review)
    first, second = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)

    assert (await owner(review, ticket_id))["collaborator_ids"] == []
    await deliver(review, changed(ticket_id, [first], now))
    await deliver(review, changed(ticket_id, [first, second], now + timedelta(seconds=1)))
    shown = await owner(review, ticket_id)
    assert shown["agent_id"] == str(agent_id)
    assert shown["collaborator_ids"] == [str(first), str(second)]

    await deliver(review, changed(ticket_id, [], now + timedelta(seconds=2)))
    assert (await owner(review, ticket_id))["collaborator_ids"] == []


async def test_an_older_list_arriving_late_is_ignored(review: ServiceHarness) -> None:
    ticket_id, _ = await assigned_ticket(review)
    kept, stale = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)

    await deliver(review, changed(ticket_id, [kept], now))
    await deliver(review, changed(ticket_id, [stale, kept], now - timedelta(minutes=1)))
    assert (await owner(review, ticket_id))["collaborator_ids"] == [str(kept)]

    await deliver(review, changed(ticket_id, [], now + timedelta(seconds=1)))
    await deliver(review, changed(ticket_id, [stale], now - timedelta(minutes=2)))  # cleared stays cleared
    assert (await owner(review, ticket_id))["collaborator_ids"] == []


async def test_a_redelivered_change_is_applied_once_and_an_unknown_owner_stays_a_404(
    review: ServiceHarness,
) -> None:
    ticket_id, helper = uuid.uuid4(), uuid.uuid4()
    event = EventEnvelope.wrap(
        changed(ticket_id, [helper], datetime.now(UTC)), source="/helpdesk/routing", subject=str(ticket_id)
    )
    consumer = review.runtime.consumer
    assert consumer is not None

    assert await consumer.handle_event(event, topic="helpdesk.routing")
    assert not await consumer.handle_event(event, topic="helpdesk.routing")

    async with review.uow() as uow:
        outcome = await uow.session.scalar(select(INBOX.c.outcome).where(INBOX.c.event_id == event.id))
    assert outcome == "processed"
    unknown = await review.client.get(f"/v1/tickets/{ticket_id}/owner", headers=LEAD)
    assert unknown.status_code == 404  # collaborators known, the assignment not (yet)
    assert unknown.headers["content-type"] == "application/problem+json"
    agent_id = uuid.uuid4()
    await deliver(
        review,
        TicketAssigned(ticket_id=ticket_id, agent_id=agent_id, assigned_at=datetime.now(UTC), reason="t"),
    )
    assert (await owner(review, ticket_id))["collaborator_ids"] == [str(helper)]
