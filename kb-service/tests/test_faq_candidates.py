"""Approved answers become FAQ candidates; a newer approved version replaces an older one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import AnswerApproved, EventEnvelope, ReviewChecklist

EDITOR = auth_headers("kb_editor")


def approved(answer_id: uuid.UUID, version: int, body: str) -> EventEnvelope[AnswerApproved]:
    ticket_id = uuid.uuid4()
    checklist = ReviewChecklist(accurate=True, complete=True, compliant=True, meets_need=True)
    return EventEnvelope.wrap(
        AnswerApproved(
            ticket_id=ticket_id,
            answer_id=answer_id,
            answer_version=version,
            author_id=uuid.uuid4(),
            reviewer_id=uuid.uuid4(),
            checklist=checklist,
            domain="auto-insurance",
            question="車險可以跨年度續保嗎？",
            body=body,
            approved_at=datetime.now(UTC),
        ),
        source="/helpdesk/review",
        subject=str(ticket_id),
    )


async def test_newest_approved_version_is_the_candidate(kb: ServiceHarness) -> None:
    consumer = kb.runtime.consumer
    assert consumer is not None
    answer_id = uuid.uuid4()

    await consumer.handle_event(
        approved(answer_id, 2, "第二版：可以，需在到期前30天內辦理。"), topic="helpdesk.review"
    )
    await consumer.handle_event(approved(answer_id, 1, "第一版"), topic="helpdesk.review")

    response = await kb.client.get("/v1/kb/faq-candidates", headers=EDITOR, params={"limit": 200})
    assert response.status_code == 200
    mine = [c for c in response.json()["items"] if c["answer_id"] == str(answer_id)]
    assert [(c["answer_version"], c["body"]) for c in mine] == [(2, "第二版：可以，需在到期前30天內辦理。")]


async def test_agents_cannot_list_candidates_and_limits_are_checked(kb: ServiceHarness) -> None:
    forbidden = await kb.client.get("/v1/kb/faq-candidates", headers=auth_headers("agent"))
    too_many = await kb.client.get("/v1/kb/faq-candidates", headers=EDITOR, params={"limit": 10_000})
    assert forbidden.status_code == 403
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["field"] == "query.limit"
