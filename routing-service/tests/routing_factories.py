"""Test data builders for routing: tickets as intake announces them, teams of fresh agents."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import EventEnvelope, Priority, TicketCreated
from routing_service.models import Agent, QueueEntry

ADMIN = auth_headers("admin")


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
