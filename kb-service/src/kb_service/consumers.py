"""Handlers for the events kb consumes."""

from __future__ import annotations

from typing import Any

from helpdesk_shared.chassis.consumer import Handler
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.intake import CustomerErased
from helpdesk_shared.contracts.review import AnswerApproved
from kb_service import service


async def on_answer_approved(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await service.add_faq_candidate(uow, event.data)


async def on_customer_erased(event: EventEnvelope[Any], uow: UnitOfWork) -> None:
    await service.forget_erased_customer(uow, event.data)


HANDLERS: dict[str, Handler] = {
    AnswerApproved.cloudevent_type(): on_answer_approved,
    CustomerErased.cloudevent_type(): on_customer_erased,
}
CONSUMES = ["helpdesk.review", "helpdesk.intake"]
