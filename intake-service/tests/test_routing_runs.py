"""Routing's decisions applied a run at a time: a run of `ticket.assigned` or `ticket.queued`
events in one transaction, with the same result as one event after another."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import ConsumerRecord
from intake_factories import post_ticket
from prometheus_client import REGISTRY
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers, partition_records
from helpdesk_shared.contracts import EventEnvelope, TicketAssigned, TicketQueued
from helpdesk_shared.contracts.enums import Priority
from intake_service.models import TimelineEntry

LEAD = auth_headers("lead")


def routing_event(payload: TicketAssigned | TicketQueued, correlationid: str) -> EventEnvelope[Any]:
    return EventEnvelope.wrap(
        payload, source="/helpdesk/routing", subject=str(payload.ticket_id), correlationid=correlationid
    )


def records(events: list[EventEnvelope[Any]]) -> list[ConsumerRecord[Any, Any]]:
    return partition_records(events, "helpdesk.routing")


def batches_of(event_type: str) -> float:
    labels = {"service": "intake", "type": event_type}
    return REGISTRY.get_sample_value("helpdesk_event_batch_size_count", labels) or 0.0


async def test_a_run_of_routings_decisions_is_applied_as_one_by_one_would_apply_it(
    intake: ServiceHarness,
) -> None:
    tickets = [await post_ticket(intake, subject=f"續保 {n}", description="想續保") for n in range(3)]
    agents = [uuid.uuid4() for _ in tickets]
    now = datetime.now(UTC)
    queued = [
        routing_event(
            TicketQueued(
                ticket_id=uuid.UUID(t), priority=Priority.NORMAL, queued_at=now, reason="no free capacity"
            ),
            f"corr-{n}",
        )
        for n, t in enumerate(tickets)
    ]
    assigned = [
        routing_event(
            TicketAssigned(
                ticket_id=uuid.UUID(t), agent_id=a, assigned_at=now + timedelta(seconds=1), reason="r"
            ),
            f"corr-{n}",
        )
        for n, (t, a) in enumerate(zip(tickets, agents, strict=True))
    ]
    consumer = intake.runtime.consumer
    assert consumer is not None
    queued_runs, assigned_runs = batches_of(queued[0].type), batches_of(assigned[0].type)

    await consumer.handle_records(records([*queued, *assigned, assigned[0]]))  # and a redelivery

    assert (batches_of(queued[0].type), batches_of(assigned[0].type)) == (queued_runs + 1, assigned_runs + 1)
    for ticket_id, agent_id in zip(tickets, agents, strict=True):
        shown = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
        assert (shown["status"], shown["assignee_id"]) == ("assigned", str(agent_id))
        async with intake.uow() as uow:
            kinds = (
                await uow.session.scalars(
                    select(TimelineEntry.kind)
                    .where(TimelineEntry.ticket_id == ticket_id)
                    .order_by(TimelineEntry.seq)
                )
            ).all()
        assert kinds == ["created", "queued", "assigned", "status_changed"]  # the redelivery changed nothing
