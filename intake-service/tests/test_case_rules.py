"""Who may mint a survey link and whom its rating credits; staff notes leave intake without the
customer's contacts; complaint case files and closing the ticket wait for each other."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from intake_factories import assign, deliver, post_ticket
from sqlalchemy import delete, select, update

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.contracts.routing import TicketTransferred
from intake_service.app import create_app
from intake_service.autoclose import close_idle
from intake_service.models import ComplaintCase, Rating, Ticket, TimelineEntry
from intake_service.settings import IntakeSettings

CHANNEL = auth_headers("channel", sub="web-portal")
LEAD = auth_headers("lead")
ADMIN = auth_headers("admin")
EMAIL, PHONE = "lin.xiaomei@example.com", "+86 138 0013 8000"


def as_agent(agent_id: uuid.UUID) -> dict[str, str]:
    return auth_headers("agent", sub=str(agent_id))


async def new_ticket(intake: ServiceHarness, kind: str = "question") -> str:
    return await post_ticket(
        intake,
        kind=kind,
        subject="投訴：理賠拖延" if kind == "complaint" else "保費扣款",
        description="三個月還沒有結果",
        customer={"external_id": f"c-{uuid.uuid4()}", "name": "林小美", "email": EMAIL, "phone": PHONE},
    )


async def events(intake: ServiceHarness, ticket_id: str, event_type: str) -> list[dict[str, Any]]:
    async with intake.uow() as uow:
        rows = await uow.session.execute(
            select(OUTBOX.c.payload["data"])
            .where(OUTBOX.c.key == ticket_id, OUTBOX.c.event_type == f"helpdesk.{event_type}.v1")
            .order_by(OUTBOX.c.seq)
        )
    return [r[0] for r in rows]


async def timeline(intake: ServiceHarness, ticket_id: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = (
        await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)
    ).json()
    return result


def claims(intake: ServiceHarness, token: str) -> dict[str, Any]:
    secret = intake.settings.survey_secret.get_secret_value()  # type: ignore[attr-defined]
    decoded: dict[str, Any] = jwt.decode(token, secret, algorithms=["HS256"], audience="helpdesk-survey")
    return decoded


async def survey_token(intake: ServiceHarness, ticket_id: str) -> str:
    response = await intake.client.get(f"/v1/tickets/{ticket_id}/survey-link", headers=CHANNEL)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def rated_agent(intake: ServiceHarness, ticket_id: str, token: str) -> tuple[Any, Any]:
    """Rate with `token`; the agent the stored rating and the `ticket.rated` event credit."""
    rated = await intake.client.post(
        f"/v1/tickets/{ticket_id}/satisfaction", json={"token": token, "score": 5}
    )
    assert rated.status_code == 201, rated.text
    async with intake.uow() as uow:
        stored = await uow.session.scalar(
            select(Rating.agent_id).where(Rating.ticket_id == uuid.UUID(ticket_id))
        )
    [event] = await events(intake, ticket_id, "ticket.rated")
    return stored, event["agent_id"]


def problem_slug(response: Any) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    slug: str = response.json()["type"].rsplit("/", 1)[-1]
    return slug


# --- the survey link: only for the customer's channel ------------------------------------------


async def test_only_the_channel_and_admins_get_a_survey_link_never_the_staff_being_rated(
    intake: ServiceHarness,
) -> None:
    ticket_id = await new_ticket(intake)
    agent = await assign(intake, ticket_id)
    resolved = await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=as_agent(agent))
    assert resolved.status_code == 200, resolved.text

    for staff in (as_agent(agent), auth_headers("agent"), LEAD, auth_headers("reviewer")):
        denied = await intake.client.get(f"/v1/tickets/{ticket_id}/survey-link", headers=staff)
        assert denied.status_code == 403, denied.text
        assert problem_slug(denied) == "forbidden"
    for sender in (CHANNEL, ADMIN):
        link = await intake.client.get(f"/v1/tickets/{ticket_id}/survey-link", headers=sender)
        assert link.status_code == 200, link.text


# --- the survey link credits the agent of the resolution it rates ------------------------------


async def test_a_link_made_after_someone_else_closed_credits_the_agent_who_resolved(
    intake: ServiceHarness,
) -> None:
    ticket_id = await new_ticket(intake)
    first = await assign(intake, ticket_id)
    resolved = await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=as_agent(first))
    assert resolved.status_code == 200, resolved.text
    # The customer writes again, routing gives the reopened ticket to another agent, who closes
    # it as a duplicate: no new resolution, so the survey still rates the first one.
    reply = await intake.client.post(
        f"/v1/tickets/{ticket_id}/messages", headers=CHANNEL, json={"body": "還有"}
    )
    assert reply.status_code == 201, reply.text
    second = await assign(intake, ticket_id)
    closed = await intake.client.post(
        f"/v1/tickets/{ticket_id}/close", headers=as_agent(second), json={"reason": "duplicate"}
    )
    assert closed.status_code == 200, closed.text

    token = await survey_token(intake, ticket_id)

    assert (claims(intake, token)["res"], claims(intake, token)["agt"]) == (1, str(first))
    assert await rated_agent(intake, ticket_id, token) == (first, str(first))


async def test_a_link_without_an_agent_is_credited_to_the_resolver_not_the_current_holder(
    intake: ServiceHarness,
) -> None:
    """Links signed before they named an agent leave it to intake, which looks it up the same way."""
    ticket_id = await new_ticket(intake)
    first = await assign(intake, ticket_id)
    await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=as_agent(first))
    await intake.client.post(f"/v1/tickets/{ticket_id}/messages", headers=CHANNEL, json={"body": "還有"})
    await assign(intake, ticket_id)
    secret = intake.settings.survey_secret.get_secret_value()  # type: ignore[attr-defined]
    old_link = jwt.encode(
        {"sub": ticket_id, "res": 1, "aud": "helpdesk-survey", "exp": datetime.now(UTC) + timedelta(days=1)},
        secret,
        algorithm="HS256",
    )

    assert await rated_agent(intake, ticket_id, old_link) == (first, str(first))


async def test_each_resolution_is_credited_to_whoever_held_the_ticket_then(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake)
    first = await assign(intake, ticket_id)
    await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=LEAD)  # on the assignee's behalf
    first_link = await survey_token(intake, ticket_id)
    await intake.client.post(f"/v1/tickets/{ticket_id}/messages", headers=CHANNEL, json={"body": "還有"})
    await assign(intake, ticket_id, first)
    second = uuid.uuid4()
    await deliver(
        intake,
        TicketTransferred(
            ticket_id=uuid.UUID(ticket_id),
            transfer_id=uuid.uuid4(),
            from_agent_id=first,
            to_agent_id=second,
            requested_by=first,
            reason="需要車險專長",
            transferred_at=datetime.now(UTC),
        ),
        service="routing",
    )
    resolved = await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=as_agent(second))
    assert resolved.status_code == 200, resolved.text

    second_link = await survey_token(intake, ticket_id)

    assert (claims(intake, first_link)["res"], claims(intake, first_link)["agt"]) == (1, str(first))
    assert (claims(intake, second_link)["res"], claims(intake, second_link)["agt"]) == (2, str(second))


async def test_a_resolution_missing_from_the_timeline_credits_nobody(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake)
    await assign(intake, ticket_id)
    await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=LEAD)
    async with intake.uow() as uow:  # history from before the timeline recorded it
        await uow.session.execute(
            delete(TimelineEntry).where(
                TimelineEntry.ticket_id == uuid.UUID(ticket_id), TimelineEntry.kind == "status_changed"
            )
        )
        await uow.commit()

    token = await survey_token(intake, ticket_id)

    assert "agt" in claims(intake, token)
    assert claims(intake, token)["agt"] is None
    assert await rated_agent(intake, ticket_id, token) == (None, None)


# --- staff free text leaves intake without the customer's contacts ------------------------------


async def test_complaint_notes_and_case_fields_reach_events_without_the_customers_contacts(
    intake: ServiceHarness,
) -> None:
    ticket_id = await new_ticket(intake, kind="complaint")
    case = f"/v1/tickets/{ticket_id}/complaint"
    written = {
        "plan": f"三日內致電 {PHONE} 說明",
        "result": f"已寄致歉信到 {EMAIL}",
        "root_cause": "通知寄錯，客戶手機 13800138000 沒收到",
        "corrective_action": f"改由 {EMAIL} 與簡訊通知",
    }
    note = await intake.client.post(f"{case}/notes", headers=LEAD, json={"note": f"已致電客戶 {PHONE}"})
    patched = await intake.client.patch(case, headers=LEAD, json=written)
    assert (note.status_code, patched.status_code) == (200, 200), (note.text, patched.text)

    noted, changed = (await events(intake, ticket_id, "complaint.updated"))[-2:]
    assert noted["progress_note"] == "已致電客戶 [phone]"
    assert {field: changed[field] for field in written} == {
        "plan": "三日內致電 [phone] 說明",
        "result": "已寄致歉信到 [email]",
        "root_cause": "通知寄錯，客戶手機 [phone] 沒收到",
        "corrective_action": "改由 [email] 與簡訊通知",
    }
    # Staff keep seeing what was written.
    stored = (await intake.client.get(case, headers=LEAD)).json()
    assert {field: stored[field] for field in written} == written
    notes = [i["data"].get("note") for i in await timeline(intake, ticket_id) if i["kind"] == "complaint"]
    assert f"已致電客戶 {PHONE}" in notes


async def test_a_redacted_complaint_note_is_cut_to_the_event_limit(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake, kind="complaint")
    long_note = "a@b.co " * 570  # 3,990 characters; `[email]` makes it longer than 4,000
    note = await intake.client.post(
        f"/v1/tickets/{ticket_id}/complaint/notes", headers=LEAD, json={"note": long_note}
    )
    assert note.status_code == 200, note.text
    event = (await events(intake, ticket_id, "complaint.updated"))[-1]
    assert len(event["progress_note"]) == 4_000
    assert "a@b.co" not in event["progress_note"]


async def test_a_resolution_note_reaches_the_event_without_the_customers_contacts(
    intake: ServiceHarness,
) -> None:
    ticket_id = await new_ticket(intake)
    await assign(intake, ticket_id)
    written = f"已致電 {PHONE}，並寄到 {EMAIL} 確認"
    resolved = await intake.client.post(
        f"/v1/tickets/{ticket_id}/resolve", headers=LEAD, json={"note": written}
    )
    assert resolved.status_code == 200, resolved.text

    [event] = await events(intake, ticket_id, "ticket.resolved")
    assert event["note"] == "已致電 [phone]，並寄到 [email] 確認"
    entry = next(i for i in await timeline(intake, ticket_id) if i["data"].get("to") == "resolved")
    assert entry["data"]["note"] == written


# --- complaint case files and closing -----------------------------------------------------------


async def test_a_complaint_ticket_closes_only_once_its_case_file_is_archived(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake, kind="complaint")
    await assign(intake, ticket_id)
    close = f"/v1/tickets/{ticket_id}/close"

    early = await intake.client.post(close, headers=LEAD, json={"reason": "duplicate"})

    assert early.status_code == 409
    assert problem_slug(early) == "complaint-case-open"
    shown = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    assert shown["status"] == "assigned"
    assert await events(intake, ticket_id, "ticket.closed") == []

    await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=LEAD)
    resolved_early = await intake.client.post(close, headers=LEAD)
    assert problem_slug(resolved_early) == "complaint-case-open"
    archived = await intake.client.patch(
        f"/v1/tickets/{ticket_id}/complaint", headers=LEAD, json={"result": "已賠付並致歉", "archived": True}
    )
    assert archived.status_code == 200, archived.text

    closed = await intake.client.post(close, headers=LEAD)
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"


async def test_a_case_file_is_archived_only_once_its_ticket_is_resolved_and_a_result_recorded(
    intake: ServiceHarness,
) -> None:
    ticket_id = await new_ticket(intake, kind="complaint")
    await assign(intake, ticket_id)
    case = f"/v1/tickets/{ticket_id}/complaint"

    while_open = await intake.client.patch(case, headers=LEAD, json={"result": "已致歉", "archived": True})

    assert while_open.status_code == 409
    assert problem_slug(while_open) == "complaint-ticket-open"
    unchanged = (await intake.client.get(case, headers=LEAD)).json()
    assert (unchanged["archived"], unchanged["result"]) == (False, None)

    await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=LEAD)
    for body in ({"archived": True}, {"result": "  ", "archived": True}):
        no_result = await intake.client.patch(case, headers=LEAD, json=body)
        assert no_result.status_code == 409, body
        assert problem_slug(no_result) == "complaint-result-missing"
    assert (await intake.client.patch(case, headers=LEAD, json={"result": "已賠付"})).status_code == 200

    archived = await intake.client.patch(case, headers=LEAD, json={"archived": True})

    assert archived.status_code == 200, archived.text
    assert archived.json()["archived"] is True
    changes = [e["change"] for e in await events(intake, ticket_id, "complaint.updated")]
    assert changes == ["opened", "result_recorded", "archived"]


@pytest.fixture(scope="module")
async def idle(make_service: Any) -> AsyncIterator[ServiceHarness]:
    """Its own database, worker off: the test runs the auto-close passes itself."""
    async with make_service(
        "intake", IntakeSettings, create_app, label="case_rules", auto_close_after_days=0
    ) as harness:
        yield harness


async def test_auto_close_leaves_a_complaint_alone_until_its_case_file_is_archived(
    idle: ServiceHarness,
) -> None:
    question, complaint, without_case = [
        await new_ticket(idle, kind) for kind in ("question", "complaint", "complaint")
    ]
    async with idle.uow() as uow:  # a complaint from before case files existed
        await uow.session.execute(
            delete(ComplaintCase).where(ComplaintCase.ticket_id == uuid.UUID(without_case))
        )
        await uow.commit()
    for ticket_id in (question, complaint, without_case):
        await assign(idle, ticket_id)
        assert (await idle.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=LEAD)).status_code == 200

    async def backdate() -> None:
        async with idle.uow() as uow:
            await uow.session.execute(
                update(Ticket)
                .where(Ticket.status == "resolved")
                .values(status_changed_at=datetime.now(UTC) - timedelta(days=4))
            )
            await uow.commit()

    await backdate()

    assert await close_idle(idle.runtime.uow, after_days=3) == 2
    status = {
        t: (await idle.client.get(f"/v1/tickets/{t}", headers=LEAD)).json()["status"]
        for t in (question, complaint, without_case)
    }
    assert status == {question: "closed", complaint: "resolved", without_case: "closed"}
    assert await events(idle, complaint, "ticket.closed") == []

    archived = await idle.client.patch(
        f"/v1/tickets/{complaint}/complaint", headers=LEAD, json={"result": "已賠付並致歉", "archived": True}
    )
    assert archived.status_code == 200, archived.text
    await backdate()

    assert await close_idle(idle.runtime.uow, after_days=3) == 1
    assert (await idle.client.get(f"/v1/tickets/{complaint}", headers=LEAD)).json()["status"] == "closed"
