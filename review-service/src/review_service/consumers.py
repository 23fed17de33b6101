"""Handlers for the events review consumes."""

from __future__ import annotations

from typing import Any

from helpdesk_shared.chassis.consumer import Handler
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.routing import (
    TicketAssigned,
    TicketCollaboratorsChanged,
    TicketQueued,
    TicketTransferred,
)
from review_service import service


async def on_ticket_assigned(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await service.record_owner(uow, event.data)


async def on_ticket_transferred(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await service.record_transfer(uow, event.data)


async def on_ticket_queued(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await service.record_queued(uow, event.data)


async def on_ticket_collaborators_changed(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await service.record_collaborators(uow, event.data)


HANDLERS: dict[str, Handler] = {
    TicketAssigned.cloudevent_type(): on_ticket_assigned,
    TicketTransferred.cloudevent_type(): on_ticket_transferred,
    TicketQueued.cloudevent_type(): on_ticket_queued,
    TicketCollaboratorsChanged.cloudevent_type(): on_ticket_collaborators_changed,
}
CONSUMES = ["helpdesk.intake", "helpdesk.routing"]
