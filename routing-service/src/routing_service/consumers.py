"""Handlers for the events routing consumes."""

from __future__ import annotations

import uuid
from typing import Any

from helpdesk_shared.chassis.consumer import Batched, Handler, InboxClaim
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.intake import (
    CustomerErased,
    TicketAnswerDelivered,
    TicketClosed,
    TicketCreated,
    TicketReopened,
    TicketResolved,
)
from helpdesk_shared.contracts.review import AnswerSubmitted
from routing_service import capacity, collaborators, new_tickets, presence, resolved_examples, service, sla

# The SLA clock, example, collaborator and touch functions never commit: each handler calls them *before* the
# use case that commits, so their changes, that use case's and the inbox row land in one
# transaction. A new ticket's clocks start inside `route_new_ticket`, from its classification.


async def on_ticket_created(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await service.route_new_ticket(uow, event.data)


async def on_tickets_created(
    events: list[EventEnvelope[Any]], uow: UnitOfWork, claim: InboxClaim
) -> set[uuid.UUID]:
    """A run of new tickets of one partition, routed in one transaction whose first read also
    claims their inbox rows (see `new_tickets`)."""
    return await new_tickets.route_new_tickets(uow, events, claim)


async def on_ticket_resolved(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await sla.ticket_resolved(uow, event.data)
    await resolved_examples.learn_from_resolution(uow, event.data)
    await collaborators.clear(uow, event.data.ticket_id)
    await capacity.release_ticket(uow, event.data.ticket_id)


async def on_ticket_closed(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await sla.ticket_closed(uow, event.data)
    await resolved_examples.forget_text(uow, event.data)
    await collaborators.clear(uow, event.data.ticket_id)
    await capacity.release_ticket(uow, event.data.ticket_id)


async def on_customer_erased(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    """The erased customer's text and the training examples it became go (see `forget_erased`).

    The active classifier was trained before: its vocabulary may still hold words of the erased
    text until the next retrain. None is started here — retraining is a lead's decision, and one
    per erasure would retrain on every request.
    """
    await resolved_examples.forget_erased(uow, event.data)
    await uow.commit()


async def on_ticket_reopened(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await sla.ticket_reopened(uow, event.data)
    await capacity.reassign_reopened(uow, event.data)


async def on_answer_delivered(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    """The answer reached the customer: the clocks move and the agent's slot goes to the queue
    (the ticket stays theirs while it waits for the customer)."""
    await sla.answer_delivered(uow, event.data)
    await capacity.answer_delivered(uow, event.data)


async def on_answer_submitted(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await sla.answer_submitted(uow, event.data)
    await presence.touch(uow, event.data)
    await uow.commit()


HANDLERS: dict[str, Handler] = {
    TicketCreated.cloudevent_type(): Batched(one=on_ticket_created, claiming=on_tickets_created),
    TicketResolved.cloudevent_type(): on_ticket_resolved,
    TicketClosed.cloudevent_type(): on_ticket_closed,
    TicketReopened.cloudevent_type(): on_ticket_reopened,
    TicketAnswerDelivered.cloudevent_type(): on_answer_delivered,
    AnswerSubmitted.cloudevent_type(): on_answer_submitted,
    CustomerErased.cloudevent_type(): on_customer_erased,
}
CONSUMES = ["helpdesk.intake", "helpdesk.review"]
