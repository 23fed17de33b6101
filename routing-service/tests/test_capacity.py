"""Freed capacity drains the queue by priority then age; reopened tickets go back to their agent.

Age is the customer's wait: from the ticket's creation (or its reopening), not from when routing
got round to it — after a backlog or a restart, same-priority tickets still drain oldest first.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from routing_factories import isolated_team, published, queue_entry, ticket_created, waiting_for_lock_of
from sqlalchemy import delete, select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.contracts import EventEnvelope, Priority, TicketReopened, TicketResolved, TicketStatus
from routing_service import capacity
from routing_service.app import create_app
from routing_service.models import Agent, Assignment, QueueEntry, SlaTimer
from routing_service.repository import RoutingRepository
from routing_service.settings import RoutingSettings

QUEUED = "helpdesk.ticket.queued.v1"
ASSIGNED = "helpdesk.ticket.assigned.v1"


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


def reopened(
    ticket_id: uuid.UUID, previous_agent_id: uuid.UUID, *, at: datetime | None = None
) -> EventEnvelope[Any]:
    return EventEnvelope.wrap(
        TicketReopened(
            ticket_id=ticket_id,
            previous_status=TicketStatus.RESOLVED,
            previous_agent_id=previous_agent_id,
            reopen_count=1,
            reopened_at=at or datetime.now(UTC),
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


async def presence(routing: ServiceHarness, agent_id: str, value: str) -> dict[str, Any]:
    response = await routing.client.put(
        f"/v1/agents/{agent_id}/presence",
        headers=auth_headers("agent", sub=agent_id),
        json={"presence": value},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_queue_serves_tickets_by_creation_time_not_by_when_routing_saw_them(
    routing: ServiceHarness,
) -> None:
    (agent,) = await isolated_team(routing, 1)
    holder = ticket_created()
    await handle(routing, holder)
    now = datetime.now(UTC)
    newer = ticket_created(created_at=now - timedelta(minutes=1))
    older = ticket_created(created_at=now - timedelta(minutes=3))
    await handle(routing, newer)  # a backlog consumed out of creation order: the newer one first
    await handle(routing, older)
    queued = await queue_entry(routing, older.data.ticket_id)
    assert queued is not None and queued.waiting_since == older.data.created_at
    (announced,) = await published(routing, str(older.data.ticket_id), QUEUED)
    assert datetime.fromisoformat(announced["queued_at"]) >= now  # when it was queued: routing's time

    await handle(routing, resolved(holder.data.ticket_id))

    assert await owner(routing, older.data.ticket_id) == uuid.UUID(agent)
    assert await owner(routing, newer.data.ticket_id) is None


async def test_a_ticket_handed_back_by_an_agent_going_offline_keeps_its_place(
    routing: ServiceHarness,
) -> None:
    leaving, staying = await isolated_team(routing, 1, 1)
    now = datetime.now(UTC)
    await presence(routing, staying, "away")
    early = ticket_created(created_at=now - timedelta(minutes=3))
    await handle(routing, early)
    assert await owner(routing, early.data.ticket_id) == uuid.UUID(leaving)
    await presence(routing, staying, "online")
    middle = ticket_created(created_at=now - timedelta(minutes=2))
    late = ticket_created(created_at=now - timedelta(minutes=1))
    await handle(routing, middle)
    await handle(routing, late)
    assert await owner(routing, middle.data.ticket_id) == uuid.UUID(staying)

    body = await presence(routing, leaving, "offline")  # untouched: back to the queue, nobody free

    assert body["returned_ticket_ids"] == [str(early.data.ticket_id)]
    returned = await queue_entry(routing, early.data.ticket_id)
    assert returned is not None and returned.waiting_since == early.data.created_at
    await handle(routing, resolved(middle.data.ticket_id))
    assert await owner(routing, early.data.ticket_id) == uuid.UUID(staying)
    assert await owner(routing, late.data.ticket_id) is None


@pytest.mark.parametrize("with_clocks", [True, False], ids=["sla-clocks", "no-sla-clocks"])
async def test_a_reopened_ticket_queues_at_its_own_priority_from_its_reopening(
    routing: ServiceHarness, with_clocks: bool
) -> None:
    (agent,) = await isolated_team(routing, 1)
    ticket = ticket_created(priority=Priority.HIGH)
    await handle(routing, ticket)
    await handle(routing, resolved(ticket.data.ticket_id))
    await handle(routing, ticket_created())  # the agent is full again
    if not with_clocks:  # no SLA policy matched: routing's own memory of the priority must do
        async with routing.uow() as uow:
            await uow.session.execute(delete(SlaTimer).where(SlaTimer.ticket_id == ticket.data.ticket_id))
            await uow.commit()
    at = datetime.now(UTC) - timedelta(seconds=30)

    await handle(routing, reopened(ticket.data.ticket_id, uuid.UUID(agent), at=at))

    queued = await queue_entry(routing, ticket.data.ticket_id)
    assert queued is not None
    assert (queued.priority, queued.priority_rank, queued.waiting_since) == ("high", Priority.HIGH.rank, at)
    announced = await published(routing, str(ticket.data.ticket_id), QUEUED)
    assert [a["priority"] for a in announced] == ["high"]


async def test_a_ticket_resolved_while_being_dequeued_does_not_keep_a_slot(routing: ServiceHarness) -> None:
    """The queue's head is being assigned (its entry locked, the assignment not yet committed)
    when the ticket's resolution arrives: the resolution waits for that, then frees the slot."""
    (agent,) = await isolated_team(routing, 1)
    holder, waiting = ticket_created(), ticket_created()
    await handle(routing, holder)
    await handle(routing, waiting)  # queued: the agent is full
    assert await owner(routing, waiting.data.ticket_id) is None

    async with routing.uow() as drain:  # the holder resolved: its drain has taken the head, not committed
        repo = RoutingRepository(drain.session)
        await repo.release_assignment(holder.data.ticket_id)
        assert await capacity.drain_queue(drain, repo, datetime.now(UTC)) == 1
        resolution = asyncio.create_task(handle(routing, resolved(waiting.data.ticket_id)))
        await waiting_for_lock_of(routing, drain)  # the resolution waits for the queue entry's lock
        assert not resolution.done()
        await drain.commit()
    await resolution

    assert await owner(routing, waiting.data.ticket_id) is None  # resolved: held by nobody
    async with routing.uow() as uow:
        load = await uow.session.scalar(select(Agent.active_tickets).where(Agent.id == uuid.UUID(agent)))
        queued = await uow.session.scalar(
            select(QueueEntry.ticket_id).where(QueueEntry.ticket_id == waiting.data.ticket_id)
        )
    assert (load, queued) == (0, None)  # both resolved: no slot taken


async def queue_while_the_slot_frees(routing: ServiceHarness) -> tuple[uuid.UUID, uuid.UUID]:
    """The race no event-driven drain can see: a ticket finds the only agent full and is being
    queued when the holder's resolution frees the slot and drains a queue that does not show the
    new entry yet (uncommitted). Returns the agent and the ticket."""
    (agent,) = await isolated_team(routing, 1)
    holder, late = ticket_created(), ticket_created()
    await handle(routing, holder)
    now = datetime.now(UTC)
    async with routing.uow() as queueing:
        repo = RoutingRepository(queueing.session)
        # Found full by a read, not by a failed `take_capacity`: that may lock the agent's row (its
        # locking CTE runs or not, as the plan goes), and the resolution awaited below, inside this
        # transaction, would then wait for this transaction for ever — a hang, every test after it
        # too (their agents' updates wait for the same lock).
        load = await queueing.session.scalar(select(Agent.active_tickets).where(Agent.id == uuid.UUID(agent)))
        assert load == 1  # full: `late` is queued
        await repo.enqueue(late.data.ticket_id, Priority.NORMAL, now, waiting_since=now)
        await handle(routing, resolved(holder.data.ticket_id))  # frees the slot, drains: no entry seen
        await queueing.commit()
    return uuid.UUID(agent), late.data.ticket_id


async def test_a_sweep_gives_a_slot_freed_while_its_ticket_was_queued_to_that_ticket(
    routing: ServiceHarness,
) -> None:
    agent, ticket_id = await queue_while_the_slot_frees(routing)
    assert await owner(routing, ticket_id) is None
    async with routing.uow() as uow:
        assert await uow.session.scalar(select(Agent.active_tickets).where(Agent.id == agent)) == 0

    assert await capacity.sweep_queue(routing.uow) == 1
    assert await owner(routing, ticket_id) == agent
    assert await queue_entry(routing, ticket_id) is None
    async with routing.uow() as uow:  # the sweep, run by no request or event, is a trace of its own
        traceparent = await uow.session.scalar(
            select(OUTBOX.c.payload["traceparent"].as_string()).where(
                OUTBOX.c.key == str(ticket_id), OUTBOX.c.event_type == ASSIGNED
            )
        )
    assert traceparent is not None and re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", traceparent)
    assert await capacity.sweep_queue(routing.uow) == 0  # nothing left that anyone free could take


@pytest.fixture
async def sweeping_routing(make_service) -> AsyncIterator[ServiceHarness]:  # type: ignore[no-untyped-def]
    async with make_service(
        "routing", RoutingSettings, create_app, label="sweep", queue_sweep_seconds=0.2
    ) as harness:
        yield harness


async def test_the_service_sweeps_its_queue_on_its_own(sweeping_routing: ServiceHarness) -> None:
    agent, ticket_id = await queue_while_the_slot_frees(sweeping_routing)
    deadline = asyncio.get_running_loop().time() + 10
    while await owner(sweeping_routing, ticket_id) != agent:
        assert asyncio.get_running_loop().time() < deadline, "the queue was not swept"
        await asyncio.sleep(0.1)
