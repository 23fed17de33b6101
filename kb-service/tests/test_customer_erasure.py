"""An erased customer's questions leave kb: the FAQ candidates of their tickets are deleted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness
from helpdesk_shared.contracts import AnswerApproved, CustomerErased, EventEnvelope, ReviewChecklist
from kb_service.models import FaqCandidate


def approved(ticket_id: uuid.UUID, version: int = 1) -> EventEnvelope[AnswerApproved]:
    checklist = ReviewChecklist(accurate=True, complete=True, compliant=True, meets_need=True)
    return EventEnvelope.wrap(
        AnswerApproved(
            ticket_id=ticket_id,
            answer_id=uuid.uuid4(),
            answer_version=version,
            author_id=uuid.uuid4(),
            reviewer_id=uuid.uuid4(),
            checklist=checklist,
            domain="auto-insurance",
            question="我是王小明，車險可以跨年度續保嗎？",
            body="可以，需在到期前30天內辦理。",
            approved_at=datetime.now(UTC),
        ),
        source="/helpdesk/review",
        subject=str(ticket_id),
    )


def erased(customer_id: uuid.UUID, *ticket_ids: uuid.UUID) -> EventEnvelope[CustomerErased]:
    payload = CustomerErased(
        customer_id=customer_id, ticket_ids=list(ticket_ids), erased_at=datetime.now(UTC)
    )
    return EventEnvelope.wrap(payload, source="/helpdesk/intake")


async def candidates_of(kb: ServiceHarness, *ticket_ids: uuid.UUID) -> list[uuid.UUID]:
    async with kb.uow() as uow:
        found = await uow.session.scalars(
            select(FaqCandidate.ticket_id).where(FaqCandidate.ticket_id.in_(ticket_ids))
        )
        return sorted(found)


async def test_erasure_deletes_the_faq_candidates_of_the_customers_tickets(kb: ServiceHarness) -> None:
    consumer = kb.runtime.consumer
    assert consumer is not None
    customer, first, second, others = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for ticket_id in (first, first, second, others):  # two answers approved for the first ticket
        assert await consumer.handle_event(approved(ticket_id), topic="helpdesk.review")
    assert await candidates_of(kb, first, second, others) == sorted([first, first, second, others])

    erasure = erased(customer, first, second, uuid.uuid4())  # kb never saw an answer to the third
    assert await consumer.handle_event(erasure, topic="helpdesk.intake")

    assert await candidates_of(kb, first, second, others) == [others]
    assert not await consumer.handle_event(erasure, topic="helpdesk.intake")  # a redelivery: a duplicate
