"""The email channel under concurrency and after closure: duplicate deliveries racing each other,
replies to closed tickets (a follow-up that points back), threads that span a closed ticket."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from intake_service.app import create_app
from intake_service.models import EmailThreadId, InboundEmail, Ticket
from intake_service.settings import IntakeSettings

CHANNEL = auth_headers("channel", sub="mail-gateway")
LEAD = auth_headers("lead")
RFC822 = {**CHANNEL, "Content-Type": "message/rfc822"}


def mail(subject: str, body: str, *, message_id: str, headers: str = "") -> bytes:
    return (
        f"From: 林小姐 <lin@example.com>\r\nTo: support@helpdesk.local\r\nSubject: {subject}\r\n"
        f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n{headers}"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{body}"
    ).encode()


async def post(intake: ServiceHarness, raw: bytes) -> dict[str, Any]:
    response = await intake.client.post("/v1/channels/email/inbound", content=raw, headers=RFC822)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def close_ticket(intake: ServiceHarness, ticket_id: str) -> None:
    response = await intake.client.post(
        f"/v1/tickets/{ticket_id}/close", headers=LEAD, json={"reason": "manual"}
    )
    assert response.status_code == 200, response.text


async def ticket(intake: ServiceHarness, ticket_id: str) -> dict[str, Any]:
    result: dict[str, Any] = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    return result


async def timeline(intake: ServiceHarness, ticket_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (
        await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)
    ).json()
    return items


async def test_concurrent_deliveries_of_one_new_email_make_one_ticket(intake: ServiceHarness) -> None:
    message_id = f"race-{uuid.uuid4()}@mail.example.com"
    raw = mail("保單地址變更", "請幫我把保單地址改為新地址。", message_id=message_id)

    responses = await asyncio.gather(
        *(intake.client.post("/v1/channels/email/inbound", content=raw, headers=RFC822) for _ in range(10))
    )

    assert sorted(r.status_code for r in responses) == [200] * 9 + [201], [r.text for r in responses]
    results = [r.json() for r in responses]
    assert {r["outcome"] for r in results} == {"created"}
    assert len({r["ticket_id"] for r in results}) == 1
    assert sum(r["reason"] == "already received" for r in results) == 9
    async with intake.uow() as uow:
        tickets = await uow.session.scalar(
            select(func.count()).select_from(EmailThreadId).where(EmailThreadId.message_id == message_id)
        )
        archived = await uow.session.scalar(
            select(func.count()).select_from(InboundEmail).where(InboundEmail.message_id == message_id)
        )
    assert (tickets, archived) == (1, 1)


async def test_concurrent_deliveries_of_one_reply_thread_it_once(intake: ServiceHarness) -> None:
    original = f"orig-{uuid.uuid4()}@mail.example.com"
    created = await post(intake, mail("理賠進度", "請問理賠進度？", message_id=original))
    reply = mail(
        "Re: 理賠進度",
        "補充：收據已寄出。",
        message_id=f"reply-{uuid.uuid4()}@mail.example.com",
        headers=f"In-Reply-To: <{original}>\r\n",
    )

    results = await asyncio.gather(*(post(intake, reply) for _ in range(10)))

    assert {(r["outcome"], r["ticket_id"]) for r in results} == {("threaded", created["ticket_id"])}
    kinds = [i["kind"] for i in await timeline(intake, created["ticket_id"])]
    assert kinds.count("message") == 1


async def test_a_reply_to_a_closed_ticket_opens_a_follow_up_that_points_back(intake: ServiceHarness) -> None:
    original = f"orig-{uuid.uuid4()}@mail.example.com"
    first = await post(intake, mail("退款申請", "請問退款何時到帳？", message_id=original))
    old = await ticket(intake, first["ticket_id"])
    await close_ticket(intake, old["id"])

    follow_up = await post(
        intake,
        mail(
            "Re: 退款申請",
            "退款還沒到帳。",
            message_id=f"again-{uuid.uuid4()}@mail.example.com",
            headers=f"In-Reply-To: <{original}>\r\n",
        ),
    )

    assert follow_up["outcome"] == "created"
    assert follow_up["ticket_id"] != old["id"]
    new = await ticket(intake, follow_up["ticket_id"])
    assert f"follow-up-of:{old['number']}" in new["tags"]
    new_items = await timeline(intake, new["id"])
    assert [i["kind"] for i in new_items][:2] == ["created", "follow_up_of"]
    assert new_items[1]["data"] == {"original_ticket_id": old["id"], "original_number": old["number"]}
    old_items = await timeline(intake, old["id"])
    assert old_items[-1]["kind"] == "follow_up_opened"
    assert old_items[-1]["data"] == {"follow_up_ticket_id": new["id"], "follow_up_number": new["number"]}
    assert (await ticket(intake, old["id"]))["status"] == "closed"


async def test_later_replies_in_the_thread_go_to_the_follow_up_not_a_third_ticket(
    intake: ServiceHarness,
) -> None:
    original = f"orig-{uuid.uuid4()}@mail.example.com"
    first = await post(intake, mail("發票重開", "請重開發票。", message_id=original))
    await close_ticket(intake, first["ticket_id"])
    second_id = f"again-{uuid.uuid4()}@mail.example.com"
    follow_up = await post(
        intake,
        mail(
            "Re: 發票重開", "發票還是錯的。", message_id=second_id, headers=f"In-Reply-To: <{original}>\r\n"
        ),
    )

    # A mail client lists the whole thread, oldest first: the closed ticket's ids come first.
    third = await post(
        intake,
        mail(
            "Re: 發票重開",
            "再補充一張照片。",
            message_id=f"third-{uuid.uuid4()}@mail.example.com",
            headers=f"In-Reply-To: <{original}>\r\nReferences: <{original}> <{second_id}>\r\n",
        ),
    )

    assert (third["outcome"], third["ticket_id"]) == ("threaded", follow_up["ticket_id"])


async def test_the_most_specific_thread_key_wins(intake: ServiceHarness) -> None:
    a_id, b_id = f"a-{uuid.uuid4()}@x", f"b-{uuid.uuid4()}@x"
    a = await post(intake, mail("問題甲", "甲", message_id=a_id))
    b = await post(intake, mail("問題乙", "乙", message_id=b_id))

    reply = await post(
        intake,
        mail(
            "Re: 問題乙",
            "回覆乙",
            message_id=f"r-{uuid.uuid4()}@x",
            headers=f"In-Reply-To: <{b_id}>\r\nReferences: <{a_id}> <{b_id}>\r\n",
        ),
    )

    assert a["ticket_id"] != b["ticket_id"]
    assert reply["ticket_id"] == b["ticket_id"]


async def test_emails_that_redaction_lengthens_are_cut_to_the_event_limits(intake: ServiceHarness) -> None:
    # Email bodies are cut to the API's 20,000 characters; `[email]` then made them longer (a 500).
    text = "a@b.co\r\n" * 2857
    original = f"long-{uuid.uuid4()}@mail.example.com"
    created = await post(intake, mail("聯絡方式", text, message_id=original))
    reply = await post(
        intake,
        mail(
            "Re: 聯絡方式", text, message_id=f"r-{uuid.uuid4()}@x", headers=f"In-Reply-To: <{original}>\r\n"
        ),
    )

    assert (created["outcome"], reply["outcome"]) == ("created", "threaded")
    async with intake.uow() as uow:
        rows = (
            await uow.session.execute(
                select(OUTBOX.c.event_type, OUTBOX.c.payload["data"].label("data"))
                .where(OUTBOX.c.key == created["ticket_id"])
                .order_by(OUTBOX.c.seq)
            )
        ).all()
    texts = {r.event_type: r.data.get("description") or r.data.get("body") for r in rows}
    for event_type in ("helpdesk.ticket.created.v1", "helpdesk.ticket.message_received.v1"):
        assert texts[event_type].startswith("[email]\n[email]"), event_type
        assert len(texts[event_type]) == 20_000 and "a@b.co" not in texts[event_type], event_type


@pytest.fixture(scope="module")
async def prefixed(make_service: Any) -> AsyncIterator[ServiceHarness]:
    async with make_service(
        "intake", IntakeSettings, create_app, label="prefix", ticket_number_prefix="CS"
    ) as harness:
        yield harness


async def test_the_configured_ticket_number_prefix_threads_by_subject(prefixed: ServiceHarness) -> None:
    created = await post(prefixed, mail("帳單疑問", "帳單金額不對。", message_id=f"p-{uuid.uuid4()}@x"))
    number = (await ticket(prefixed, created["ticket_id"]))["number"]
    assert number.startswith("CS-")

    reply = await post(
        prefixed, mail(f"Re: [{number}] 帳單疑問", "還在等。", message_id=f"q-{uuid.uuid4()}@x")
    )

    assert (reply["outcome"], reply["ticket_id"]) == ("threaded", created["ticket_id"])
    async with prefixed.uow() as uow:
        assert await uow.session.scalar(select(func.count()).select_from(Ticket)) == 1
