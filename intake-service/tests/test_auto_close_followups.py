"""Auto-close never closes a ticket whose customer wrote after the answer delivered to them was
written: a follow-up sent while the answer was in review is still waiting for an answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from intake_factories import CHANNEL, assign, deliver, post_ticket
from sqlalchemy import select, update

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts.review import AnswerSubmitted
from intake_service.app import create_app
from intake_service.autoclose import close_idle
from intake_service.models import Delivery, Message, Ticket
from intake_service.settings import IntakeSettings

LEAD = auth_headers("lead")
DAYS = 3


@pytest.fixture(scope="module")
async def idle(make_service: Any) -> AsyncIterator[ServiceHarness]:
    """Its own worker is off: these tests run the passes themselves."""
    async with make_service(
        "intake", IntakeSettings, create_app, label="autoclose_followups", auto_close_after_days=0
    ) as harness:
        yield harness


def ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


@dataclass
class Answer:
    """One answer version: when it went to review (None: no submission is known), was published
    and was delivered, in days ago."""

    published: float
    delivered: float
    submitted: float | None = None
    version: int = 1
    answer_id: uuid.UUID | None = None


async def submit(
    intake: ServiceHarness, ticket_id: str, answer_id: uuid.UUID, version: int, days: float
) -> None:
    await deliver(
        intake,
        AnswerSubmitted(
            ticket_id=uuid.UUID(ticket_id),
            answer_id=answer_id,
            answer_version=version,
            author_id=uuid.uuid4(),
            reviewer_id=uuid.uuid4(),
            submitted_at=ago(days),
        ),
        service="review",
    )


async def customer_writes(intake: ServiceHarness, ticket_id: str, days: float) -> None:
    """A follow-up through the channel API, as if sent `days` ago."""
    sent = await intake.client.post(
        f"/v1/tickets/{ticket_id}/messages", headers=CHANNEL, json={"body": "另外，第二筆扣款也要退"}
    )
    assert sent.status_code == 201, sent.text
    async with intake.uow() as uow:
        await uow.session.execute(
            update(Message).where(Message.id == uuid.UUID(sent.json()["id"])).values(created_at=ago(days))
        )
        await uow.commit()


async def answered(intake: ServiceHarness, ticket_id: str, *answers: Answer) -> None:
    """The answers were published and delivered; the ticket is answered since the last delivery."""
    async with intake.uow() as uow:
        for answer in answers:
            message_id = uuid.uuid4()
            uow.session.add(
                Message(
                    id=message_id,
                    ticket_id=uuid.UUID(ticket_id),
                    direction="outbound",
                    author="agent",
                    channel="web",
                    body="兩筆扣款中的一筆已退回",
                    created_at=ago(answer.published),
                )
            )
            await uow.session.flush()
            uow.session.add(
                Delivery(
                    id=uuid.uuid4(),
                    ticket_id=uuid.UUID(ticket_id),
                    message_id=message_id,
                    answer_id=answer.answer_id or uuid.uuid4(),
                    answer_version=answer.version,
                    channel="web",
                    status="delivered",
                    attempts=1,
                    next_attempt_at=ago(answer.published),
                    delivered_at=ago(answer.delivered),
                    created_at=ago(answer.published),
                )
            )
        await uow.session.execute(
            update(Ticket)
            .where(Ticket.id == uuid.UUID(ticket_id))
            .values(status="answered", status_changed_at=ago(min(a.delivered for a in answers)))
        )
        await uow.commit()


async def new_ticket(intake: ServiceHarness) -> str:
    ticket_id = await post_ticket(intake, subject="重複扣款", description="信用卡被扣了兩次")
    await assign(intake, ticket_id)
    return ticket_id


async def status(intake: ServiceHarness, ticket_id: str) -> str:
    async with intake.uow() as uow:
        found = await uow.session.scalar(select(Ticket.status).where(Ticket.id == uuid.UUID(ticket_id)))
    assert found is not None
    return found


async def test_a_follow_up_written_while_the_answer_was_in_review_keeps_the_ticket_open(
    idle: ServiceHarness,
) -> None:
    ticket_id = await new_ticket(idle)
    answer_id = uuid.uuid4()
    await submit(idle, ticket_id, answer_id, 1, DAYS + 3)
    await customer_writes(idle, ticket_id, DAYS + 2)  # awaiting review: it does not reopen
    await answered(idle, ticket_id, Answer(answer_id=answer_id, published=DAYS + 1.5, delivered=DAYS + 1))

    await close_idle(idle.runtime.uow, after_days=DAYS)

    assert await status(idle, ticket_id) == "answered"


async def test_a_follow_up_the_delivered_answer_was_written_after_does_not(idle: ServiceHarness) -> None:
    before_review, answered_by_v2 = await new_ticket(idle), await new_ticket(idle)
    first, second = uuid.uuid4(), uuid.uuid4()
    await customer_writes(idle, before_review, DAYS + 4)
    await submit(idle, before_review, first, 1, DAYS + 3)
    await answered(idle, before_review, Answer(answer_id=first, published=DAYS + 1.5, delivered=DAYS + 1))
    # v1 went to review, the customer wrote, v2 (written after) is what was delivered.
    await submit(idle, answered_by_v2, second, 1, DAYS + 5)
    await customer_writes(idle, answered_by_v2, DAYS + 4)
    await submit(idle, answered_by_v2, second, 2, DAYS + 3)
    await answered(
        idle, answered_by_v2, Answer(answer_id=second, version=2, published=DAYS + 1.5, delivered=DAYS + 1)
    )

    await close_idle(idle.runtime.uow, after_days=DAYS)

    assert await status(idle, before_review) == "closed"
    assert await status(idle, answered_by_v2) == "closed"


async def test_without_a_known_submission_the_answers_publication_counts(idle: ServiceHarness) -> None:
    wrote_before, wrote_after = await new_ticket(idle), await new_ticket(idle)
    await customer_writes(idle, wrote_before, DAYS + 2)
    await answered(idle, wrote_before, Answer(published=DAYS + 1.5, delivered=DAYS + 1))
    await customer_writes(idle, wrote_after, DAYS + 1.2)
    await answered(idle, wrote_after, Answer(published=DAYS + 1.5, delivered=DAYS + 1))

    await close_idle(idle.runtime.uow, after_days=DAYS)

    assert await status(idle, wrote_before) == "closed"
    assert await status(idle, wrote_after) == "answered"


async def test_a_resolution_after_the_follow_up_still_closes(idle: ServiceHarness) -> None:
    ticket_id = await new_ticket(idle)
    answer_id = uuid.uuid4()
    await submit(idle, ticket_id, answer_id, 1, DAYS + 3)
    await customer_writes(idle, ticket_id, DAYS + 2)
    # A lead resolved it after reading the follow-up (the ticket was awaiting review).
    assert (await idle.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=LEAD)).status_code == 200
    async with idle.uow() as uow:
        await uow.session.execute(
            update(Ticket).where(Ticket.id == uuid.UUID(ticket_id)).values(status_changed_at=ago(DAYS + 1))
        )
        await uow.commit()

    await close_idle(idle.runtime.uow, after_days=DAYS)

    assert await status(idle, ticket_id) == "closed"
