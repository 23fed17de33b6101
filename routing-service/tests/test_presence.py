"""Presence: agents set their own (leads anyone's); online drains the queue, away keeps tickets,
offline gives untouched tickets back to the queue and on to whoever is free."""

from __future__ import annotations

import asyncio
import uuid

from routing_factories import (
    LEAD,
    answer_submitted,
    consume,
    is_queued,
    isolated_team,
    load_of,
    owner_of,
    published,
    ticket_created,
    waiting_for_lock_of,
)
from sqlalchemy import text

from helpdesk_runtime.testing import ServiceHarness, auth_headers

STATUS_CHANGED = "helpdesk.agent.status_changed.v1"
QUEUED = "helpdesk.ticket.queued.v1"
ASSIGNED = "helpdesk.ticket.assigned.v1"


async def put(
    routing: ServiceHarness, agent_id: str, presence: str, headers: dict[str, str] | None = None
) -> dict:  # type: ignore[type-arg]
    response = await routing.client.put(
        f"/v1/agents/{agent_id}/presence",
        headers=headers or auth_headers("agent", sub=agent_id),
        json={"presence": presence},
    )
    assert response.status_code == 200, response.text
    body: dict = response.json()  # type: ignore[type-arg]
    return body


async def test_agents_set_their_own_presence_and_leads_anyones(routing: ServiceHarness) -> None:
    mine, theirs = await isolated_team(routing, 1, 1)

    assert (await put(routing, mine, "away"))["presence"] == "away"
    assert (await put(routing, mine, "online", headers=LEAD))["presence"] == "online"
    assert (await put(routing, mine, "away", headers=auth_headers("admin")))["presence"] == "away"

    async def attempt(target: str, body: object, headers: dict[str, str]) -> int:
        response = await routing.client.put(f"/v1/agents/{target}/presence", headers=headers, json=body)
        assert response.headers["content-type"] == "application/problem+json"
        return response.status_code

    as_other_agent = auth_headers("agent", "reviewer", sub=theirs)
    assert await attempt(mine, {"presence": "offline"}, as_other_agent) == 403
    assert await attempt(mine, {"presence": "offline"}, auth_headers("ops")) == 403
    assert await attempt(mine, {"presence": "offline"}, auth_headers("channel", sub=mine)) == 403
    assert await attempt(str(uuid.uuid4()), {"presence": "online"}, LEAD) == 404
    assert await attempt(mine, {"presence": "busy"}, LEAD) == 422
    assert await attempt(mine, {}, LEAD) == 422
    response = await routing.client.get(f"/v1/agents/{mine}", headers=LEAD)
    assert response.json()["presence"] == "away"


async def test_going_online_drains_the_queue_at_once(routing: ServiceHarness) -> None:
    (agent_id,) = await isolated_team(routing, 2)
    await put(routing, agent_id, "offline")
    waiting = [ticket_created(), ticket_created()]
    for event in waiting:
        await consume(routing, event)
    assert all([await is_queued(routing, e.data.ticket_id) for e in waiting])

    body = await put(routing, agent_id, "online")

    assert [await owner_of(routing, e.data.ticket_id) for e in waiting] == [agent_id, agent_id]
    assert body["active_tickets"] == 2
    changes = await published(routing, agent_id, STATUS_CHANGED)
    assert [(c["previous_presence"], c["presence"], c["active_tickets"]) for c in changes] == [
        (None, "online", 0),  # created
        ("online", "offline", 0),
        ("offline", "online", 2),
    ]
    await put(routing, agent_id, "online")  # no change, no event
    assert len(await published(routing, agent_id, STATUS_CHANGED)) == 3


async def test_away_keeps_its_tickets_and_gets_no_new_ones(routing: ServiceHarness) -> None:
    (agent_id,) = await isolated_team(routing, 3)
    held = ticket_created()
    await consume(routing, held)

    await put(routing, agent_id, "away")
    newcomer = ticket_created()
    await consume(routing, newcomer)

    assert await owner_of(routing, held.data.ticket_id) == agent_id
    assert await is_queued(routing, newcomer.data.ticket_id)
    await put(routing, agent_id, "online")
    assert await owner_of(routing, newcomer.data.ticket_id) == agent_id


async def test_offline_returns_untouched_tickets_to_the_queue_and_on_to_free_agents(
    routing: ServiceHarness,
) -> None:
    leaving, staying = await isolated_team(routing, 3, 3)
    await put(routing, staying, "away")
    worked_on, untouched, answered_by_someone_else = (ticket_created() for _ in range(3))
    for event in (worked_on, untouched, answered_by_someone_else):
        await consume(routing, event)
    await consume(routing, answer_submitted(worked_on.data.ticket_id, leaving))
    await consume(routing, answer_submitted(answered_by_someone_else.data.ticket_id, uuid.uuid4()))
    await put(routing, staying, "online")

    body = await put(routing, leaving, "offline")

    returned = {untouched.data.ticket_id, answered_by_someone_else.data.ticket_id}
    assert set(map(uuid.UUID, body["returned_ticket_ids"])) == returned
    assert await owner_of(routing, worked_on.data.ticket_id) == leaving
    for ticket_id in returned:
        assert await owner_of(routing, ticket_id) == staying
        (queued,) = await published(routing, str(ticket_id), QUEUED)
        assert queued["reason"] == "returned to the queue: the assignee went offline before working on it"
        assert [a["agent_id"] for a in await published(routing, str(ticket_id), ASSIGNED)] == [
            leaving,
            staying,
        ]
    assert (await load_of(routing, leaving), await load_of(routing, staying)) == (1, 2)
    assert body["active_tickets"] == 1
    (change,) = [c for c in await published(routing, leaving, STATUS_CHANGED) if c["presence"] == "offline"]
    assert change["active_tickets"] == 1


async def test_offline_with_nobody_free_leaves_the_tickets_queued(routing: ServiceHarness) -> None:
    (agent_id,) = await isolated_team(routing, 2)
    event = ticket_created()
    await consume(routing, event)

    body = await put(routing, agent_id, "offline", headers=LEAD)

    assert body["returned_ticket_ids"] == [str(event.data.ticket_id)]
    assert await is_queued(routing, event.data.ticket_id)
    assert await load_of(routing, agent_id) == 0
    # An answer arriving late for a ticket no longer assigned touches nothing and fails nothing.
    assert await consume(routing, answer_submitted(event.data.ticket_id, agent_id))
    assert await is_queued(routing, event.data.ticket_id)


async def test_going_offline_waits_for_a_resolution_in_flight_instead_of_deadlocking(
    routing: ServiceHarness,
) -> None:
    # A resolution locks its ticket's assignment, then frees a slot on the agent's row; going
    # offline locked the agent's row, then the untouched assignments: each waited for the other.
    (leaving,) = await isolated_team(routing, 3)
    event = ticket_created()
    await consume(routing, event)
    assert await owner_of(routing, event.data.ticket_id) == leaving

    async with routing.uow() as resolving:  # a resolution, half-way
        await resolving.session.execute(
            text("SELECT 1 FROM assignments WHERE ticket_id = :t FOR UPDATE"), {"t": event.data.ticket_id}
        )
        offline = asyncio.create_task(
            routing.client.put(
                f"/v1/agents/{leaving}/presence",
                headers=auth_headers("agent", sub=leaving),
                json={"presence": "offline"},
            )
        )
        # Going offline is under way, waiting for the assignment:
        await waiting_for_lock_of(routing, resolving)
        assert not offline.done()
        await asyncio.wait_for(  # the resolution frees its slot: it must not wait for the agent
            resolving.session.execute(
                text("UPDATE agents SET active_tickets = active_tickets - 1 WHERE id = :a"),
                {"a": uuid.UUID(leaving)},
            ),
            timeout=3,
        )
        await resolving.session.execute(
            text("DELETE FROM assignments WHERE ticket_id = :t"), {"t": event.data.ticket_id}
        )
        await resolving.commit()
    response = await asyncio.wait_for(offline, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["returned_ticket_ids"] == []  # resolved meanwhile: nothing to hand back
