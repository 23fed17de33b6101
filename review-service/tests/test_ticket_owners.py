"""Review mirrors who owns each ticket, from routing's assignments."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import EventEnvelope, TicketAssigned

AGENT = auth_headers("agent")


def assigned(ticket_id: uuid.UUID, agent_id: uuid.UUID, at: datetime) -> EventEnvelope[TicketAssigned]:
    return EventEnvelope.wrap(
        TicketAssigned(ticket_id=ticket_id, agent_id=agent_id, assigned_at=at, reason="test"),
        source="/helpdesk/routing",
        subject=str(ticket_id),
    )


async def test_latest_assignment_wins_even_when_events_arrive_late(review: ServiceHarness) -> None:
    consumer = review.runtime.consumer
    assert consumer is not None
    ticket_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)

    await consumer.handle_event(assigned(ticket_id, second, now), topic="helpdesk.routing")
    await consumer.handle_event(
        assigned(ticket_id, first, now - timedelta(minutes=5)), topic="helpdesk.routing"
    )

    owner = await review.client.get(f"/v1/tickets/{ticket_id}/owner", headers=AGENT)
    assert owner.status_code == 200
    assert owner.json()["agent_id"] == str(second)


async def test_unknown_ticket_owner_is_a_404_problem(review: ServiceHarness) -> None:
    response = await review.client.get(f"/v1/tickets/{uuid.uuid4()}/owner", headers=AGENT)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_channel_role_may_not_read_owners(review: ServiceHarness) -> None:
    response = await review.client.get(f"/v1/tickets/{uuid.uuid4()}/owner", headers=auth_headers("channel"))
    assert response.status_code == 403
