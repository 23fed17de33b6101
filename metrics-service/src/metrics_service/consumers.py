"""Metrics consumes every event; each handler projects one type into the read models."""

from __future__ import annotations

from typing import Any

from helpdesk_shared.chassis.consumer import Handler
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.intake import TicketCreated
from helpdesk_shared.contracts.routing import TicketAssigned, TicketTransferred
from metrics_service import service


async def on_ticket_created(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await service.project_ticket_created(uow, event.data)


async def on_ticket_assigned(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await service.project_ticket_assigned(uow, event.data)


async def on_ticket_transferred(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await service.project_ticket_transferred(uow, event.data)


HANDLERS: dict[str, Handler] = {
    TicketCreated.cloudevent_type(): on_ticket_created,
    TicketAssigned.cloudevent_type(): on_ticket_assigned,
    TicketTransferred.cloudevent_type(): on_ticket_transferred,
}
CONSUMES = ["helpdesk.intake", "helpdesk.routing", "helpdesk.review", "helpdesk.kb"]
