"""Handlers for the events routing consumes."""

from __future__ import annotations

from typing import Any

from helpdesk_shared.chassis.consumer import Handler
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.intake import TicketClosed, TicketCreated, TicketReopened, TicketResolved
from routing_service import capacity, service


async def on_ticket_created(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await service.route_new_ticket(uow, event.data)


async def on_ticket_finished(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await capacity.release_ticket(uow, event.data.ticket_id)


async def on_ticket_reopened(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await capacity.reassign_reopened(uow, event.data)


HANDLERS: dict[str, Handler] = {
    TicketCreated.cloudevent_type(): on_ticket_created,
    TicketResolved.cloudevent_type(): on_ticket_finished,
    TicketClosed.cloudevent_type(): on_ticket_finished,
    TicketReopened.cloudevent_type(): on_ticket_reopened,
}
CONSUMES = ["helpdesk.intake", "helpdesk.review"]
