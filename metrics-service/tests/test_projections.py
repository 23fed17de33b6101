"""Metrics builds ticket facts from events, in whatever order they arrive, once each."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import EventEnvelope, TicketAssigned, TicketCreated

OPS = auth_headers("ops")


async def summary(metrics: ServiceHarness) -> dict[str, int]:
    response = await metrics.client.get("/v1/metrics/summary", headers=OPS)
    assert response.status_code == 200
    result: dict[str, int] = response.json()
    return result


async def test_assignment_before_creation_and_redelivery_count_once(metrics: ServiceHarness) -> None:
    consumer = metrics.runtime.consumer
    assert consumer is not None
    ticket_id = uuid.uuid4()
    now = datetime.now(UTC)
    created = EventEnvelope.wrap(
        TicketCreated(
            ticket_id=ticket_id,
            number="HD-000042",
            channel="email",
            kind="complaint",
            subject="投訴",
            description="服務態度差",
            priority="high",
            customer_id=uuid.uuid4(),
            created_at=now,
        ),
        source="/helpdesk/intake",
        subject=str(ticket_id),
    )
    assigned = EventEnvelope.wrap(
        TicketAssigned(ticket_id=ticket_id, agent_id=uuid.uuid4(), assigned_at=now, reason="test"),
        source="/helpdesk/routing",
        subject=str(ticket_id),
    )
    before = await summary(metrics)

    for event, topic in (
        (assigned, "helpdesk.routing"),
        (created, "helpdesk.intake"),
        (created, "helpdesk.intake"),
    ):
        await consumer.handle_event(event, topic=topic)

    after = await summary(metrics)
    assert after["tickets_created"] == before["tickets_created"] + 1
    assert after["tickets_assigned"] == before["tickets_assigned"] + 1


async def test_summary_needs_lead_or_ops(metrics: ServiceHarness) -> None:
    response = await metrics.client.get("/v1/metrics/summary", headers=auth_headers("agent"))
    assert response.status_code == 403
