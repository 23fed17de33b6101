"""Handlers for the events intake consumes: routing's decisions and published answers."""

from __future__ import annotations

from typing import Any

from helpdesk_shared.chassis.consumer import Handler
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.review import AnswerPublished
from helpdesk_shared.contracts.routing import TicketAssigned, TicketTransferred
from intake_service import delivery, workflow
from intake_service.settings import IntakeSettings

CONSUMES = ["helpdesk.routing", "helpdesk.review"]


def handlers(settings: IntakeSettings) -> dict[str, Handler]:
    async def on_ticket_assigned(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await workflow.apply_assignment(uow, event.data)

    async def on_ticket_transferred(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await workflow.apply_transfer(uow, event.data)

    async def on_answer_published(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await delivery.record_published_answer(uow, event.data, mail_domain=settings.mail_domain)

    return {
        TicketAssigned.cloudevent_type(): on_ticket_assigned,
        AnswerPublished.cloudevent_type(): on_answer_published,
        TicketTransferred.cloudevent_type(): on_ticket_transferred,
    }
