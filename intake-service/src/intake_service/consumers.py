"""Handlers for the events intake consumes: routing's decisions, review outcomes, published answers."""

from __future__ import annotations

from typing import Any

from helpdesk_shared.chassis.consumer import Batched, Handler, correlation_of
from helpdesk_shared.chassis.logging import correlated
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.review import AnswerApproved, AnswerPublished, AnswerRejected, AnswerSubmitted
from helpdesk_shared.contracts.routing import (
    TicketAssigned,
    TicketCollaboratorsChanged,
    TicketQueued,
    TicketTransferred,
)
from intake_service import delivery, workflow
from intake_service.settings import IntakeSettings

CONSUMES = ["helpdesk.routing", "helpdesk.review"]


def handlers(settings: IntakeSettings) -> dict[str, Handler]:
    async def on_ticket_assigned(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await workflow.apply_assignment(uow, event.data)

    async def on_tickets_assigned(events: list[EventEnvelope[Any]], uow: UnitOfWork) -> None:
        for event in events:
            with correlated(correlation_of(event)):
                await workflow.apply_assignment(uow, event.data, commit=False)

    async def on_ticket_queued(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await workflow.apply_queued(uow, event.data)

    async def on_tickets_queued(events: list[EventEnvelope[Any]], uow: UnitOfWork) -> None:
        for event in events:
            with correlated(correlation_of(event)):
                await workflow.apply_queued(uow, event.data, commit=False)

    async def on_ticket_transferred(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await workflow.apply_transfer(uow, event.data)

    async def on_ticket_collaborators_changed(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await workflow.apply_collaborators(uow, event.data)

    async def on_answer_submitted(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await workflow.apply_answer_submitted(uow, event.data)

    async def on_answer_rejected(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await workflow.apply_answer_rejected(uow, event.data)

    async def on_answer_approved(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await workflow.apply_answer_approved(uow, event.data)

    async def on_answer_published(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await delivery.record_published_answer(uow, event.data, mail_domain=settings.mail_domain)

    return {
        # Routing decides every new ticket: under load its decisions come in runs, each applied in
        # one transaction (one inbox claim and one commit for the run, not for every event).
        TicketAssigned.cloudevent_type(): Batched(one=on_ticket_assigned, many=on_tickets_assigned),
        TicketQueued.cloudevent_type(): Batched(one=on_ticket_queued, many=on_tickets_queued),
        TicketTransferred.cloudevent_type(): on_ticket_transferred,
        TicketCollaboratorsChanged.cloudevent_type(): on_ticket_collaborators_changed,
        AnswerSubmitted.cloudevent_type(): on_answer_submitted,
        AnswerRejected.cloudevent_type(): on_answer_rejected,
        AnswerApproved.cloudevent_type(): on_answer_approved,
        AnswerPublished.cloudevent_type(): on_answer_published,
    }
