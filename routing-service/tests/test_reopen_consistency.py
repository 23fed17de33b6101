"""A reopened ticket, whatever it races with, ends up either assigned or queued — never both — and
back with the agent who held it keeps that agent's work.

* A reopening racing a drain that is assigning the ticket from the queue, or an agent going offline
  whose hand-back drain gives it to someone else, waits for that transaction and re-decides from
  what it committed (as a resolution does).
* A queue entry of a ticket that is assigned anyway is dropped by the drain, never assigned twice:
  one stray entry must not fail every later drain (HTTP 409s, events dead-lettered).
* A reopened ticket back with the same agent keeps ``touched_at`` (going offline does not hand an
  answered ticket to a stranger); ``ticket.assigned`` is still announced — intake moves the
  ticket from ``reopened`` to ``assigned`` on it.
* A reopened difficult ticket whose lead is full stays with the agent who held it rather than
  wait for the lead — unless this reopening is what made it difficult (reopened too often).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from capacity_factories import assignment_row, reopened, set_presence
from routing_factories import (
    ADMIN,
    agent,
    answer_submitted,
    consume,
    delivered,
    domain_rule,
    is_queued,
    isolated_team,
    load_of,
    owner_of,
    published,
    queue_entry,
    resolved,
    team,
    ticket_created,
    waiting_for_lock_of,
)

from helpdesk_runtime.testing import ServiceHarness
from helpdesk_shared.contracts import Priority, TicketKind
from routing_service import presence
from routing_service.capacity import drain_queue, sweep_queue
from routing_service.repository import RoutingRepository

ASSIGNED = "helpdesk.ticket.assigned.v1"


async def test_a_reopening_racing_the_drain_that_assigns_the_ticket_leaves_it_assigned_once(
    routing: ServiceHarness,
) -> None:
    (agent_id,) = await isolated_team(routing, 1)
    holder, waiting = ticket_created(), ticket_created()
    await consume(routing, holder)
    await consume(routing, waiting)
    assert await is_queued(routing, waiting.data.ticket_id)

    async with routing.uow() as drain:  # the holder resolved: its drain took `waiting`, not committed
        repo = RoutingRepository(drain.session)
        await repo.release_assignment(holder.data.ticket_id)
        assert await drain_queue(drain, repo, datetime.now(UTC)) == 1
        reopening = asyncio.ensure_future(consume(routing, reopened(waiting.data.ticket_id, uuid.uuid4())))
        await waiting_for_lock_of(routing, drain)  # the reopening waits for the queue entry
        await drain.commit()
    assert await reopening

    assert await owner_of(routing, waiting.data.ticket_id) == agent_id
    assert not await is_queued(routing, waiting.data.ticket_id)
    assert await load_of(routing, agent_id) == 1
    created = await routing.client.post(
        "/v1/agents", headers=ADMIN, json={"name": "新人", "roles": ["specialist"], "max_concurrent": 2}
    )
    assert created.status_code == 201, created.text  # its drain trips over nothing
    assert await sweep_queue(routing.uow) == 0


async def test_a_reopening_racing_an_offline_hand_back_leaves_the_ticket_assigned_once(
    routing: ServiceHarness,
) -> None:
    leaving, staying = await isolated_team(routing, 1, 1)
    await set_presence(routing, staying, "away")
    ticket = ticket_created()
    await consume(routing, ticket)
    assert await owner_of(routing, ticket.data.ticket_id) == leaving
    await set_presence(routing, staying, "online")

    async with routing.uow() as offline:  # `leaving` goes offline: handed back, drained to `staying`
        repo = RoutingRepository(offline.session)
        await repo.lock_assignments_of(uuid.UUID(leaving))
        gone = await repo.lock_agent(uuid.UUID(leaving))
        assert gone is not None
        gone.presence = "offline"
        await offline.flush()
        now = datetime.now(UTC)
        assert await presence._hand_back_untouched(offline, repo, uuid.UUID(leaving), now) == [
            ticket.data.ticket_id
        ]
        assert await drain_queue(offline, repo, now) == 1
        reopening = asyncio.ensure_future(consume(routing, reopened(ticket.data.ticket_id, leaving)))
        await waiting_for_lock_of(routing, offline)  # the reopening waits for the assignment
        await offline.commit()
    assert await reopening

    assert await owner_of(routing, ticket.data.ticket_id) == staying
    assert not await is_queued(routing, ticket.data.ticket_id)
    assert (await load_of(routing, leaving), await load_of(routing, staying)) == (0, 1)


async def test_a_drain_drops_the_queue_entry_of_a_ticket_assigned_anyway(routing: ServiceHarness) -> None:
    (agent_id,) = await isolated_team(routing, 2)
    stray = ticket_created()
    await consume(routing, stray)
    assert await owner_of(routing, stray.data.ticket_id) == agent_id
    async with routing.uow() as uow:  # the state an earlier race left behind
        now = datetime.now(UTC)
        await RoutingRepository(uow.session).enqueue(
            stray.data.ticket_id, Priority.NORMAL, now, waiting_since=now
        )
        await uow.commit()

    created = await routing.client.post(
        "/v1/agents", headers=ADMIN, json={"name": "新人", "roles": ["specialist"], "max_concurrent": 2}
    )

    assert created.status_code == 201, created.text
    assert not await is_queued(routing, stray.data.ticket_id)
    assert await owner_of(routing, stray.data.ticket_id) == agent_id
    assert await load_of(routing, agent_id) == 1
    assert await consume(routing, resolved(stray.data.ticket_id))
    assert await load_of(routing, agent_id) == 0


async def test_back_with_the_same_agent_a_reopened_ticket_keeps_their_work(routing: ServiceHarness) -> None:
    await isolated_team(routing, 2, 2)
    ticket = ticket_created()
    await consume(routing, ticket)
    ticket_id = ticket.data.ticket_id
    owner = await owner_of(routing, ticket_id)
    assert owner is not None
    await consume(routing, answer_submitted(ticket_id, owner))
    worked_at = (await assignment_row(routing, ticket_id)).touched_at
    assert worked_at is not None
    await consume(routing, delivered(ticket_id, datetime.now(UTC)))

    await consume(routing, reopened(ticket_id, owner))

    assert await owner_of(routing, ticket_id) == owner
    assert (await assignment_row(routing, ticket_id)).touched_at == worked_at
    # Still announced: intake moves the reopened ticket to `assigned` on it.
    announced = await published(routing, str(ticket_id), ASSIGNED)
    assert [(a["agent_id"], a["reason"]) for a in announced][1:] == [
        (owner, "reopened: back to the previous agent")
    ]
    body = await set_presence(routing, owner, "offline")
    assert body["returned_ticket_ids"] == []  # their half-answered ticket stays theirs
    assert await owner_of(routing, ticket_id) == owner


async def test_reopened_to_someone_else_the_ticket_starts_untouched(routing: ServiceHarness) -> None:
    (owner,) = await isolated_team(routing, 1)
    ticket = ticket_created()
    await consume(routing, ticket)
    ticket_id = ticket.data.ticket_id
    await consume(routing, answer_submitted(ticket_id, owner))
    await consume(routing, delivered(ticket_id, datetime.now(UTC)))
    await consume(routing, ticket_created())  # the slot given back at the delivery is taken again
    assert await load_of(routing, owner) == 1
    other = await agent(routing, domains=["auto-insurance"], max_concurrent=1)

    await consume(routing, reopened(ticket_id, owner))

    assert await owner_of(routing, ticket_id) == other
    assert (await assignment_row(routing, ticket_id)).touched_at is None  # the work was not theirs


async def lead_and_specialist(routing: ServiceHarness) -> tuple[str, str, str]:
    """A lead with one slot leading a team with one specialist in a domain of their own; returns
    the lead, the specialist and the domain's keyword."""
    await isolated_team(routing)
    domain = f"疑難-{uuid.uuid4().hex[:8]}"
    keyword = await domain_rule(routing, domain)
    lead = await agent(routing, name="組長", roles=["lead"], domains=[], max_concurrent=1)
    team_id = await team(routing, lead_id=lead)
    specialist = await agent(routing, team_id=team_id, domains=[domain], max_concurrent=3)
    return lead, specialist, keyword


async def test_a_reopened_difficult_ticket_stays_with_its_specialist_while_the_lead_is_full(
    routing: ServiceHarness,
) -> None:
    lead, specialist, keyword = await lead_and_specialist(routing)
    busy = ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴")
    await consume(routing, busy)
    assert await owner_of(routing, busy.data.ticket_id) == lead
    await set_presence(routing, lead, "away")
    complaint = ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴理賠太慢")
    await consume(routing, complaint)  # the lead away: the specialist takes it
    assert await owner_of(routing, complaint.data.ticket_id) == specialist
    await set_presence(routing, lead, "online")  # back, and full
    await consume(routing, answer_submitted(complaint.data.ticket_id, specialist))
    await consume(routing, delivered(complaint.data.ticket_id, datetime.now(UTC)))

    await consume(routing, reopened(complaint.data.ticket_id, specialist))

    assert await owner_of(routing, complaint.data.ticket_id) == specialist
    assert not await is_queued(routing, complaint.data.ticket_id)
    (_, again) = await published(routing, str(complaint.data.ticket_id), ASSIGNED)
    assert again["difficult"] is True


async def test_a_ticket_reopened_too_often_waits_for_its_full_lead_rather_than_go_back(
    routing: ServiceHarness,
) -> None:
    lead, specialist, keyword = await lead_and_specialist(routing)
    busy = ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴")
    await consume(routing, busy)
    question = ticket_created(subject=f"{keyword} 保單問題")
    await consume(routing, question)
    assert await owner_of(routing, question.data.ticket_id) == specialist

    await consume(routing, reopened(question.data.ticket_id, specialist, count=2))

    entry = await queue_entry(routing, question.data.ticket_id)  # escalated: 疑難 now, for the lead
    assert entry is not None and entry.difficult and str(entry.lead_id) == lead
    assert await owner_of(routing, question.data.ticket_id) is None
