"""Review mirrors who owns each ticket, from routing's assignments."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from helpdesk_runtime.testing import ServiceHarness, auth_headers, consume_from
from helpdesk_shared.contracts import (
    EventEnvelope,
    TicketAssigned,
    TicketCollaboratorsChanged,
    TicketQueued,
    TicketTransferred,
)
from helpdesk_shared.contracts.enums import Priority

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


def transferred(
    ticket_id: uuid.UUID, from_agent: uuid.UUID | None, to_agent: uuid.UUID, at: datetime
) -> EventEnvelope[TicketTransferred]:
    return EventEnvelope.wrap(
        TicketTransferred(
            ticket_id=ticket_id,
            transfer_id=uuid.uuid4(),
            from_agent_id=from_agent,
            to_agent_id=to_agent,
            requested_by=uuid.uuid4(),
            reason="needs the claims team",
            transferred_at=at,
        ),
        source="/helpdesk/routing",
        subject=str(ticket_id),
    )


def queued(ticket_id: uuid.UUID, at: datetime) -> EventEnvelope[TicketQueued]:
    return EventEnvelope.wrap(
        TicketQueued(
            ticket_id=ticket_id, priority=Priority.NORMAL, reason="returned to the queue", queued_at=at
        ),
        source="/helpdesk/routing",
        subject=str(ticket_id),
    )


async def test_a_transfer_moves_the_owner_with_the_collaborator_who_took_it_leaving_the_list(
    review: ServiceHarness,
) -> None:
    ticket_id, first, helper = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    moved_at = now + timedelta(minutes=3)

    await consume_from(
        review,
        "helpdesk.routing",
        assigned(ticket_id, first, now),
        EventEnvelope.wrap(
            TicketCollaboratorsChanged(
                ticket_id=ticket_id, collaborator_ids=[helper], changed_at=now + timedelta(minutes=1)
            ),
            source="/helpdesk/routing",
            subject=str(ticket_id),
        ),
        transferred(ticket_id, first, helper, moved_at),
        EventEnvelope.wrap(
            TicketCollaboratorsChanged(ticket_id=ticket_id, collaborator_ids=[], changed_at=moved_at),
            source="/helpdesk/routing",
            subject=str(ticket_id),
        ),
    )

    owner = await review.client.get(f"/v1/tickets/{ticket_id}/owner", headers=AGENT)
    assert owner.status_code == 200, owner.text
    assert owner.json()["agent_id"] == str(helper)
    assert datetime.fromisoformat(owner.json()["assigned_at"]) == moved_at
    assert owner.json()["collaborator_ids"] == []


async def test_a_transfer_older_than_the_latest_assignment_changes_nothing(review: ServiceHarness) -> None:
    ticket_id, first, second, latest = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)

    await consume_from(review, "helpdesk.routing", assigned(ticket_id, latest, now))
    await consume_from(
        review, "helpdesk.routing", transferred(ticket_id, first, second, now - timedelta(minutes=1))
    )

    owner = await review.client.get(f"/v1/tickets/{ticket_id}/owner", headers=AGENT)
    assert owner.json()["agent_id"] == str(latest)


async def test_a_ticket_handed_back_to_the_queue_has_no_owner_until_assigned_again(
    review: ServiceHarness,
) -> None:
    ticket_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)

    await consume_from(
        review,
        "helpdesk.routing",
        assigned(ticket_id, first, now),
        queued(ticket_id, now + timedelta(minutes=1)),
    )
    gone = await review.client.get(f"/v1/tickets/{ticket_id}/owner", headers=AGENT)
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"
    assert gone.json()["type"].endswith("/ticket-owner-unknown")

    # An assignment older than the hand-back, arriving late, must not bring the old owner back.
    await consume_from(review, "helpdesk.routing", assigned(ticket_id, first, now - timedelta(minutes=5)))
    assert (await review.client.get(f"/v1/tickets/{ticket_id}/owner", headers=AGENT)).status_code == 404

    await consume_from(review, "helpdesk.routing", assigned(ticket_id, second, now + timedelta(minutes=2)))
    again = await review.client.get(f"/v1/tickets/{ticket_id}/owner", headers=AGENT)
    assert again.status_code == 200
    assert again.json()["agent_id"] == str(second)


async def test_a_queue_entry_older_than_the_assignment_leaves_the_owner(review: ServiceHarness) -> None:
    ticket_id, agent = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)

    await consume_from(
        review,
        "helpdesk.routing",
        assigned(ticket_id, agent, now),
        queued(ticket_id, now - timedelta(minutes=1)),
    )

    owner = await review.client.get(f"/v1/tickets/{ticket_id}/owner", headers=AGENT)
    assert owner.status_code == 200
    assert owner.json()["agent_id"] == str(agent)


async def test_queued_before_any_assignment_is_a_404_then_the_assignment_shows(
    review: ServiceHarness,
) -> None:
    ticket_id, agent = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)

    await consume_from(review, "helpdesk.routing", queued(ticket_id, now))
    assert (await review.client.get(f"/v1/tickets/{ticket_id}/owner", headers=AGENT)).status_code == 404

    await consume_from(review, "helpdesk.routing", assigned(ticket_id, agent, now + timedelta(seconds=1)))
    owner = await review.client.get(f"/v1/tickets/{ticket_id}/owner", headers=AGENT)
    assert owner.json()["agent_id"] == str(agent)


async def test_a_hand_back_and_the_reassignment_stamped_alike_leave_the_new_assignee(
    review: ServiceHarness,
) -> None:
    # Routing's offline hand-back queues the ticket and drains the queue with one `now`.
    ticket_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    handed_back = now + timedelta(minutes=1)

    await consume_from(
        review,
        "helpdesk.routing",
        assigned(ticket_id, first, now),
        queued(ticket_id, handed_back),
        assigned(ticket_id, second, handed_back),
    )

    owner = await review.client.get(f"/v1/tickets/{ticket_id}/owner", headers=AGENT)
    assert owner.status_code == 200
    assert owner.json()["agent_id"] == str(second)
