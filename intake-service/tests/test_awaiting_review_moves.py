"""A ticket awaiting review is moved by review's outcomes; a lead (or an admin) may still resolve or
close it by hand — a spam or duplicate noticed during review, a review whose outcome was lost — and
the ticket's own agent may not."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from intake_factories import assign, deliver, post_ticket
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.contracts.enums import TicketStatus as S
from helpdesk_shared.contracts.review import AnswerSubmitted
from intake_service.domain import lifecycle

LEAD = auth_headers("lead")
ADMIN = auth_headers("admin")


async def awaiting_review(intake: ServiceHarness) -> tuple[str, dict[str, str]]:
    """A ticket whose answer is in review, and its assignee's headers."""
    ticket_id = await post_ticket(intake, subject="重複扣款", description="信用卡被扣了兩次")
    agent_id = await assign(intake, ticket_id)
    await deliver(
        intake,
        AnswerSubmitted(
            ticket_id=uuid.UUID(ticket_id),
            answer_id=uuid.uuid4(),
            answer_version=1,
            author_id=agent_id,
            reviewer_id=uuid.uuid4(),
            submitted_at=datetime.now(UTC),
        ),
        service="review",
    )
    assert await status(intake, ticket_id) == "awaiting_review"
    return ticket_id, auth_headers("agent", sub=str(agent_id))


async def status(intake: ServiceHarness, ticket_id: str) -> str:
    shown: str = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()["status"]
    return shown


async def events(intake: ServiceHarness, ticket_id: str, event_type: str) -> list[dict[str, Any]]:
    async with intake.uow() as uow:
        rows = await uow.session.execute(
            select(OUTBOX.c.payload).where(OUTBOX.c.key == ticket_id, OUTBOX.c.event_type == event_type)
        )
    return [r.payload["data"] for r in rows]


@pytest.mark.parametrize("headers", [LEAD, ADMIN], ids=["lead", "admin"])
async def test_a_lead_closes_a_ticket_in_review_as_spam(
    intake: ServiceHarness, headers: dict[str, str]
) -> None:
    ticket_id, _ = await awaiting_review(intake)

    closed = await intake.client.post(
        f"/v1/tickets/{ticket_id}/close", headers=headers, json={"reason": "spam"}
    )

    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    [event] = await events(intake, ticket_id, "helpdesk.ticket.closed.v1")
    assert (event["reason"], event["previous_status"]) == ("spam", "awaiting_review")
    last = (await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)).json()[-1]
    assert last["data"] == {"from": "awaiting_review", "to": "closed", "reason": "spam"}


async def test_a_lead_resolves_a_ticket_whose_review_outcome_was_lost(intake: ServiceHarness) -> None:
    ticket_id, _ = await awaiting_review(intake)

    resolved = await intake.client.post(
        f"/v1/tickets/{ticket_id}/resolve", headers=LEAD, json={"note": "已電話回覆客戶"}
    )

    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "resolved"
    assert len(await events(intake, ticket_id, "helpdesk.ticket.resolved.v1")) == 1


async def test_the_agent_whose_answer_is_in_review_may_not_resolve_or_close(intake: ServiceHarness) -> None:
    ticket_id, agent = await awaiting_review(intake)

    resolved = await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=agent)
    closed = await intake.client.post(
        f"/v1/tickets/{ticket_id}/close", headers=agent, json={"reason": "spam"}
    )

    for response in (resolved, closed):
        assert response.status_code == 403, response.text
        assert "lead" in response.json()["detail"]
    assert await status(intake, ticket_id) == "awaiting_review"
    assert await events(intake, ticket_id, "helpdesk.ticket.closed.v1") == []


def test_moves_only_a_lead_makes_are_moves_the_lifecycle_allows() -> None:
    allowed = {(current, target) for current, targets in lifecycle.TRANSITIONS.items() for target in targets}
    assert all(move in allowed for move in lifecycle.LEAD_ONLY)
    assert lifecycle.needs_lead(S.AWAITING_REVIEW, S.CLOSED)
    assert lifecycle.needs_lead(S.AWAITING_REVIEW, S.RESOLVED)
    assert not lifecycle.needs_lead(S.IN_PROGRESS, S.RESOLVED)
    # Review's own outcomes still move the ticket, whoever is assigned.
    assert lifecycle.can_transition(S.AWAITING_REVIEW, S.IN_PROGRESS)
    assert not lifecycle.needs_lead(S.AWAITING_REVIEW, S.ANSWERED)
