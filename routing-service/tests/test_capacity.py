"""Freed capacity drains the queue by priority then age; reopened tickets go back to their agent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from routing_factories import isolated_team, ticket_created
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness
from helpdesk_shared.contracts import EventEnvelope, Priority, TicketReopened, TicketResolved, TicketStatus
from routing_service.models import Agent, Assignment, QueueEntry


async def handle(routing: ServiceHarness, event: EventEnvelope[Any]) -> None:
    consumer = routing.runtime.consumer
    assert consumer is not None
    await consumer.handle_event(event, topic="helpdesk.intake")


def resolved(ticket_id: uuid.UUID) -> EventEnvelope[Any]:
    return EventEnvelope.wrap(
        TicketResolved(ticket_id=ticket_id, resolved_at=datetime.now(UTC)),
        source="/helpdesk/intake",
        subject=str(ticket_id),
    )


def reopened(ticket_id: uuid.UUID, previous_agent_id: uuid.UUID) -> EventEnvelope[Any]:
    return EventEnvelope.wrap(
        TicketReopened(
            ticket_id=ticket_id,
            previous_status=TicketStatus.RESOLVED,
            previous_agent_id=previous_agent_id,
            reopen_count=1,
            reopened_at=datetime.now(UTC),
        ),
        source="/helpdesk/intake",
        subject=str(ticket_id),
    )


async def owner(routing: ServiceHarness, ticket_id: uuid.UUID) -> uuid.UUID | None:
    async with routing.uow() as uow:
        return await uow.session.scalar(select(Assignment.agent_id).where(Assignment.ticket_id == ticket_id))


async def test_queue_drains_by_priority_then_age_as_tickets_resolve(routing: ServiceHarness) -> None:
    (agent,) = await isolated_team(routing, 1)
    first = ticket_created()
    queued = [
        ticket_created(priority=p) for p in (Priority.NORMAL, Priority.URGENT, Priority.LOW, Priority.URGENT)
    ]
    for event in (first, *queued):
        await handle(routing, event)
    assert await owner(routing, first.data.ticket_id) == uuid.UUID(agent)

    served = []
    holder = first.data.ticket_id
    for _ in queued:
        await handle(routing, resolved(holder))
        async with routing.uow() as uow:
            holder = await uow.session.scalar(
                select(Assignment.ticket_id).where(Assignment.agent_id == uuid.UUID(agent))
            )
        served.append(holder)

    expected = [queued[1], queued[3], queued[0], queued[2]]  # urgent (oldest first), normal, low
    assert served == [e.data.ticket_id for e in expected]
    async with routing.uow() as uow:
        left = (
            await uow.session.execute(
                select(QueueEntry.ticket_id).where(
                    QueueEntry.ticket_id.in_([e.data.ticket_id for e in queued])
                )
            )
        ).all()
        load = await uow.session.scalar(select(Agent.active_tickets).where(Agent.id == uuid.UUID(agent)))
    assert (left, load) == ([], 1)


async def test_a_redelivered_resolution_frees_only_one_slot(routing: ServiceHarness) -> None:
    (agent,) = await isolated_team(routing, 2)
    a, b = ticket_created(), ticket_created()
    await handle(routing, a)
    await handle(routing, b)
    event = resolved(a.data.ticket_id)
    await handle(routing, event)
    await handle(routing, event)
    async with routing.uow() as uow:
        load = await uow.session.scalar(select(Agent.active_tickets).where(Agent.id == uuid.UUID(agent)))
    assert load == 1


async def test_reopened_ticket_returns_to_its_previous_agent(routing: ServiceHarness) -> None:
    first_agent, second_agent = await isolated_team(routing, 3, 3)
    ticket = ticket_created()
    await handle(routing, ticket)
    holder = await owner(routing, ticket.data.ticket_id)
    assert holder is not None
    await handle(routing, resolved(ticket.data.ticket_id))
    for _ in range(2):  # make the other agent less loaded: least-load alone would pick them
        await handle(routing, ticket_created())

    await handle(routing, reopened(ticket.data.ticket_id, holder))

    assert await owner(routing, ticket.data.ticket_id) == holder
    assert {str(holder)} <= {first_agent, second_agent}


async def test_reopened_ticket_goes_elsewhere_or_queues_when_its_agent_is_full(
    routing: ServiceHarness,
) -> None:
    busy, other = await isolated_team(routing, 1, 1)
    ticket = ticket_created()
    await handle(routing, ticket)
    holder = await owner(routing, ticket.data.ticket_id)
    await handle(routing, resolved(ticket.data.ticket_id))
    filler = ticket_created()
    await handle(routing, filler)  # takes the previous holder's slot? least-loaded: either agent
    await handle(routing, reopened(ticket.data.ticket_id, holder or uuid.uuid4()))
    new_owner = await owner(routing, ticket.data.ticket_id)
    assert new_owner is not None
    assert {str(new_owner), str(await owner(routing, filler.data.ticket_id))} == {busy, other}

    third = ticket_created()
    await handle(routing, third)
    await handle(routing, reopened(third.data.ticket_id, uuid.uuid4()))
    async with routing.uow() as uow:
        queued = await uow.session.scalar(
            select(QueueEntry.ticket_id).where(QueueEntry.ticket_id == third.data.ticket_id)
        )
    assert queued == third.data.ticket_id
