"""Metrics credits a ticket to the agent who holds it now: routing's assignments and transfers,
the newest of them by their own time, whatever order they arrive in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from helpdesk_runtime.testing import ServiceHarness, auth_headers, consume_from
from helpdesk_shared.contracts import EventEnvelope, TicketAssigned, TicketTransferred
from metrics_service.models import TicketFact

OPS = auth_headers("ops")


def assigned(ticket_id: uuid.UUID, agent_id: uuid.UUID, at: datetime) -> EventEnvelope[TicketAssigned]:
    return EventEnvelope.wrap(
        TicketAssigned(ticket_id=ticket_id, agent_id=agent_id, assigned_at=at, reason="test"),
        source="/helpdesk/routing",
        subject=str(ticket_id),
    )


def transferred(
    ticket_id: uuid.UUID, from_agent: uuid.UUID, to_agent: uuid.UUID, at: datetime
) -> EventEnvelope[TicketTransferred]:
    return EventEnvelope.wrap(
        TicketTransferred(
            ticket_id=ticket_id,
            transfer_id=uuid.uuid4(),
            from_agent_id=from_agent,
            to_agent_id=to_agent,
            requested_by=from_agent,
            reason="needs the claims team",
            transferred_at=at,
        ),
        source="/helpdesk/routing",
        subject=str(ticket_id),
    )


@dataclass(frozen=True)
class Credit:
    agent_id: uuid.UUID | None
    assigned_at: datetime | None


async def fact(metrics: ServiceHarness, ticket_id: uuid.UUID) -> Credit:
    async with metrics.uow() as uow:
        row = await uow.session.get(TicketFact, ticket_id)
        assert row is not None
        return Credit(row.agent_id, row.assigned_at)


async def tickets_assigned(metrics: ServiceHarness) -> int:
    response = await metrics.client.get("/v1/metrics/summary", headers=OPS)
    assert response.status_code == 200
    count: int = response.json()["tickets_assigned"]
    return count


async def test_a_transfer_credits_the_new_assignee_and_leaves_the_assignment_alone(
    metrics: ServiceHarness,
) -> None:
    ticket_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    before = await tickets_assigned(metrics)

    await consume_from(
        metrics,
        "helpdesk.routing",
        assigned(ticket_id, first, now),
        transferred(ticket_id, first, second, now + timedelta(minutes=5)),
    )

    row = await fact(metrics, ticket_id)
    assert row.agent_id == second
    assert row.assigned_at == now  # a transfer is not an assignment
    assert await tickets_assigned(metrics) == before + 1


async def test_the_newest_hand_over_wins_whatever_order_the_events_arrive_in(metrics: ServiceHarness) -> None:
    now = datetime.now(UTC)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    # Assigned, transferred, then reopened and assigned to a third agent — delivered backwards.
    reopened = uuid.uuid4()
    await consume_from(
        metrics,
        "helpdesk.routing",
        assigned(reopened, third, now + timedelta(hours=1)),
        transferred(reopened, first, second, now + timedelta(minutes=5)),
        assigned(reopened, first, now),
    )
    assert (await fact(metrics, reopened)).agent_id == third

    # The transfer before the assignment it followed.
    late = uuid.uuid4()
    await consume_from(
        metrics,
        "helpdesk.routing",
        transferred(late, first, second, now + timedelta(minutes=5)),
        assigned(late, first, now),
    )
    row = await fact(metrics, late)
    assert row.agent_id == second
    assert row.assigned_at == now
