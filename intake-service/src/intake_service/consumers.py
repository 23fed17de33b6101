"""Handlers for the events intake consumes (routing and review decisions)."""

from __future__ import annotations

from typing import Any

from helpdesk_shared.chassis.consumer import Handler
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.routing import TicketAssigned
from intake_service import workflow


async def on_ticket_assigned(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await workflow.apply_assignment(uow, event.data)


HANDLERS: dict[str, Handler] = {
    TicketAssigned.cloudevent_type(): on_ticket_assigned,
}
CONSUMES = ["helpdesk.routing", "helpdesk.review"]
