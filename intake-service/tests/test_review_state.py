"""Review state mirrored from review's events: submitted → awaiting review, rejected → back to work,
approved noted; events the lifecycle cannot follow are noted but never break the consumer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, TypeAlias

from intake_factories import assign, post_ticket
from intake_factories import deliver as deliver_from
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import INBOX, OUTBOX
from helpdesk_shared.contracts import EventEnvelope
from helpdesk_shared.contracts.review import (
    AnswerApproved,
    AnswerPublished,
    AnswerRejected,
    AnswerSubmitted,
    ReviewChecklist,
)

LEAD = auth_headers("lead")
PASSED = ReviewChecklist(accurate=True, complete=True, compliant=True, meets_need=True)
INCOMPLETE = ReviewChecklist(accurate=True, complete=False, compliant=True, meets_need=True)


class Answer:
    """One answer on one ticket, as review would announce its versions."""

    def __init__(self, ticket_id: str) -> None:
        self.ticket_id = uuid.UUID(ticket_id)
        self.answer_id = uuid.uuid4()
        self.author_id = uuid.uuid4()
        self.reviewer_id = uuid.uuid4()

    def submitted(self, version: int) -> AnswerSubmitted:
        return AnswerSubmitted(
            ticket_id=self.ticket_id,
            answer_id=self.answer_id,
            answer_version=version,
            author_id=self.author_id,
            reviewer_id=self.reviewer_id,
            submitted_at=datetime.now(UTC),
        )

    def rejected(self, version: int, comment: str) -> AnswerRejected:
        return AnswerRejected(
            ticket_id=self.ticket_id,
            answer_id=self.answer_id,
            answer_version=version,
            author_id=self.author_id,
            reviewer_id=self.reviewer_id,
            checklist=INCOMPLETE,
            comment=comment,
            rejected_at=datetime.now(UTC),
        )

    def approved(self, version: int) -> AnswerApproved:
        return AnswerApproved(
            ticket_id=self.ticket_id,
            answer_id=self.answer_id,
            answer_version=version,
            author_id=self.author_id,
            reviewer_id=self.reviewer_id,
            checklist=PASSED,
            comment="可以發布",
            body="您好，退保需要保單正本與身分證影本。",
            approved_at=datetime.now(UTC),
        )

    def published(self, version: int) -> AnswerPublished:
        return AnswerPublished(
            ticket_id=self.ticket_id,
            answer_id=self.answer_id,
            answer_version=version,
            author_id=self.author_id,
            reviewer_id=self.reviewer_id,
            body="您好，退保需要保單正本與身分證影本。",
            published_at=datetime.now(UTC),
        )


ReviewEvent: TypeAlias = AnswerSubmitted | AnswerRejected | AnswerApproved | AnswerPublished


async def deliver(intake: ServiceHarness, payload: ReviewEvent) -> EventEnvelope[Any]:
    return await deliver_from(intake, payload, service="review")


async def new_ticket(intake: ServiceHarness) -> str:
    return await post_ticket(
        intake, kind="question", subject="退保手續", description="請問退保需要哪些文件？"
    )


async def status(intake: ServiceHarness, ticket_id: str) -> str:
    shown: str = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()["status"]
    return shown


async def timeline(intake: ServiceHarness, ticket_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (
        await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)
    ).json()
    return items


async def inbox_outcome(intake: ServiceHarness, event: EventEnvelope[Any]) -> str:
    async with intake.uow() as uow:
        outcome: str = (
            await uow.session.execute(select(INBOX.c.outcome).where(INBOX.c.event_id == event.id))
        ).scalar_one()
    return outcome


async def test_submit_reject_resubmit_approve_publish_in_order(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake)
    await assign(intake, ticket_id)
    answer = Answer(ticket_id)

    await deliver(intake, answer.submitted(1))
    assert await status(intake, ticket_id) == "awaiting_review"
    await deliver(intake, answer.rejected(1, "請補充所需文件清單"))
    assert await status(intake, ticket_id) == "in_progress"
    await deliver(intake, answer.submitted(2))
    assert await status(intake, ticket_id) == "awaiting_review"
    await deliver(intake, answer.approved(2))
    assert await status(intake, ticket_id) == "awaiting_review"
    await deliver(intake, answer.published(2))

    items = await timeline(intake, ticket_id)
    # After created, assigned and new → assigned; what delivery does next is test_delivery's concern.
    review_part = [
        (i["kind"], i["data"].get("answer_version"), i["data"].get("from"), i["data"].get("to"))
        for i in items
    ][3:11]
    assert review_part == [
        ("answer_submitted", 1, None, None),
        ("status_changed", None, "assigned", "awaiting_review"),
        ("answer_rejected", 1, None, None),
        ("status_changed", None, "awaiting_review", "in_progress"),
        ("answer_submitted", 2, None, None),
        ("status_changed", None, "in_progress", "awaiting_review"),
        ("answer_approved", 2, None, None),
        ("answer_published", 2, None, None),
    ]
    submitted, rejected, approved = (
        next(i for i in items if i["kind"] == kind)
        for kind in ("answer_submitted", "answer_rejected", "answer_approved")
    )
    assert submitted["data"]["summary"] == "answer v1 submitted for review"
    assert submitted["actor"] == str(answer.author_id)
    assert rejected["data"]["comment"] == "請補充所需文件清單"
    assert rejected["data"]["checklist"]["complete"] is False
    assert rejected["data"]["reviewer_id"] == str(answer.reviewer_id)
    assert rejected["actor"] == str(answer.reviewer_id)
    assert approved["data"]["summary"] == "answer v2 approved"
    assert "body" not in approved["data"]
    assert [i["seq"] for i in items] == sorted(i["seq"] for i in items)


async def test_a_redelivered_review_event_changes_nothing(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake)
    await assign(intake, ticket_id)
    consumer = intake.runtime.consumer
    assert consumer is not None
    event = EventEnvelope.wrap(Answer(ticket_id).submitted(1), source="/helpdesk/review", subject=ticket_id)

    assert await consumer.handle_event(event, topic="helpdesk.review")
    assert not await consumer.handle_event(event, topic="helpdesk.review")

    kinds = [i["kind"] for i in await timeline(intake, ticket_id)]
    assert kinds.count("answer_submitted") == 1


async def test_an_event_the_lifecycle_cannot_follow_is_noted_and_the_status_kept(
    intake: ServiceHarness,
) -> None:
    closed_id = await new_ticket(intake)
    await intake.client.post(f"/v1/tickets/{closed_id}/close", headers=LEAD, json={"reason": "spam"})
    unassigned_id = await new_ticket(intake)
    late = Answer(closed_id)

    events = [
        await deliver(intake, late.submitted(1)),
        await deliver(intake, late.rejected(1, "太晚了")),
        await deliver(intake, late.approved(1)),
        await deliver(intake, Answer(unassigned_id).rejected(1, "順序錯亂")),
    ]

    assert await status(intake, closed_id) == "closed"
    assert await status(intake, unassigned_id) == "new"
    assert [await inbox_outcome(intake, e) for e in events] == ["processed"] * 4
    kinds = [i["kind"] for i in await timeline(intake, closed_id)]
    assert kinds[-3:] == ["answer_submitted", "answer_rejected", "answer_approved"]
    assert "answer_rejected" in [i["kind"] for i in await timeline(intake, unassigned_id)]


async def test_an_event_for_an_unknown_ticket_is_ignored_not_dead_lettered(intake: ServiceHarness) -> None:
    ghost = Answer(str(uuid.uuid4()))

    events = [await deliver(intake, ghost.submitted(1)), await deliver(intake, ghost.approved(1))]

    assert [await inbox_outcome(intake, e) for e in events] == ["processed", "processed"]
    async with intake.uow() as uow:
        dead = (
            await uow.session.execute(select(OUTBOX.c.event_id).where(OUTBOX.c.key == str(ghost.ticket_id)))
        ).all()
    assert dead == []
