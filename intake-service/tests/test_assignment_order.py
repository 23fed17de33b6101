"""Routing's assignments, queueings and transfers applied by their time, not by their arrival: one
older than the decision the ticket's assignee stands by (a dead-lettered event replayed later)
changes nothing, alone or in a run, and writes no timeline entry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from intake_factories import deliver, post_ticket
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers, partition_records
from helpdesk_shared.chassis.db import INBOX
from helpdesk_shared.contracts import EventEnvelope, TicketAssigned, TicketQueued, TicketTransferred
from helpdesk_shared.contracts.enums import Priority
from intake_service.models import Ticket, TimelineEntry

LEAD = auth_headers("lead")
T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


def assigned(ticket_id: str, agent_id: uuid.UUID, at: datetime, **fields: Any) -> TicketAssigned:
    return TicketAssigned(
        ticket_id=uuid.UUID(ticket_id), agent_id=agent_id, assigned_at=at, reason="r", **fields
    )


def queued(ticket_id: str, at: datetime) -> TicketQueued:
    return TicketQueued(
        ticket_id=uuid.UUID(ticket_id), priority=Priority.NORMAL, queued_at=at, reason="no capacity"
    )


def transferred(
    ticket_id: str, from_agent: uuid.UUID, to_agent: uuid.UUID, at: datetime
) -> TicketTransferred:
    return TicketTransferred(
        ticket_id=uuid.UUID(ticket_id),
        transfer_id=uuid.uuid4(),
        from_agent_id=from_agent,
        to_agent_id=to_agent,
        requested_by=uuid.uuid4(),
        reason="需要車險專長",
        transferred_at=at,
    )


async def shown(intake: ServiceHarness, ticket_id: str) -> dict[str, Any]:
    response = await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)
    assert response.status_code == 200, response.text
    ticket: dict[str, Any] = response.json()
    return ticket


async def kinds(intake: ServiceHarness, ticket_id: str) -> list[str]:
    async with intake.uow() as uow:
        return list(
            (
                await uow.session.scalars(
                    select(TimelineEntry.kind)
                    .where(TimelineEntry.ticket_id == uuid.UUID(ticket_id))
                    .order_by(TimelineEntry.seq)
                )
            ).all()
        )


async def new_ticket(intake: ServiceHarness) -> str:
    return await post_ticket(intake, subject="車險理賠", description="想問理賠進度")


async def test_an_older_assignment_after_a_newer_transfer_leaves_the_transfer_agent(
    intake: ServiceHarness,
) -> None:
    ticket_id = await new_ticket(intake)
    first, second = uuid.uuid4(), uuid.uuid4()
    await deliver(intake, assigned(ticket_id, first, T0), service="routing")
    await deliver(
        intake, transferred(ticket_id, first, second, T0 + timedelta(minutes=10)), service="routing"
    )
    before = await kinds(intake, ticket_id)

    # `ticket.assigned` to the first agent, dead-lettered at T0 + 1 min and replayed after the transfer.
    late = await deliver(intake, assigned(ticket_id, first, T0 + timedelta(minutes=1)), service="routing")

    ticket = await shown(intake, ticket_id)
    assert (ticket["assignee_id"], ticket["status"]) == (str(second), "assigned")
    assert await kinds(intake, ticket_id) == before  # no misleading "assigned" after the transfer
    async with intake.uow() as uow:
        stored = (
            await uow.session.execute(
                select(Ticket.assignment_changed_at, Ticket.previous_assignee_id).where(
                    Ticket.id == uuid.UUID(ticket_id)
                )
            )
        ).one()
        outcome = await uow.session.scalar(select(INBOX.c.outcome).where(INBOX.c.event_id == late.id))
    assert tuple(stored) == (T0 + timedelta(minutes=10), first)
    assert outcome == "processed"  # handled (ignored), not failed towards the dead-letter topic


async def test_older_queueings_and_transfers_are_ignored_too(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake)
    first, second = uuid.uuid4(), uuid.uuid4()
    await deliver(intake, assigned(ticket_id, first, T0 + timedelta(minutes=5)), service="routing")
    before = await kinds(intake, ticket_id)

    await deliver(intake, queued(ticket_id, T0), service="routing")
    await deliver(
        intake, transferred(ticket_id, uuid.uuid4(), second, T0 + timedelta(minutes=1)), service="routing"
    )

    ticket = await shown(intake, ticket_id)
    assert (ticket["assignee_id"], ticket["status"]) == (str(first), "assigned")
    assert await kinds(intake, ticket_id) == before

    # A newer queueing still takes the ticket back, and a newer assignment gives it out again.
    await deliver(intake, queued(ticket_id, T0 + timedelta(minutes=6)), service="routing")
    assert ((await shown(intake, ticket_id))["assignee_id"], (await shown(intake, ticket_id))["status"]) == (
        None,
        "new",
    )
    await deliver(intake, assigned(ticket_id, second, T0 + timedelta(minutes=7)), service="routing")
    assert (await shown(intake, ticket_id))["assignee_id"] == str(second)


async def test_a_run_applies_each_decision_only_if_newer(intake: ServiceHarness) -> None:
    # Routing's events of one partition in one run (one transaction): the stale one in the middle is
    # skipped; a queueing and the assignment that ends it, made at one time, both apply in order.
    stale, fresh = await new_ticket(intake), await new_ticket(intake)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    events = [
        EventEnvelope.wrap(payload, source="/helpdesk/routing", subject=str(payload.ticket_id))
        for payload in (
            assigned(stale, second, T0 + timedelta(minutes=2)),
            assigned(stale, first, T0 + timedelta(minutes=1)),
            queued(fresh, T0),
            assigned(fresh, third, T0),
        )
    ]
    consumer = intake.runtime.consumer
    assert consumer is not None

    await consumer.handle_records(partition_records(events, "helpdesk.routing"))

    assert (await shown(intake, stale))["assignee_id"] == str(second)
    assert (await kinds(intake, stale)).count("assigned") == 1
    assert (await shown(intake, fresh))["assignee_id"] == str(third)
    assert await kinds(intake, fresh) == ["created", "queued", "assigned", "status_changed"]


async def test_an_older_assignment_still_says_the_ticket_is_difficult(intake: ServiceHarness) -> None:
    # Difficulty is routing's word on the ticket, not on who holds it: it only ever marks it.
    ticket_id = await new_ticket(intake)
    lead, specialist = uuid.uuid4(), uuid.uuid4()
    await deliver(intake, assigned(ticket_id, specialist, T0 + timedelta(minutes=3)), service="routing")

    await deliver(intake, assigned(ticket_id, lead, T0, difficult=True), service="routing")

    ticket = await shown(intake, ticket_id)
    assert (ticket["assignee_id"], ticket["difficult"]) == (str(specialist), True)
