"""Test helpers for intake: routing's decisions delivered as routing would announce them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from helpdesk_runtime.testing import ServiceHarness
from helpdesk_shared.contracts import EventEnvelope, TicketAssigned, TicketQueued
from helpdesk_shared.contracts.enums import Priority


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
