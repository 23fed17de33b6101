"""Attachments limits, personal-data masking/export/erasure, satisfaction surveys, complaint case files."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from intake_factories import assign
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.contracts.intake import TicketCreated, TicketMessageReceived, TicketRated
from intake_service.domain.privacy import (
    field_max_length,
    mask_email,
    mask_name,
    mask_phone,
    redact_contacts,
    redact_to_fit,
)
from intake_service.models import Rating

CHANNEL = auth_headers("channel")
LEAD = auth_headers("lead")
ADMIN = auth_headers("admin")
AGENT = auth_headers("agent")
PDF = {
    "name": "保單.pdf",
    "content_type": "application/pdf",
    "size_bytes": 123_456,
    "url": "https://files.example.com/a/保單.pdf",
}


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "channel": "app",
        "kind": "question",
        "subject": "保單影本",
        "description": "附上保單，請協助確認保障範圍",
        "customer": {
            "external_id": f"c-{uuid.uuid4()}",
            "name": "林小美",
            "email": "lin.xiaomei@example.com",
            "phone": "+86 138 0013 8000",
        },
    }
    data.update(overrides)
    return data


async def create(intake: ServiceHarness, **overrides: Any) -> dict[str, Any]:
    response = await intake.client.post("/v1/tickets", json=body(**overrides), headers=CHANNEL)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def event_types(intake: ServiceHarness, ticket_id: str) -> list[str]:
    async with intake.uow() as uow:
        rows = await uow.session.execute(
            select(OUTBOX.c.event_type).where(OUTBOX.c.key == ticket_id).order_by(OUTBOX.c.seq)
        )
    return [r.event_type for r in rows]


def test_masking_rules() -> None:
    assert mask_email("lin.xiaomei@example.com") == "l**********@example.com"
    assert mask_phone("+86 138 0013 8000") == "+** *** **** 8000"
    assert mask_name("林小美") == "林**"
    assert mask_email(None) is None


def test_contact_details_in_free_text_are_redacted_but_business_numbers_stay() -> None:
    text = (
        "請寄到 lin@example.com 或打 +86 139 1234 7731，手機13912347731，座機 021-62345678，"
        "台北 (02)2345-6789，保單號 P20231234567，訂單 1234567，金額 3000 元"
    )
    assert redact_contacts(text) == (
        "請寄到 [email] 或打 [phone]，手機[phone]，座機 [phone]，"
        "台北 [phone]，保單號 P20231234567，訂單 1234567，金額 3000 元"
    )
    assert redact_contacts("call me on 555 0100 thanks", "555 0100") == "call me on [phone] thanks"


def test_an_address_written_against_chinese_text_takes_only_itself() -> None:
    # `\w` matches Chinese characters: the words around an address went with it.
    assert redact_contacts("請寄到lin.xiaomei@example.com謝謝") == "請寄到[email]謝謝"
    assert redact_contacts("郵箱：a_b+c@mail.example.com.cn，電話同上") == "郵箱：[email]，電話同上"


def test_taiwan_and_hong_kong_phone_formats_are_redacted_but_dates_times_and_amounts_stay() -> None:
    phones = (
        "手機 0912-345-678、0912 345 678、+886 912-345-678，市話 02-2345-6789、(02) 2345 6789、"
        "07-123-4567、049-123-4567，深圳 0755-8888 6666、010 6552 9988，香港 +852 9123 4567、9123 4567"
    )
    assert redact_contacts(phones) == (
        "手機 [phone]、[phone]、[phone]，市話 [phone]、[phone]、"
        "[phone]、[phone]，深圳 [phone]、[phone]，香港 [phone]、[phone]"
    )
    business = (
        "訂單 AB-2026-1234，保單號 P0912345678，統一編號 12345678，2026-12-06 14:30 到期，"
        "預算 5000-8000 元，金額 NT$1,200，第 3 期 3000 元，時間 09:30-12:00"
    )
    assert redact_contacts(business) == business


def test_redacted_text_is_cut_to_the_contract_field_limit() -> None:
    assert field_max_length(TicketCreated, "subject") == 500
    assert field_max_length(TicketMessageReceived, "body") == 20_000
    assert field_max_length(TicketRated, "comment") == 2_000  # an optional field
    assert redact_to_fit("a@b.c " * 4, 20) == "[email] [email] [ema"
    assert redact_to_fit("call 123 or 123", 30, "123") == "call [phone] or [phone]"


async def test_attachments_are_stored_and_listed(intake: ServiceHarness) -> None:
    key_only = {
        "name": "photo.jpg",
        "content_type": "image/jpeg",
        "size_bytes": 2048,
        "storage_key": "s3/k/1",
    }
    ticket = await create(intake, attachments=[PDF, key_only])
    listed = (await intake.client.get(f"/v1/tickets/{ticket['id']}/attachments", headers=AGENT)).json()
    assert [(a["name"], a["size_bytes"]) for a in listed] == [("保單.pdf", 123_456), ("photo.jpg", 2048)]


async def test_attachment_limits_are_422_problems_naming_the_field(intake: ServiceHarness) -> None:
    too_big = {**PDF, "size_bytes": 26 * 1024 * 1024}
    no_location = {k: v for k, v in PDF.items() if k != "url"}
    too_many = [PDF] * 21
    for attachments, field in (
        (too_big, "body.attachments.0.size_bytes"),
        (no_location, "body.attachments.0"),
        (too_many, "body.attachments"),
    ):
        payload = attachments if isinstance(attachments, list) else [attachments]
        response = await intake.client.post("/v1/tickets", json=body(attachments=payload), headers=CHANNEL)
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == field
    total = [{**PDF, "size_bytes": 20 * 1024 * 1024}] * 3
    over_total = await intake.client.post("/v1/tickets", json=body(attachments=total), headers=CHANNEL)
    assert over_total.status_code == 422
    assert "total" in over_total.json()["errors"][0]["message"]


async def test_contact_data_is_masked_for_agents_and_whole_for_leads(intake: ServiceHarness) -> None:
    ticket = await create(intake)
    as_agent = (await intake.client.get(f"/v1/customers/{ticket['customer_id']}", headers=AGENT)).json()
    # A channel holds what it sent; a channel token must not read every other channel's customers.
    as_channel = (await intake.client.get(f"/v1/customers/{ticket['customer_id']}", headers=CHANNEL)).json()
    assert as_channel == as_agent
    as_lead = (await intake.client.get(f"/v1/customers/{ticket['customer_id']}", headers=LEAD)).json()
    assert (as_agent["email"], as_agent["phone"], as_agent["masked"]) == (
        "l**********@example.com",
        "+** *** **** 8000",
        True,
    )
    assert (as_lead["email"], as_lead["phone"], as_lead["masked"]) == (
        "lin.xiaomei@example.com",
        "+86 138 0013 8000",
        False,
    )


async def test_export_then_erase_keeps_tickets_but_forgets_the_person(intake: ServiceHarness) -> None:
    ticket = await create(intake)
    customer_id = ticket["customer_id"]
    await intake.client.post(f"/v1/tickets/{ticket['id']}/messages", headers=CHANNEL, json={"body": "補充"})

    export = await intake.client.get(f"/v1/customers/{customer_id}/export", headers=ADMIN)
    assert export.status_code == 200
    assert [t["id"] for t in export.json()["tickets"]] == [ticket["id"]]
    assert [m["body"] for m in export.json()["messages"]] == ["補充"]
    assert (await intake.client.get(f"/v1/customers/{customer_id}/export", headers=LEAD)).status_code == 403

    erased = (await intake.client.post(f"/v1/customers/{customer_id}/erase", headers=ADMIN)).json()
    assert (erased["name"], erased["email"], erased["phone"], erased["erased"]) == (None, None, None, True)
    assert (await intake.client.get(f"/v1/tickets/{ticket['id']}", headers=AGENT)).status_code == 200
    missing = await intake.client.post(f"/v1/customers/{uuid.uuid4()}/erase", headers=ADMIN)
    assert missing.status_code == 404


async def test_satisfaction_survey_once_per_resolution(intake: ServiceHarness) -> None:
    ticket = await create(intake)
    early = await intake.client.get(f"/v1/tickets/{ticket['id']}/survey-link", headers=CHANNEL)
    assert early.status_code == 409
    await assign(intake, ticket["id"])
    await intake.client.post(f"/v1/tickets/{ticket['id']}/resolve", headers=LEAD)
    link = (await intake.client.get(f"/v1/tickets/{ticket['id']}/survey-link", headers=CHANNEL)).json()
    assert link["url"].endswith(link["token"])

    rated = await intake.client.post(
        f"/v1/tickets/{ticket['id']}/satisfaction",
        json={"token": link["token"], "score": 5, "comment": "很滿意"},
    )
    again = await intake.client.post(
        f"/v1/tickets/{ticket['id']}/satisfaction", json={"token": link["token"], "score": 1}
    )
    assert rated.status_code == 201
    assert (rated.json()["score"], rated.json()["resolution_count"]) == (5, 1)
    assert again.status_code == 409
    assert (await event_types(intake, ticket["id"]))[-1] == "helpdesk.ticket.rated.v1"


async def test_a_rating_credits_the_agent_who_resolved_not_whoever_holds_the_ticket_now(
    intake: ServiceHarness,
) -> None:
    ticket = await create(intake)
    resolver = await assign(intake, ticket["id"])
    await intake.client.post(f"/v1/tickets/{ticket['id']}/resolve", headers=LEAD)
    link = (await intake.client.get(f"/v1/tickets/{ticket['id']}/survey-link", headers=CHANNEL)).json()
    # The customer writes again (reopened) and routing gives the ticket to someone else ...
    await intake.client.post(
        f"/v1/tickets/{ticket['id']}/messages", headers=CHANNEL, json={"body": "還有一個問題"}
    )
    successor = await assign(intake, ticket["id"])
    assert successor != resolver
    # ... before the customer answers the survey about the first resolution.
    rated = await intake.client.post(
        f"/v1/tickets/{ticket['id']}/satisfaction", json={"token": link["token"], "score": 4}
    )
    assert rated.status_code == 201, rated.text
    async with intake.uow() as uow:
        stored = await uow.session.scalar(
            select(Rating.agent_id).where(Rating.ticket_id == uuid.UUID(ticket["id"]))
        )
        data = (
            await uow.session.execute(
                select(OUTBOX.c.payload["data"]).where(
                    OUTBOX.c.key == ticket["id"], OUTBOX.c.event_type == "helpdesk.ticket.rated.v1"
                )
            )
        ).scalar_one()
    assert stored == resolver
    assert data["agent_id"] == str(resolver)


async def rated_event(intake: ServiceHarness, comment: str, **customer: str) -> dict[str, Any]:
    """Rate a resolved ticket of a customer with `customer`'s contacts; the `ticket.rated` event's data."""
    ticket = await create(intake, customer={"external_id": f"c-{uuid.uuid4()}", **customer})
    await assign(intake, ticket["id"])
    await intake.client.post(f"/v1/tickets/{ticket['id']}/resolve", headers=LEAD)
    link = (await intake.client.get(f"/v1/tickets/{ticket['id']}/survey-link", headers=CHANNEL)).json()
    rated = await intake.client.post(
        f"/v1/tickets/{ticket['id']}/satisfaction",
        json={"token": link["token"], "score": 2, "comment": comment},
    )
    assert rated.status_code == 201, rated.text
    async with intake.uow() as uow:
        data: dict[str, Any] = (
            await uow.session.execute(
                select(OUTBOX.c.payload["data"]).where(
                    OUTBOX.c.key == ticket["id"], OUTBOX.c.event_type == "helpdesk.ticket.rated.v1"
                )
            )
        ).scalar_one()
    return data


async def test_a_rating_comment_leaves_intake_without_the_customers_contact_details(
    intake: ServiceHarness,
) -> None:
    # `555 0100` matches no phone pattern: only the customer's known phone can catch it.
    data = await rated_event(
        intake,
        "請回電 555 0100 或寄 lin.xiaomei@example.com，謝謝",
        email="lin.xiaomei@example.com",
        phone="555 0100",
    )
    assert data["comment"] == "請回電 [phone] 或寄 [email]，謝謝"


async def test_a_rating_comment_that_redaction_lengthens_is_cut_to_the_event_limit(
    intake: ServiceHarness,
) -> None:
    data = await rated_event(intake, "a@b.co " * 285, phone="+86 138 0013 8000")  # 1,995 characters
    assert len(data["comment"]) == 2_000
    assert data["comment"].startswith("[email] [email]") and "a@b.co" not in data["comment"]


async def test_forged_expired_or_foreign_survey_tokens_are_401(intake: ServiceHarness) -> None:
    ticket, other = await create(intake), await create(intake)
    for t in (ticket, other):
        await assign(intake, t["id"])
        await intake.client.post(f"/v1/tickets/{t['id']}/resolve", headers=LEAD)
    foreign = (await intake.client.get(f"/v1/tickets/{other['id']}/survey-link", headers=CHANNEL)).json()[
        "token"
    ]
    secret = intake.settings.survey_secret.get_secret_value()  # type: ignore[attr-defined]
    expired = jwt.encode(
        {
            "sub": ticket["id"],
            "res": 1,
            "aud": "helpdesk-survey",
            "exp": datetime.now(UTC) - timedelta(minutes=1),
        },
        secret,
        algorithm="HS256",
    )
    forged = jwt.encode(
        {
            "sub": ticket["id"],
            "res": 1,
            "aud": "helpdesk-survey",
            "exp": datetime.now(UTC) + timedelta(days=1),
        },
        "not-the-secret" * 4,
        algorithm="HS256",
    )
    for token in (foreign, expired, forged):
        response = await intake.client.post(
            f"/v1/tickets/{ticket['id']}/satisfaction", json={"token": token, "score": 4}
        )
        assert response.status_code == 401, token
        assert response.json()["type"].endswith("/invalid-survey-token")
    bad_score = await intake.client.post(
        f"/v1/tickets/{ticket['id']}/satisfaction", json={"token": foreign, "score": 6}
    )
    assert bad_score.json()["errors"][0]["field"] == "body.score"


async def test_complaint_case_file_lifecycle(intake: ServiceHarness) -> None:
    ticket = await create(intake, kind="complaint", subject="投訴：理賠拖延", description="三個月還沒有結果")
    person = str(uuid.uuid4())
    plan = await intake.client.patch(
        f"/v1/tickets/{ticket['id']}/complaint",
        headers=LEAD,
        json={
            "responsible_department": "理賠部",
            "responsible_person_id": person,
            "plan": "三日內聯繫客戶說明進度",
            "deadline": "2026-12-01T10:00:00Z",
        },
    )
    note = await intake.client.post(
        f"/v1/tickets/{ticket['id']}/complaint/notes", headers=LEAD, json={"note": "已電話聯繫客戶"}
    )
    result = await intake.client.patch(
        f"/v1/tickets/{ticket['id']}/complaint",
        headers=LEAD,
        json={"result": "已賠付並致歉", "root_cause": "文件遺失", "corrective_action": "改用電子收件"},
    )
    unarchivable = await intake.client.patch(
        f"/v1/tickets/{ticket['id']}/complaint", headers=LEAD, json={"plan": "改", "archived": None}
    )
    # A case file is archived once the complaint's ticket is resolved (and a result recorded).
    await assign(intake, ticket["id"])
    resolved = await intake.client.post(f"/v1/tickets/{ticket['id']}/resolve", headers=LEAD)
    archived = await intake.client.patch(
        f"/v1/tickets/{ticket['id']}/complaint", headers=LEAD, json={"archived": True}
    )
    late = await intake.client.post(
        f"/v1/tickets/{ticket['id']}/complaint/notes", headers=LEAD, json={"note": "補記"}
    )

    assert [r.status_code for r in (plan, note, result, resolved, archived)] == [200] * 5
    assert plan.json()["responsible_person_id"] == person
    assert unarchivable.status_code == 422  # null is not an answer to "archived?" (was a 500)
    assert [e["field"] for e in unarchivable.json()["errors"]] == ["body.archived"]
    assert archived.json()["archived"] is True
    assert late.status_code == 409
    timeline = (await intake.client.get(f"/v1/tickets/{ticket['id']}/timeline", headers=LEAD)).json()
    changes = [i["data"]["change"] for i in timeline if i["kind"] == "complaint"]
    assert changes == ["responsibility_assigned", "progress_noted", "result_recorded", "archived"]
    events = await event_types(intake, ticket["id"])
    assert events.count("helpdesk.complaint.updated.v1") == 5  # opened + four changes
    question = await create(intake)
    assert (
        await intake.client.get(f"/v1/tickets/{question['id']}/complaint", headers=LEAD)
    ).status_code == 409
    agent_edit = await intake.client.patch(f"/v1/tickets/{ticket['id']}/complaint", headers=AGENT, json={})
    assert agent_edit.status_code == 403


async def test_a_complaint_deadline_needs_an_offset(intake: ServiceHarness) -> None:
    ticket = await create(intake, kind="complaint", subject="投訴", description="太慢")
    naive = await intake.client.patch(
        f"/v1/tickets/{ticket['id']}/complaint", headers=LEAD, json={"deadline": "2026-12-31T00:00:00"}
    )
    assert naive.status_code == 422, naive.text  # was a 500: complaint.updated needs an offset
    assert [e["field"] for e in naive.json()["errors"]] == ["body.deadline"]
    local = await intake.client.patch(
        f"/v1/tickets/{ticket['id']}/complaint", headers=LEAD, json={"deadline": "2026-12-31T18:00:00+08:00"}
    )
    assert local.status_code == 200
    assert datetime.fromisoformat(local.json()["deadline"]) == datetime(2026, 12, 31, 10, tzinfo=UTC)


async def test_text_postgresql_cannot_store_is_a_422_naming_the_field(intake: ServiceHarness) -> None:
    # U+0000: PostgreSQL refuses it in text and JSON; a complaint note with one was a 500.
    ticket = await create(intake, kind="complaint", subject="投訴", description="太慢")
    tickets = f"/v1/tickets/{ticket['id']}"
    attempts = {
        "body.body": await intake.client.post(
            f"{tickets}/messages", headers=CHANNEL, json={"body": "補\x00充"}
        ),
        "body.note": await intake.client.post(
            f"{tickets}/complaint/notes", headers=LEAD, json={"note": "已\x00聯繫"}
        ),
        "body.plan": await intake.client.patch(
            f"{tickets}/complaint", headers=LEAD, json={"plan": "計\x00劃"}
        ),
    }
    for field, response in attempts.items():
        assert response.status_code == 422, (field, response.text)
        assert [e["field"] for e in response.json()["errors"]] == [field]
    timeline = (await intake.client.get(f"{tickets}/timeline", headers=LEAD)).json()
    assert [i["kind"] for i in timeline if i["kind"] in ("message", "complaint")] == []  # nothing stored
