"""An answered ticket gives its agent's slot back at once.

Delivered, an answer leaves the ticket waiting for the customer (auto-closed after days): the agent
gets the slot back and the queue is drained, while the assignment stays — it names the agent for
a reopening, the workload view and the resolution. The slot is given back once: a redelivery, a
follow-up answer, the resolution, a close, a transfer or going offline give nothing back again; a
reopening takes a slot again. Transferred, an answered ticket moves with its slot given back: the
new assignee takes none (and needs none free) until the customer reopens it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from capacity_factories import assignment_row, closed, reopened, set_presence
from routing_factories import (
    answer_submitted,
    consume,
    delivered,
    is_queued,
    isolated_team,
    load_of,
    owner_of,
    published,
    resolved,
    ticket_created,
)

from helpdesk_runtime.testing import ServiceHarness, auth_headers


async def test_a_delivered_answer_gives_the_slot_back_and_the_queue_takes_it(routing: ServiceHarness) -> None:
    (agent,) = await isolated_team(routing, 1)
    answered, waiting = ticket_created(), ticket_created()
    await consume(routing, answered)
    await consume(routing, waiting)
    assert await is_queued(routing, waiting.data.ticket_id)
    await consume(routing, answer_submitted(answered.data.ticket_id, agent))
    delivery = delivered(answered.data.ticket_id, datetime.now(UTC))

    await consume(routing, delivery)

    assert await owner_of(routing, waiting.data.ticket_id) == agent  # the freed slot went to the queue
    assert await owner_of(routing, answered.data.ticket_id) == agent  # still theirs
    row = await assignment_row(routing, answered.data.ticket_id)
    assert row.slot_released_at == delivery.data.delivered_at
    assert await load_of(routing, agent) == 1

    # Given back once: a redelivery, a follow-up answer and its delivery, then the resolution.
    await consume(routing, delivery)
    await consume(routing, answer_submitted(answered.data.ticket_id, agent))
    assert await load_of(routing, agent) == 1  # a follow-up answer takes no slot back
    await consume(routing, delivered(answered.data.ticket_id, datetime.now(UTC)))
    assert (await assignment_row(routing, answered.data.ticket_id)).slot_released_at == row.slot_released_at
    await consume(routing, resolved(answered.data.ticket_id))
    assert await owner_of(routing, answered.data.ticket_id) is None
    assert await load_of(routing, agent) == 1  # `waiting` still counts


async def test_a_close_after_the_answer_gives_nothing_back_twice(routing: ServiceHarness) -> None:
    (agent,) = await isolated_team(routing, 3)
    answered, other = ticket_created(), ticket_created()
    await consume(routing, answered)
    await consume(routing, other)
    await consume(routing, delivered(answered.data.ticket_id, datetime.now(UTC)))
    assert await load_of(routing, agent) == 1

    await consume(routing, closed(answered.data.ticket_id))  # auto-closed: no reply for days

    assert await owner_of(routing, answered.data.ticket_id) is None
    assert await load_of(routing, agent) == 1


async def test_a_reopening_takes_a_slot_again_and_going_offline_keeps_answered_tickets(
    routing: ServiceHarness,
) -> None:
    (agent,) = await isolated_team(routing, 3)
    answered, untouched, worked_on = ticket_created(), ticket_created(), ticket_created()
    for event in (answered, untouched, worked_on):
        await consume(routing, event)
    await consume(routing, answer_submitted(worked_on.data.ticket_id, agent))
    await consume(routing, delivered(answered.data.ticket_id, datetime.now(UTC)))
    assert await load_of(routing, agent) == 2

    await consume(routing, reopened(answered.data.ticket_id, agent))  # the customer wrote back
    assert await owner_of(routing, answered.data.ticket_id) == agent
    assert (await assignment_row(routing, answered.data.ticket_id)).slot_released_at is None
    assert await load_of(routing, agent) == 3
    await consume(routing, delivered(answered.data.ticket_id, datetime.now(UTC)))  # answered again
    assert await load_of(routing, agent) == 2

    # Offline: the untouched ticket goes back (its slot with it); the answered one stays theirs and
    # its slot, already given back, is not given back again.
    body = await set_presence(routing, agent, "offline")

    assert body["returned_ticket_ids"] == [str(untouched.data.ticket_id)]
    assert await owner_of(routing, answered.data.ticket_id) == agent
    assert await load_of(routing, agent) == 1  # `worked_on`
    assert body["active_tickets"] == 1


async def test_a_transfer_after_the_answer_does_not_give_the_slot_back_twice(routing: ServiceHarness) -> None:
    first, second = await isolated_team(routing, 3, 3)
    tickets = [ticket_created() for _ in range(4)]
    for event in tickets:
        await consume(routing, event)
    owners = {event.data.ticket_id: await owner_of(routing, event.data.ticket_id) for event in tickets}
    answered = next(t for t, owner in owners.items() if owner == first)
    await consume(routing, delivered(answered, datetime.now(UTC)))
    loads = (await load_of(routing, first), await load_of(routing, second))
    assert loads == (1, 2)

    response = await routing.client.post(
        f"/v1/tickets/{answered}/transfer",
        headers=auth_headers("admin", sub=str(uuid.uuid4())),
        json={"to_agent_id": second, "reason": "休假交接"},
    )

    assert response.status_code == 201, response.text
    assert await owner_of(routing, answered) == second
    assert await load_of(routing, first) == 1  # its slot was already given back at the delivery
    assert await load_of(routing, second) == 2  # it waits for its customer: no slot of the new assignee


async def test_an_answered_ticket_moves_with_its_released_slot_and_a_reopening_takes_the_new_agents(
    routing: ServiceHarness,
) -> None:
    first, second = await isolated_team(routing, 1, 1)
    tickets = [ticket_created() for _ in range(2)]
    for event in tickets:
        await consume(routing, event)
    owners = {await owner_of(routing, event.data.ticket_id): event.data.ticket_id for event in tickets}
    answered, seconds_own = owners[first], owners[second]
    delivery = delivered(answered, datetime.now(UTC))
    await consume(routing, delivery)
    assert (await load_of(routing, first), await load_of(routing, second)) == (0, 1)

    # The target is full: the ticket waits for its customer and takes no slot of theirs.
    response = await routing.client.post(
        f"/v1/tickets/{answered}/transfer",
        headers=auth_headers("agent", sub=first),
        json={"to_agent_id": second, "reason": "客戶指定"},
    )

    assert response.status_code == 201, response.text
    assert await owner_of(routing, answered) == second
    row = await assignment_row(routing, answered)
    assert row.slot_released_at == delivery.data.delivered_at  # moved with its released state
    assert row.touched_at is None  # the new assignee has not worked on it
    assert (await load_of(routing, first), await load_of(routing, second)) == (0, 1)
    (transferred,) = await published(routing, str(answered), "helpdesk.ticket.transferred.v1")
    assert (transferred["from_agent_id"], transferred["to_agent_id"]) == (first, second)
    assert transferred["reason"] == "客戶指定"
    # `first`'s slot is really free: the next ticket is theirs.
    newcomer = ticket_created()
    await consume(routing, newcomer)
    assert await owner_of(routing, newcomer.data.ticket_id) == first
    assert (await load_of(routing, first), await load_of(routing, second)) == (1, 1)

    # The customer writes back once `second` has a slot free: it takes one of theirs, and the
    # resolution gives it back — exactly once.
    await consume(routing, resolved(seconds_own))
    assert await load_of(routing, second) == 0
    await consume(routing, reopened(answered, second))
    assert await owner_of(routing, answered) == second
    assert (await assignment_row(routing, answered)).slot_released_at is None
    assert (await load_of(routing, first), await load_of(routing, second)) == (1, 1)
    await consume(routing, resolved(answered))
    assert (await load_of(routing, first), await load_of(routing, second)) == (1, 0)


async def test_the_workload_lists_an_answered_ticket_without_counting_it(routing: ServiceHarness) -> None:
    (agent,) = await isolated_team(routing, 4)
    answered, open_ = ticket_created(), ticket_created()
    await consume(routing, answered)
    await consume(routing, open_)
    await consume(routing, answer_submitted(answered.data.ticket_id, agent))
    await consume(routing, delivered(answered.data.ticket_id, datetime.now(UTC)))

    response = await routing.client.get(f"/v1/agents/{agent}/workload", headers=auth_headers("agent"))

    assert response.status_code == 200, response.text
    body = response.json()
    listed = {a["ticket_id"]: a for a in body["assignments"]}
    assert set(listed) == {str(answered.data.ticket_id), str(open_.data.ticket_id)}
    assert listed[str(answered.data.ticket_id)]["touched"] is True
    assert (body["active_tickets"], body["utilisation"]) == (1, 0.25)  # the open ticket only
