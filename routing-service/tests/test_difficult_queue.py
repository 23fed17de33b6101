"""Difficult tickets (疑難問題) and the queue: they wait for their team lead, not for whoever is free.

* A difficult ticket whose lead is online but full is queued for the lead; specialists leave it
  alone. A lead who is away or offline does not hold them up: the best specialist takes them.
* A lead's freed slot goes to the most urgent, oldest difficult ticket waiting for that lead, ahead
  of any ordinary ticket; a specialist's freed slot goes to the most urgent, oldest ticket that is
  not waiting for an online lead.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from routing_factories import (
    ADMIN,
    agent,
    consume,
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
)
from sqlalchemy import func, select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import EventEnvelope, Priority, TicketKind, TicketReopened, TicketStatus
from routing_service.models import QueueEntry

ASSIGNED = "helpdesk.ticket.assigned.v1"
QUEUED = "helpdesk.ticket.queued.v1"


class World:
    """A lead (role lead only, leading a team without being a member of it) and its specialists,
    in a domain of their own, with everybody else offline."""

    def __init__(self, lead: str, team_id: str, specialists: list[str], keyword: str) -> None:
        self.lead, self.team_id, self.specialists, self.keyword = lead, team_id, specialists, keyword

    def complaint(self, **fields: Any) -> EventEnvelope[Any]:
        return ticket_created(kind=TicketKind.COMPLAINT, subject=f"{self.keyword} 投訴理賠太慢", **fields)

    def question(self, **fields: Any) -> EventEnvelope[Any]:
        return ticket_created(subject=f"{self.keyword} 保單問題", **fields)


async def world(routing: ServiceHarness, *, lead_capacity: int, specialists: tuple[int, ...] = (3,)) -> World:
    await isolated_team(routing)
    domain = f"疑難-{uuid.uuid4().hex[:8]}"
    keyword = await domain_rule(routing, domain)
    lead = await agent(routing, name="組長", roles=["lead"], domains=[], max_concurrent=lead_capacity)
    team_id = await team(routing, lead_id=lead)
    members = [
        await agent(routing, team_id=team_id, domains=[domain], max_concurrent=capacity)
        for capacity in specialists
    ]
    return World(lead, team_id, members, keyword)


async def set_presence(routing: ServiceHarness, agent_id: str, presence: str) -> dict[str, Any]:
    response = await routing.client.put(
        f"/v1/agents/{agent_id}/presence",
        headers=auth_headers("agent", sub=agent_id),
        json={"presence": presence},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def reopened(ticket_id: uuid.UUID, previous_agent_id: str, *, count: int) -> EventEnvelope[Any]:
    return EventEnvelope.wrap(
        TicketReopened(
            ticket_id=ticket_id,
            previous_status=TicketStatus.RESOLVED,
            previous_agent_id=uuid.UUID(previous_agent_id),
            reopen_count=count,
            reopened_at=datetime.now(UTC),
        ),
        source="/helpdesk/intake",
        subject=str(ticket_id),
    )


async def test_a_difficult_ticket_waits_for_its_busy_lead_instead_of_going_to_a_specialist(
    routing: ServiceHarness,
) -> None:
    w = await world(routing, lead_capacity=1)
    (specialist,) = w.specialists
    first, second = w.complaint(), w.complaint()
    await consume(routing, first)
    await consume(routing, second)

    assert await owner_of(routing, first.data.ticket_id) == w.lead
    assert await owner_of(routing, second.data.ticket_id) is None
    entry = await queue_entry(routing, second.data.ticket_id)
    assert entry is not None and entry.difficult and str(entry.lead_id) == w.lead
    assert await load_of(routing, specialist) == 0
    question = w.question()
    await consume(routing, question)  # the specialist's free slot is no reason to hand it the complaint
    assert await owner_of(routing, question.data.ticket_id) == specialist
    assert await is_queued(routing, second.data.ticket_id)

    await consume(routing, resolved(first.data.ticket_id))

    assert await owner_of(routing, second.data.ticket_id) == w.lead
    (assigned,) = await published(routing, str(second.data.ticket_id), ASSIGNED)
    assert (assigned["difficult"], assigned["reason"]) == (True, "dequeued: capacity freed")


async def test_a_freed_lead_takes_the_most_urgent_oldest_difficult_ticket_and_specialists_the_rest(
    routing: ServiceHarness,
) -> None:
    w = await world(routing, lead_capacity=1, specialists=(1,))
    (specialist,) = w.specialists
    held_by_lead, held_by_specialist = w.complaint(), w.question()
    await consume(routing, held_by_lead)
    await consume(routing, held_by_specialist)
    waiting = {
        "urgent question": w.question(priority=Priority.URGENT),
        "low complaint": w.complaint(priority=Priority.LOW),
        "high complaint": w.complaint(priority=Priority.HIGH),
        "later high complaint": w.complaint(priority=Priority.HIGH),
        "normal question": w.question(),
    }
    for event in waiting.values():
        await consume(routing, event)
    assert not any([await owner_of(routing, e.data.ticket_id) for e in waiting.values()])

    await consume(routing, resolved(held_by_lead.data.ticket_id))
    assert await owner_of(routing, waiting["high complaint"].data.ticket_id) == w.lead

    await consume(routing, resolved(held_by_specialist.data.ticket_id))
    assert await owner_of(routing, waiting["urgent question"].data.ticket_id) == specialist
    await consume(routing, resolved(waiting["urgent question"].data.ticket_id))
    # The lead is online: the high complaint still waiting is theirs, the specialist takes the normal one.
    assert await owner_of(routing, waiting["normal question"].data.ticket_id) == specialist
    assert await is_queued(routing, waiting["later high complaint"].data.ticket_id)
    assert await is_queued(routing, waiting["low complaint"].data.ticket_id)


async def test_a_lead_away_or_offline_hands_difficult_tickets_to_the_best_specialist(
    routing: ServiceHarness,
) -> None:
    w = await world(routing, lead_capacity=1, specialists=(3,))
    (specialist,) = w.specialists
    held, waiting = w.complaint(), w.complaint()
    await consume(routing, held)
    await consume(routing, waiting)
    assert await is_queued(routing, waiting.data.ticket_id)

    await set_presence(routing, w.lead, "away")  # keeps their ticket; the waiting one must not wait for them

    assert await owner_of(routing, held.data.ticket_id) == w.lead
    assert await owner_of(routing, waiting.data.ticket_id) == specialist
    (assigned,) = await published(routing, str(waiting.data.ticket_id), ASSIGNED)
    assert assigned["difficult"] is True
    newcomer = w.complaint()
    await consume(routing, newcomer)
    assert await owner_of(routing, newcomer.data.ticket_id) == specialist

    body = await set_presence(
        routing, w.lead, "offline"
    )  # untouched: back to the queue, on to the specialist
    assert body["returned_ticket_ids"] == [str(held.data.ticket_id)]
    assert await owner_of(routing, held.data.ticket_id) == specialist
    assert await load_of(routing, w.lead) == 0


async def test_a_lead_back_online_takes_the_difficult_tickets_waiting_for_them(
    routing: ServiceHarness,
) -> None:
    w = await world(routing, lead_capacity=2, specialists=(1,))
    (specialist,) = w.specialists
    await set_presence(routing, specialist, "away")
    await set_presence(routing, w.lead, "offline")
    complaint, question = w.complaint(), w.question()
    await consume(routing, complaint)
    await consume(routing, question)
    entry = await queue_entry(routing, complaint.data.ticket_id)
    assert entry is not None and entry.difficult and str(entry.lead_id) == w.lead

    await set_presence(routing, w.lead, "online")

    assert await owner_of(routing, complaint.data.ticket_id) == w.lead
    assert await is_queued(routing, question.data.ticket_id)  # a lead only is nobody's specialist
    await set_presence(routing, specialist, "online")
    assert await owner_of(routing, question.data.ticket_id) == specialist


async def test_a_lead_who_is_also_a_specialist_takes_difficult_tickets_first(routing: ServiceHarness) -> None:
    await isolated_team(routing)
    domain = f"疑難-{uuid.uuid4().hex[:8]}"
    keyword = await domain_rule(routing, domain)
    lead = await agent(routing, roles=["lead", "specialist"], domains=[domain], max_concurrent=1)
    team_id = await team(routing, lead_id=lead)
    held = ticket_created(subject=f"{keyword} 保單")
    await consume(routing, held)
    assert await owner_of(routing, held.data.ticket_id) == lead
    ordinary = ticket_created(subject=f"{keyword} 保單", priority=Priority.URGENT)
    difficult = ticket_created(subject=f"{keyword} 投訴", kind=TicketKind.COMPLAINT, priority=Priority.LOW)
    await consume(routing, ordinary)
    await consume(routing, difficult)

    await consume(routing, resolved(held.data.ticket_id))

    assert await owner_of(routing, difficult.data.ticket_id) == lead
    assert await is_queued(routing, ordinary.data.ticket_id)
    (assigned,) = await published(routing, str(difficult.data.ticket_id), ASSIGNED)
    assert assigned["team_id"] == team_id


async def test_concurrent_difficult_tickets_never_push_the_lead_over_capacity(
    routing: ServiceHarness,
) -> None:
    w = await world(routing, lead_capacity=2, specialists=(5,))
    complaints = [w.complaint() for _ in range(6)]

    await asyncio.gather(*(consume(routing, c) for c in complaints))

    owners = [await owner_of(routing, c.data.ticket_id) for c in complaints]
    assert owners.count(w.lead) == 2
    assert owners.count(None) == 4
    assert (await load_of(routing, w.lead), await load_of(routing, w.specialists[0])) == (2, 0)
    async with routing.uow() as uow:
        waiting = await uow.session.scalar(
            select(func.count())
            .select_from(QueueEntry)
            .where(
                QueueEntry.ticket_id.in_([c.data.ticket_id for c in complaints]),
                QueueEntry.difficult.is_(True),
            )
        )
    assert waiting == 4

    # Two resolutions at once free two slots of the lead: each goes to one waiting ticket, no more.
    held = [c.data.ticket_id for c, o in zip(complaints, owners, strict=True) if o == w.lead]
    await asyncio.gather(*(consume(routing, resolved(t)) for t in held))
    assert await load_of(routing, w.lead) == 2
    assert [await owner_of(routing, c.data.ticket_id) for c in complaints].count(w.lead) == 2


async def test_a_new_lead_takes_over_the_difficult_tickets_waiting_for_the_old_one(
    routing: ServiceHarness,
) -> None:
    w = await world(routing, lead_capacity=1)
    held, waiting = w.complaint(), w.complaint()
    await consume(routing, held)
    await consume(routing, waiting)
    successor = await agent(routing, name="新組長", roles=["lead"], domains=[], max_concurrent=2)

    response = await routing.client.patch(
        f"/v1/teams/{w.team_id}", headers=ADMIN, json={"lead_id": successor}
    )

    assert response.status_code == 200, response.text
    assert await owner_of(routing, waiting.data.ticket_id) == successor
    assert await owner_of(routing, held.data.ticket_id) == w.lead  # what the old lead holds stays with them


async def test_a_reopened_complaint_waits_for_its_busy_lead(routing: ServiceHarness) -> None:
    w = await world(routing, lead_capacity=1)
    complaint = w.complaint(priority=Priority.HIGH)
    await consume(routing, complaint)
    await consume(routing, resolved(complaint.data.ticket_id))
    other = w.complaint()
    await consume(routing, other)  # the lead is full again
    assert await owner_of(routing, other.data.ticket_id) == w.lead

    await consume(routing, reopened(complaint.data.ticket_id, w.lead, count=1))

    entry = await queue_entry(routing, complaint.data.ticket_id)
    assert entry is not None
    assert (entry.difficult, str(entry.lead_id), entry.priority) == (True, w.lead, "high")
    assert await load_of(routing, w.specialists[0]) == 0
    await consume(routing, resolved(other.data.ticket_id))
    assert await owner_of(routing, complaint.data.ticket_id) == w.lead
    assigned = await published(routing, str(complaint.data.ticket_id), ASSIGNED)
    assert [a["difficult"] for a in assigned] == [True, True]


async def test_a_slot_a_reopened_ticket_leaves_goes_to_the_queue_at_once(routing: ServiceHarness) -> None:
    # Reopened a second time, a ticket goes to the lead; the specialist who held it has a slot
    # again, and the ticket waiting for one takes it now, not at the next periodic sweep.
    w = await world(routing, lead_capacity=3, specialists=(1,))
    [specialist] = w.specialists
    held, waiting = w.question(), w.question()
    await consume(routing, held)
    await consume(routing, waiting)
    assert await owner_of(routing, held.data.ticket_id) == specialist
    assert await is_queued(routing, waiting.data.ticket_id)

    await consume(routing, reopened(held.data.ticket_id, specialist, count=2))

    assert await owner_of(routing, held.data.ticket_id) == w.lead
    assert await owner_of(routing, waiting.data.ticket_id) == specialist
