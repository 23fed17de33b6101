"""Routing's slice: agents, assignment of new tickets, redelivery, capacity."""

from __future__ import annotations

import asyncio
import uuid

from routing_factories import ADMIN, isolated_team, ticket_created
from sqlalchemy import func, select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import INBOX, OUTBOX
from helpdesk_shared.contracts import Priority
from routing_service.models import Agent, Assignment, QueueEntry


async def test_agent_crud_and_problems(routing: ServiceHarness) -> None:
    created = await routing.client.post(
        "/v1/agents",
        headers=ADMIN,
        json={
            "name": "李敏",
            "roles": ["specialist"],
            "domains": ["life-insurance"],
            "max_concurrent": 3,
        },
    )
    assert created.status_code == 201
    agent = created.json()
    assert (await routing.client.get(f"/v1/agents/{agent['id']}", headers=ADMIN)).json() == agent
    duplicate = await routing.client.post(
        "/v1/agents",
        headers=ADMIN,
        json={
            "id": agent["id"],
            "name": "李敏",
            "roles": ["specialist"],
        },
    )
    assert duplicate.status_code == 409
    unknown_team = await routing.client.post(
        "/v1/agents",
        headers=ADMIN,
        json={
            "name": "x",
            "roles": ["specialist"],
            "team_id": str(uuid.uuid4()),
        },
    )
    assert unknown_team.status_code == 422
    assert unknown_team.headers["content-type"] == "application/problem+json"
    bad_role = await routing.client.post("/v1/agents", headers=ADMIN, json={"name": "x", "roles": ["boss"]})
    assert bad_role.json()["errors"][0]["field"] == "body.roles.0"
    missing = await routing.client.get(f"/v1/agents/{uuid.uuid4()}", headers=ADMIN)
    assert missing.status_code == 404
    forbidden = await routing.client.post("/v1/teams", json={"name": "t"}, headers=auth_headers("agent"))
    assert forbidden.status_code == 403


async def test_new_ticket_goes_to_the_least_loaded_agent(routing: ServiceHarness) -> None:
    busy, free = await isolated_team(routing, 3, 3)
    consumer = routing.runtime.consumer
    assert consumer is not None
    await consumer.handle_event(ticket_created(), topic="helpdesk.intake")  # goes to one of them
    first_owner = await _owner_counts(routing)
    second = ticket_created()
    await consumer.handle_event(second, topic="helpdesk.intake")

    owners = await _owner_counts(routing)
    assert owners == {busy: 1, free: 1}, (first_owner, owners)


async def test_redelivered_event_changes_the_database_once(routing: ServiceHarness) -> None:
    (agent_id,) = await isolated_team(routing, 5)
    event = ticket_created()
    consumer = routing.runtime.consumer
    assert consumer is not None

    results = [await consumer.handle_event(event, topic="helpdesk.intake") for _ in range(2)]

    assert results == [True, False]
    async with routing.uow() as uow:
        assignments = await uow.session.scalar(
            select(func.count()).select_from(Assignment).where(Assignment.ticket_id == event.data.ticket_id)
        )
        active = await uow.session.scalar(select(Agent.active_tickets).where(Agent.id == uuid.UUID(agent_id)))
        events = (
            await uow.session.scalars(
                select(OUTBOX.c.event_type).where(OUTBOX.c.key == str(event.data.ticket_id))
            )
        ).all()
        inbox = await uow.session.scalar(
            select(func.count()).select_from(INBOX).where(INBOX.c.event_id == event.id)
        )
    assert (assignments, active, inbox) == (1, 1, 1)
    # Its decision (with the SLA clocks' due times) and its assignment, once each.
    assert sorted(events) == ["helpdesk.ticket.assigned.v1", "helpdesk.ticket.classified.v1"]


async def test_concurrent_tickets_never_exceed_capacity(routing: ServiceHarness) -> None:
    agent_ids = await isolated_team(routing, 2, 1)
    consumer = routing.runtime.consumer
    assert consumer is not None
    events = [ticket_created(priority=Priority.HIGH) for _ in range(8)]

    await asyncio.gather(*(consumer.handle_event(e, topic="helpdesk.intake") for e in events))

    owners = await _owner_counts(routing)
    assert owners == {agent_ids[0]: 2, agent_ids[1]: 1}
    async with routing.uow() as uow:
        queued = await uow.session.scalar(
            select(func.count())
            .select_from(QueueEntry)
            .where(QueueEntry.ticket_id.in_([e.data.ticket_id for e in events]))
        )
    assert queued == 5


async def _owner_counts(routing: ServiceHarness) -> dict[str, int]:
    async with routing.uow() as uow:
        rows = (
            await uow.session.execute(
                select(Agent.id, Agent.active_tickets).where(Agent.presence == "online")
            )
        ).all()
    return {str(r.id): r.active_tickets for r in rows if r.active_tickets}
