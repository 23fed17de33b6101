"""Builders for the tests of a ticket's slot over its life: reopenings, closings, presence."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import CloseReason, EventEnvelope, TicketClosed, TicketReopened, TicketStatus
from routing_service.models import Assignment


def reopened(
    ticket_id: uuid.UUID,
    previous_agent_id: uuid.UUID | str | None,
    *,
    count: int = 1,
    previous_status: TicketStatus = TicketStatus.ANSWERED,
) -> EventEnvelope[Any]:
    """intake's `ticket.reopened`: the customer wrote again (by default after an answer)."""
    payload = TicketReopened(
        ticket_id=ticket_id,
        previous_status=previous_status,
        previous_agent_id=uuid.UUID(str(previous_agent_id)) if previous_agent_id is not None else None,
        reopen_count=count,
        reopened_at=datetime.now(UTC),
    )
    return EventEnvelope.wrap(payload, source="/helpdesk/intake", subject=str(ticket_id))


def closed(ticket_id: uuid.UUID) -> EventEnvelope[Any]:
    payload = TicketClosed(
        ticket_id=ticket_id,
        reason=CloseReason.AUTO_NO_REPLY,
        previous_status=TicketStatus.ANSWERED,
        closed_at=datetime.now(UTC),
    )
    return EventEnvelope.wrap(payload, source="/helpdesk/intake", subject=str(ticket_id))


async def set_presence(routing: ServiceHarness, agent_id: str, presence: str) -> dict[str, Any]:
    response = await routing.client.put(
        f"/v1/agents/{agent_id}/presence",
        headers=auth_headers("agent", sub=agent_id),
        json={"presence": presence},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def assignment_row(routing: ServiceHarness, ticket_id: uuid.UUID) -> Any:
    """The ticket's assignment as a row (None: nobody holds it)."""
    async with routing.uow() as uow:
        return (
            await uow.session.execute(select(Assignment.__table__).where(Assignment.ticket_id == ticket_id))
        ).one_or_none()
