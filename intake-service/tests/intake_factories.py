"""Test helpers for intake: tickets posted by a channel, other services' events delivered as
they would announce them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import EventEnvelope, TicketAssigned, TicketQueued
from helpdesk_shared.contracts.enums import Priority
from helpdesk_shared.contracts.envelope import EventPayload
from helpdesk_shared.contracts.review import AnswerPublished

CHANNEL = auth_headers("channel", sub="web-portal")


async def post_ticket(
    intake: ServiceHarness,
    *,
    subject: str,
    description: str,
    kind: str = "question",
    channel: str = "web",
    customer: dict[str, str] | None = None,
) -> str:
    """A ticket posted through the channel API (for a fresh customer unless given); returns its id."""
    response = await intake.client.post(
        "/v1/tickets",
        headers=CHANNEL,
        json={
            "channel": channel,
            "kind": kind,
            "subject": subject,
            "description": description,
            "customer": customer or {"external_id": f"c-{uuid.uuid4()}"},
        },
    )
    assert response.status_code == 201, response.text
    ticket_id: str = response.json()["id"]
    return ticket_id


async def deliver(intake: ServiceHarness, payload: EventPayload, *, service: str) -> EventEnvelope[Any]:
    """Apply `payload` as `service` would announce it (its source and topic); asserts it was new."""
    consumer = intake.runtime.consumer
    assert consumer is not None
    ticket_id = payload.model_dump(include={"ticket_id"})["ticket_id"]  # every event intake consumes has one
    event = EventEnvelope.wrap(payload, source=f"/helpdesk/{service}", subject=str(ticket_id))
    assert await consumer.handle_event(event, topic=f"helpdesk.{service}")
    return event


async def assign(intake: ServiceHarness, ticket_id: str, agent_id: uuid.UUID | None = None) -> uuid.UUID:
    """Deliver a `ticket.assigned` for the ticket; returns the agent's id."""
    agent_id = agent_id or uuid.uuid4()
    consumer = intake.runtime.consumer
    assert consumer is not None
    event = EventEnvelope.wrap(
        TicketAssigned(
            ticket_id=uuid.UUID(ticket_id), agent_id=agent_id, assigned_at=datetime.now(UTC), reason="test"
        ),
        source="/helpdesk/routing",
        subject=ticket_id,
    )
    await consumer.handle_event(event, topic="helpdesk.routing")
    return agent_id


async def queue(intake: ServiceHarness, ticket_id: str, reason: str = "no free capacity") -> None:
    """Deliver a `ticket.queued` for the ticket, as routing announces it."""
    consumer = intake.runtime.consumer
    assert consumer is not None
    event = EventEnvelope.wrap(
        TicketQueued(
            ticket_id=uuid.UUID(ticket_id), priority=Priority.HIGH, queued_at=datetime.now(UTC), reason=reason
        ),
        source="/helpdesk/routing",
        subject=ticket_id,
    )
    await consumer.handle_event(event, topic="helpdesk.routing")


async def publish_answer(
    intake: ServiceHarness,
    ticket_id: str,
    body: str = "您好，已為您處理。",
    *,
    answer_id: uuid.UUID | None = None,
    version: int = 1,
    correlationid: str | None = None,
    traceparent: str | None = None,
) -> bool:
    """Review's `answer.published` for the ticket, handled by intake's consumer (False: a copy)."""
    consumer = intake.runtime.consumer
    assert consumer is not None
    event = EventEnvelope.wrap(
        AnswerPublished(
            ticket_id=uuid.UUID(ticket_id),
            answer_id=answer_id or uuid.uuid4(),
            answer_version=version,
            author_id=uuid.uuid4(),
            reviewer_id=uuid.uuid4(),
            body=body,
            published_at=datetime.now(UTC),
        ),
        source="/helpdesk/review",
        subject=ticket_id,
        correlationid=correlationid,
        traceparent=traceparent,
    )
    return await consumer.handle_event(event, topic="helpdesk.review")
