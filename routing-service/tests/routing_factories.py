"""Test data builders for routing: tickets as intake announces them, teams of fresh agents."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts import (
    EventEnvelope,
    Priority,
    TicketAnswerDelivered,
    TicketCreated,
    TicketResolved,
)
from helpdesk_shared.contracts.review import AnswerSubmitted
from routing_service.models import Agent, Assignment, QueueEntry

ADMIN = auth_headers("admin")
LEAD = auth_headers("lead")


def ticket_created(**overrides: Any) -> EventEnvelope[Any]:
    fields: dict[str, Any] = {
        "ticket_id": uuid.uuid4(),
        "number": "HD-000001",
        "channel": "web",
        "kind": "question",
        "subject": "保費怎麼繳",
        "description": "想了解保費的繳納方式",
        "priority": Priority.NORMAL,
        "customer_id": uuid.uuid4(),
        "created_at": datetime.now(UTC),
    }
    fields.update(overrides)
    ticket_id = fields["ticket_id"]
    payload = TicketCreated(**fields)
    return EventEnvelope.wrap(payload, source="/helpdesk/intake", subject=str(ticket_id))


def ticket_created_at(at: datetime, **overrides: Any) -> EventEnvelope[Any]:
    """A claim-progress question created at `at` (the SLA tests' ticket: no rule or domain of its own)."""
    fields: dict[str, Any] = {
        "number": "HD-000042",
        "subject": "保單理賠進度",
        "description": "上個月提交的理賠申請還沒有結果",
        "created_at": at,
    }
    return ticket_created(**(fields | overrides))


async def isolated_team(routing: ServiceHarness, *capacities: int) -> list[str]:
    """A world of its own: every existing agent offline, the queue empty, fresh agents added."""
    async with routing.uow() as uow:
        await uow.session.execute(Agent.__table__.update().values(presence="offline"))
        await uow.session.execute(QueueEntry.__table__.delete())
        await uow.commit()
    team = await routing.client.post("/v1/teams", json={"name": f"team-{uuid.uuid4()}"}, headers=ADMIN)
    ids = []
    for capacity in capacities:
        response = await routing.client.post(
            "/v1/agents",
            headers=ADMIN,
            json={
                "name": "專員",
                "team_id": team.json()["id"],
                "roles": ["specialist"],
                "domains": ["auto-insurance"],
                "max_concurrent": capacity,
            },
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def answer_submitted(ticket_id: uuid.UUID, author_id: uuid.UUID | str) -> EventEnvelope[Any]:
    payload = AnswerSubmitted(
        ticket_id=ticket_id,
        answer_id=uuid.uuid4(),
        answer_version=1,
        author_id=uuid.UUID(str(author_id)),
        submitted_at=datetime.now(UTC),
    )
    return EventEnvelope.wrap(payload, source="/helpdesk/review", subject=str(ticket_id))


def resolved(ticket_id: uuid.UUID, domain: str | None = None) -> EventEnvelope[Any]:
    payload = TicketResolved(ticket_id=ticket_id, domain=domain, resolved_at=datetime.now(UTC))
    return EventEnvelope.wrap(payload, source="/helpdesk/intake", subject=str(ticket_id))


def delivered(ticket_id: uuid.UUID, at: datetime) -> EventEnvelope[Any]:
    """intake's `ticket.answer_delivered` of a first response at ``at``."""
    payload = TicketAnswerDelivered(
        ticket_id=ticket_id,
        answer_id=uuid.uuid4(),
        answer_version=1,
        message_id=uuid.uuid4(),
        channel="web",
        first_response=True,
        delivered_at=at,
    )
    return EventEnvelope.wrap(payload, source="/helpdesk/intake", subject=str(ticket_id))


async def consume(routing: ServiceHarness, event: EventEnvelope[Any]) -> bool:
    """Apply one event as the Kafka consumer would (review events arrive on their own topic)."""
    consumer = routing.runtime.consumer
    assert consumer is not None
    topic = "helpdesk.review" if event.type.startswith("helpdesk.answer.") else "helpdesk.intake"
    return await consumer.handle_event(event, topic=topic)


async def owner_of(routing: ServiceHarness, ticket_id: uuid.UUID) -> str | None:
    async with routing.uow() as uow:
        agent_id = await uow.session.scalar(
            select(Assignment.agent_id).where(Assignment.ticket_id == ticket_id)
        )
    return str(agent_id) if agent_id else None


async def queue_entry(routing: ServiceHarness, ticket_id: uuid.UUID) -> Any:
    """The ticket's queue entry as a row (None when not queued)."""
    async with routing.uow() as uow:
        return (
            await uow.session.execute(select(QueueEntry.__table__).where(QueueEntry.ticket_id == ticket_id))
        ).one_or_none()


async def is_queued(routing: ServiceHarness, ticket_id: uuid.UUID) -> bool:
    return await queue_entry(routing, ticket_id) is not None


async def load_of(routing: ServiceHarness, agent_id: str) -> int:
    async with routing.uow() as uow:
        load = await uow.session.scalar(select(Agent.active_tickets).where(Agent.id == uuid.UUID(agent_id)))
    assert load is not None
    return load


async def published(routing: ServiceHarness, key: str, event_type: str) -> list[dict[str, Any]]:
    """The `data` of every outbox event of `event_type` under `key`, in publication order."""
    async with routing.uow() as uow:
        rows = await uow.session.execute(
            select(OUTBOX.c.payload)
            .where(OUTBOX.c.key == key, OUTBOX.c.event_type == event_type)
            .order_by(OUTBOX.c.seq)
        )
        return [r.payload["data"] for r in rows]


async def agent(routing: ServiceHarness, **fields: Any) -> str:
    """A fresh agent (a specialist online with 3 slots unless told otherwise); returns its id."""
    body: dict[str, Any] = {"name": "專員", "roles": ["specialist"], "max_concurrent": 3} | fields
    response = await routing.client.post("/v1/agents", headers=ADMIN, json=body)
    assert response.status_code == 201, response.text
    agent_id: str = response.json()["id"]
    return agent_id


async def team(routing: ServiceHarness, **fields: Any) -> str:
    body: dict[str, Any] = {"name": f"team-{uuid.uuid4()}"} | fields
    response = await routing.client.post("/v1/teams", headers=ADMIN, json=body)
    assert response.status_code == 201, response.text
    team_id: str = response.json()["id"]
    return team_id


async def domain_rule(routing: ServiceHarness, domain: str) -> str:
    """A rule forcing `domain` on tickets whose text holds the returned (unique) keyword."""
    keyword = f"kw{uuid.uuid4().hex[:10]}"
    response = await routing.client.post(
        "/v1/routing/rules",
        headers=ADMIN,
        json={"name": f"rule-{keyword}", "pattern": keyword, "domain": domain},
    )
    assert response.status_code == 201, response.text
    return keyword


async def team_with_lead(routing: ServiceHarness, *domains: str) -> tuple[str, list[str]]:
    """An isolated team: its lead (two slots) and a specialist (five slots) per domain."""
    await isolated_team(routing)  # everyone else offline, empty queue
    lead = await agent(routing, name="組長", roles=["lead"], domains=[], max_concurrent=2)
    team_id = await team(routing, lead_id=lead)
    members = [
        await agent(routing, team_id=team_id, domains=[domain], max_concurrent=5) for domain in domains
    ]
    return lead, members


async def ticket_sla(harness: ServiceHarness, ticket_id: uuid.UUID) -> dict[str, Any]:
    """`GET /v1/tickets/{id}/sla`, its timers by target."""
    response = await harness.client.get(f"/v1/tickets/{ticket_id}/sla", headers=auth_headers("agent"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    body["timers"] = {t["target"]: t for t in body["timers"]}
    return body


async def events(harness: ServiceHarness, ticket_id: uuid.UUID, *types: type[Any]) -> list[dict[str, Any]]:
    """The ticket's outbox events of these types, in publication order: their type and data."""
    names = [t.cloudevent_type() for t in types]
    async with harness.uow() as uow:
        rows = await uow.session.execute(
            select(OUTBOX.c.payload)
            .where(OUTBOX.c.key == str(ticket_id), OUTBOX.c.event_type.in_(names))
            .order_by(OUTBOX.c.seq)
        )
        return [{"type": r.payload["type"], **r.payload["data"]} for r in rows]


async def waiting_for_lock_of(routing: ServiceHarness, holder: UnitOfWork, within: float = 10.0) -> None:
    """Until another backend waits for a lock ``holder``'s transaction holds (pg_stat_activity)."""
    pid = await holder.session.scalar(text("SELECT pg_backend_pid()"))
    deadline = asyncio.get_running_loop().time() + within
    while True:
        async with routing.uow() as uow:
            blocked = await uow.session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))"
                ),
                {"pid": pid},
            )
        if blocked:
            return
        assert asyncio.get_running_loop().time() < deadline, f"nothing waited for backend {pid}'s locks"
        await asyncio.sleep(0.02)


async def without_sla_worker(harness: ServiceHarness) -> None:
    """Stop the service's own SLA worker, for tests that fire clocks themselves at the times they
    choose: its first pass comes once the consumer has caught up, at the real time (long after
    every clock of a test dated 2026-03), and landing mid-test it fired that test's warnings and
    breaches before the test did."""
    (worker,) = [t for t in harness.runtime._tasks if t.get_name().endswith(":sla_timer_worker")]
    await asyncio.sleep(0)  # started (waiting for the consumer), so that it is cancelled inside
    worker.cancel()
