"""What staff read of a ticket's conversation on its timeline: the customer's follow-ups with their
text (contacts masked for roles that see them masked), in pages that reach the newest entry."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from intake_factories import CHANNEL, assign, post_ticket

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from intake_service import workflow
from intake_service.models import TimelineEntry

LEAD = auth_headers("lead")
ADMIN = auth_headers("admin")
AGENT = auth_headers("agent")
REVIEWER = auth_headers("reviewer")


def contact() -> tuple[str, str]:
    """An email and a mainland mobile number of this test's own customer."""
    return f"lin.{uuid.uuid4().hex[:8]}@example.com", f"139{random.randrange(10**8):08d}"


async def ticket_of(intake: ServiceHarness, email: str, phone: str) -> str:
    ticket_id = await post_ticket(
        intake,
        subject="保單地址變更",
        description="我搬家了，請更新保單地址",
        customer={"external_id": f"c-{uuid.uuid4()}", "email": email, "phone": phone},
    )
    await assign(intake, ticket_id)
    return ticket_id


async def follow_up(intake: ServiceHarness, ticket_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await intake.client.post(f"/v1/tickets/{ticket_id}/messages", headers=CHANNEL, json=body)
    assert response.status_code == 201, response.text
    message: dict[str, Any] = response.json()
    return message


async def timeline_page(
    intake: ServiceHarness, ticket_id: str, headers: dict[str, str], **params: Any
) -> httpx.Response:
    response = await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response


async def messages(intake: ServiceHarness, ticket_id: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    items = (await timeline_page(intake, ticket_id, headers)).json()
    return [i for i in items if i["kind"] == "message"]


async def test_staff_read_what_the_customer_wrote_in_a_follow_up(intake: ServiceHarness) -> None:
    email, phone = contact()
    ticket_id = await ticket_of(intake, email, phone)
    text = f"新地址是台北市信義路五段7號。有問題請寄 {email} 或打 {phone}"
    sent = await follow_up(
        intake,
        ticket_id,
        {
            "body": text,
            "attachments": [
                {
                    "name": "address-proof.pdf",
                    "content_type": "application/pdf",
                    "size_bytes": 2048,
                    "storage_key": "s3://uploads/address-proof.pdf",
                }
            ],
        },
    )

    for reader in (LEAD, ADMIN):
        [entry] = await messages(intake, ticket_id, reader)
        assert entry["data"]["message_id"] == sent["id"]
        assert entry["data"]["body"] == text
        [attachment] = entry["data"]["attachments"]
        assert attachment["name"] == "address-proof.pdf"
        assert (attachment["content_type"], attachment["size_bytes"]) == ("application/pdf", 2048)
        assert uuid.UUID(attachment["id"])

    # Agents and reviewers see the customer's contacts masked, as everywhere else.
    for reader in (AGENT, REVIEWER):
        [entry] = await messages(intake, ticket_id, reader)
        body = entry["data"]["body"]
        assert body.startswith("新地址是台北市信義路五段7號。")
        assert email not in body and phone not in body
        assert "[email]" in body and "[phone]" in body
        assert entry["data"]["attachments"][0]["name"] == "address-proof.pdf"

    # A channel integration sees the conversation's shape, not the text (it holds what it sent).
    [entry] = await messages(intake, ticket_id, CHANNEL)
    assert "body" not in entry["data"] and "attachments" not in entry["data"]
    assert entry["data"]["message_id"] == sent["id"]


async def test_an_erased_customers_follow_up_is_shown_as_erased(intake: ServiceHarness) -> None:
    email, phone = contact()
    ticket_id = await ticket_of(intake, email, phone)
    await follow_up(intake, ticket_id, {"body": f"請回信到 {email}，謝謝"})
    customer_id = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()["customer_id"]

    erased = await intake.client.post(f"/v1/customers/{customer_id}/erase", headers=ADMIN)
    assert erased.status_code == 200, erased.text

    [entry] = await messages(intake, ticket_id, LEAD)
    assert email not in entry["data"]["body"]
    assert "[email]" in entry["data"]["body"]


async def add_entries(intake: ServiceHarness, ticket_id: str, count: int) -> None:
    async with intake.uow() as uow:
        uow.session.add_all(
            TimelineEntry(
                ticket_id=uuid.UUID(ticket_id),
                kind="complaint",
                occurred_at=datetime.now(UTC),
                actor="lead",
                data={"note": f"note {n}"},
            )
            for n in range(count)
        )
        await uow.commit()


async def test_the_newest_history_of_a_long_ticket_is_reached_page_by_page(intake: ServiceHarness) -> None:
    ticket_id = await post_ticket(intake, subject="長期追蹤", description="每週進度")
    await add_entries(intake, ticket_id, workflow.TIMELINE_LIMIT + 5)
    await follow_up(intake, ticket_id, {"body": "最新的一則"})

    first = await timeline_page(intake, ticket_id, LEAD)
    assert len(first.json()) == workflow.TIMELINE_LIMIT
    cursor = first.headers["next-cursor"]
    assert f"cursor={cursor}" in first.headers["link"] and 'rel="next"' in first.headers["link"]
    rest = await timeline_page(intake, ticket_id, LEAD, cursor=cursor)
    assert "next-cursor" not in rest.headers

    items = first.json() + rest.json()
    assert len(items) == 1 + workflow.TIMELINE_LIMIT + 5 + 1  # created, the notes, the message
    assert [i["seq"] for i in items] == sorted({i["seq"] for i in items})
    assert items[-1]["kind"] == "message" and items[-1]["data"]["body"] == "最新的一則"


async def test_pages_hold_every_entry_once_in_order_for_staff_and_channels(intake: ServiceHarness) -> None:
    ticket_id = await post_ticket(intake, subject="退款進度", description="退款何時到帳？")
    await assign(intake, ticket_id)
    for n in range(3):
        await follow_up(intake, ticket_id, {"body": f"第 {n} 次詢問"})
    await add_entries(intake, ticket_id, 2)
    await follow_up(intake, ticket_id, {"body": "還沒到帳"})

    for reader in (LEAD, CHANNEL):
        whole = (await timeline_page(intake, ticket_id, reader)).json()
        paged: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = await timeline_page(intake, ticket_id, reader, **params)
            assert len(page.json()) <= 2
            paged += page.json()
            cursor = page.headers.get("next-cursor")
            if cursor is None:
                break
            assert len(page.json()) == 2, "a page is only short at the end"
        assert paged == whole
    channel_kinds = {i["kind"] for i in (await timeline_page(intake, ticket_id, CHANNEL)).json()}
    assert channel_kinds <= workflow.CUSTOMER_VISIBLE_KINDS


async def test_a_page_of_long_messages_stays_bounded(
    intake: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticket_id = await post_ticket(intake, subject="長文", description="詳細說明")
    for n in range(5):
        await follow_up(intake, ticket_id, {"body": str(n) * 20_000})
    monkeypatch.setattr(workflow, "TIMELINE_BODY_CHARS", 50_000)

    bodies: list[str] = []
    cursor: str | None = None
    while True:
        page = await timeline_page(intake, ticket_id, LEAD, **({"cursor": cursor} if cursor else {}))
        on_page = [i["data"]["body"] for i in page.json() if i["kind"] == "message"]
        assert sum(map(len, on_page)) <= 50_000
        bodies += on_page
        cursor = page.headers.get("next-cursor")
        if cursor is None:
            break
    assert bodies == [str(n) * 20_000 for n in range(5)]


# Garbage, a JSON object, a string, a boolean, a negative, a float and an out-of-range position.
@pytest.mark.parametrize(
    "cursor",
    ["garbage!", "eyJhIjoxfQ", "WyJ4Il0", "W3RydWVd", "Wy0xXQ", "WzFlMzBd", "Wzk5OTk5OTk5OTk5OTk5OTk5OTk5XQ"],
)
async def test_a_bad_timeline_cursor_is_a_422_problem(intake: ServiceHarness, cursor: str) -> None:
    ticket_id = await post_ticket(intake, subject="游標", description="錯誤的游標")
    response = await intake.client.get(
        f"/v1/tickets/{ticket_id}/timeline", headers=LEAD, params={"cursor": cursor}
    )
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/invalid-cursor")
