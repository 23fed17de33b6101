"""Handlers for the events routing consumes."""

from __future__ import annotations

from typing import Any

from helpdesk_shared.chassis.consumer import Handler
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.intake import TicketCreated
from routing_service import service


async def on_ticket_created(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await service.route_new_ticket(uow, event.data)


HANDLERS: dict[str, Handler] = {
    TicketCreated.cloudevent_type(): on_ticket_created,
}
CONSUMES = ["helpdesk.intake", "helpdesk.review"]
