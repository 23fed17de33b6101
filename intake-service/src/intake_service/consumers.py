"""Handlers for the events intake consumes: routing's decisions, review outcomes, published answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from helpdesk_shared.chassis.consumer import Batched, Handler, correlation_of, trace_of
from helpdesk_shared.chassis.logging import correlated, traced
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.review import AnswerApproved, AnswerPublished, AnswerRejected, AnswerSubmitted
from helpdesk_shared.contracts.routing import (
    TicketAssigned,
    TicketClassified,
    TicketCollaboratorsChanged,
    TicketEscalated,
    TicketQueued,
    TicketTransferred,
)
from intake_service import delivery, workflow
from intake_service.settings import IntakeSettings

CONSUMES = ["helpdesk.routing", "helpdesk.review"]


def _mirrored_in_runs(apply: Callable[[UnitOfWork, Any], Awaitable[None]]) -> Batched:
    """A handler of one of routing's decisions: alone, applied and committed; under load a run of
    them waiting in a partition applied in one transaction (one inbox claim and one commit for
    the run), each event under its own correlation id and trace."""

    async def one(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await apply(uow, event.data)
        await uow.commit()

    async def many(events: list[EventEnvelope[Any]], uow: UnitOfWork) -> None:
        for event in events:
            with correlated(correlation_of(event)), traced(trace_of(event)):
                await apply(uow, event.data)

    return Batched(one=one, many=many)


def handlers(settings: IntakeSettings) -> dict[str, Handler]:
    async def on_ticket_transferred(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await workflow.apply_transfer(uow, event.data)

    async def on_ticket_escalated(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await workflow.apply_escalation(uow, event.data)
        await uow.commit()

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
        # Routing decides every new ticket: under load its decisions come in runs.
        TicketClassified.cloudevent_type(): _mirrored_in_runs(workflow.apply_classification),
        TicketAssigned.cloudevent_type(): _mirrored_in_runs(workflow.apply_assignment),
        TicketQueued.cloudevent_type(): _mirrored_in_runs(workflow.apply_queued),
        TicketTransferred.cloudevent_type(): on_ticket_transferred,
        # `sla.breached` is not consumed: routing publishes `ticket.escalated` with it, naming the clock.
        TicketEscalated.cloudevent_type(): on_ticket_escalated,
        TicketCollaboratorsChanged.cloudevent_type(): on_ticket_collaborators_changed,
        AnswerSubmitted.cloudevent_type(): on_answer_submitted,
        AnswerRejected.cloudevent_type(): on_answer_rejected,
        AnswerApproved.cloudevent_type(): on_answer_approved,
        AnswerPublished.cloudevent_type(): on_answer_published,
    }
