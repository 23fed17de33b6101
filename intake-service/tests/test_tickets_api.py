"""Intake's ticket API on a real database (in-process ASGI)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.contracts import EventEnvelope, TicketAssigned

CHANNEL = auth_headers("channel")
AGENT = auth_headers("agent")


def ticket_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "web",
        "kind": "question",
        "subject": "保單理賠進度查詢",
        "description": "我上個月提交的理賠申請到現在還沒有結果，請問進度如何？",
        "customer": {
            "external_id": f"cust-{uuid.uuid4()}",
            "name": "林小姐",
            "email": "lin@example.com",
            "phone": "+86 138 0013 8000",
        },
    }
    body.update(overrides)
    return body


async def test_post_ticket_creates_it_and_get_shows_the_same(intake: ServiceHarness) -> None:
    response = await intake.client.post("/v1/tickets", json=ticket_body(), headers=CHANNEL)

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "new"
    assert created["assignee_id"] is None
    assert created["number"].startswith("HD-")
    assert response.headers["location"] == f"/v1/tickets/{created['id']}"
    fetched = await intake.client.get(f"/v1/tickets/{created['id']}", headers=CHANNEL)
    assert fetched.status_code == 200
    assert fetched.json() == created  # the channel's view, as its POST was answered
    # Staff see routing's decisions too: none yet, and not difficult.
    staff = await intake.client.get(f"/v1/tickets/{created['id']}", headers=AGENT)
    assert staff.json() == created | {"difficult": False}


async def test_ticket_numbers_are_unique_and_increasing(intake: ServiceHarness) -> None:
    numbers = []
    for _ in range(3):
        response = await intake.client.post("/v1/tickets", json=ticket_body(), headers=CHANNEL)
        numbers.append(response.json()["number"])
    assert len(set(numbers)) == 3
    assert numbers == sorted(numbers)


async def test_created_event_is_in_the_outbox_without_personal_data(intake: ServiceHarness) -> None:
    response = await intake.client.post("/v1/tickets", json=ticket_body(), headers=CHANNEL)
    ticket_id = response.json()["id"]

    async with intake.uow() as uow:
        rows = (await uow.session.execute(select(OUTBOX).where(OUTBOX.c.key == ticket_id))).all()
    assert [r.event_type for r in rows] == ["helpdesk.ticket.created.v1"]
    payload = rows[0].payload
    assert payload["subject"] == ticket_id
    assert payload["data"]["ticket_id"] == ticket_id
    serialized = str(payload)
    assert "lin@example.com" not in serialized
    assert "138 0013 8000" not in serialized
    assert "林小姐" not in serialized


async def test_urgency_is_detected_from_the_text(intake: ServiceHarness) -> None:
    urgent = await intake.client.post(
        "/v1/tickets", json=ticket_body(subject="緊急：無法登入"), headers=CHANNEL
    )
    calm = await intake.client.post("/v1/tickets", json=ticket_body(subject="詢問保費"), headers=CHANNEL)
    assert urgent.json()["urgent_detected"] is True
    assert calm.json()["urgent_detected"] is False


async def test_malformed_body_is_a_422_problem_naming_the_field(intake: ServiceHarness) -> None:
    body = ticket_body(channel="pigeon")
    del body["subject"]

    response = await intake.client.post("/v1/tickets", json=body, headers=CHANNEL)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    fields = {e["field"] for e in problem["errors"]}
    assert {"body.subject", "body.channel"} <= fields
    assert "body.subject" in problem["detail"]


async def test_customer_without_any_contact_is_rejected(intake: ServiceHarness) -> None:
    response = await intake.client.post(
        "/v1/tickets", json=ticket_body(customer={"name": "匿名"}), headers=CHANNEL
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.customer"


async def test_invalid_json_is_a_422_problem(intake: ServiceHarness) -> None:
    response = await intake.client.post(
        "/v1/tickets", content=b"{not json", headers={**CHANNEL, "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_unknown_ticket_is_a_404_problem(intake: ServiceHarness) -> None:
    response = await intake.client.get(f"/v1/tickets/{uuid.uuid4()}", headers=AGENT)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/ticket-not-found")


async def test_malformed_ticket_id_is_a_422_problem(intake: ServiceHarness) -> None:
    response = await intake.client.get("/v1/tickets/not-a-uuid", headers=AGENT)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "path.ticket_id"


async def test_missing_or_invalid_token_is_a_401_problem(intake: ServiceHarness) -> None:
    missing = await intake.client.post("/v1/tickets", json=ticket_body())
    forged = await intake.client.post(
        "/v1/tickets",
        json=ticket_body(),
        headers=auth_headers("channel", secret="a-different-secret-of-sufficient-length-0123456789"),
    )
    garbage = await intake.client.get(
        f"/v1/tickets/{uuid.uuid4()}", headers={"Authorization": "Bearer x.y.z"}
    )
    for response in (missing, forged, garbage):
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == "Bearer"


async def test_wrong_role_is_a_403_problem(intake: ServiceHarness) -> None:
    response = await intake.client.post("/v1/tickets", json=ticket_body(), headers=AGENT)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


async def test_list_pages_through_every_ticket_once(intake: ServiceHarness) -> None:
    created = set()
    for _ in range(5):
        response = await intake.client.post("/v1/tickets", json=ticket_body(), headers=CHANNEL)
        created.add(response.json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await intake.client.get("/v1/tickets", params=params, headers=AGENT)).json()
        assert len(page["items"]) <= 2
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert created <= set(seen)


async def test_a_bad_cursor_is_a_422_problem(intake: ServiceHarness) -> None:
    response = await intake.client.get("/v1/tickets", params={"cursor": "garbage!"}, headers=AGENT)
    assert response.status_code == 422
    assert response.json()["type"].endswith("/invalid-cursor")


async def test_assignment_event_is_mirrored_once(intake: ServiceHarness) -> None:
    ticket = (await intake.client.post("/v1/tickets", json=ticket_body(), headers=CHANNEL)).json()
    agent_id = uuid.uuid4()
    event = EventEnvelope.wrap(
        TicketAssigned(
            ticket_id=uuid.UUID(ticket["id"]), agent_id=agent_id, assigned_at=datetime.now(UTC), reason="test"
        ),
        source="/helpdesk/routing",
        subject=ticket["id"],
    )
    consumer = intake.runtime.consumer
    assert consumer is not None

    first = await consumer.handle_event(event, topic="helpdesk.routing")
    second = await consumer.handle_event(event, topic="helpdesk.routing")

    assert (first, second) == (True, False)
    shown = (await intake.client.get(f"/v1/tickets/{ticket['id']}", headers=AGENT)).json()
    assert shown["assignee_id"] == str(agent_id)
    assert shown["status"] == "assigned"


async def test_a_nul_character_in_the_text_is_a_422_problem_naming_the_field(intake: ServiceHarness) -> None:
    # PostgreSQL text cannot hold U+0000: refused by validation, never sent to the database.
    for body, field in (
        (ticket_body(description="before\u0000after"), "body.description"),
        (ticket_body(tags=["ok", "b\u0000d"]), "body.tags"),
        (ticket_body(customer={"external_id": "x\u0000y"}), "body.customer.external_id"),
    ):
        response = await intake.client.post("/v1/tickets", json=body, headers=CHANNEL)

        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert field in {e["field"] for e in response.json()["errors"]}, response.text


async def test_text_that_redaction_lengthens_is_cut_to_the_event_limits(intake: ServiceHarness) -> None:
    # `[email]` / `[phone]` are longer than `a@b.co` or a phone like `123`: text the API accepts
    # at its limit outgrew the event's field, and the ticket was a 500.
    body = ticket_body(
        subject="123" * 100,
        description="a@b.co " * 2857,
        customer={"external_id": f"cust-{uuid.uuid4()}", "phone": "123"},
    )

    response = await intake.client.post("/v1/tickets", json=body, headers=CHANNEL)

    assert response.status_code == 201, response.text
    ticket_id = response.json()["id"]
    async with intake.uow() as uow:
        data = (
            await uow.session.execute(select(OUTBOX.c.payload["data"]).where(OUTBOX.c.key == ticket_id))
        ).scalar_one()
    assert (len(data["subject"]), len(data["description"])) == (500, 20_000)
    assert data["subject"].startswith("[phone][phone]") and "123" not in data["subject"]
    assert data["description"].startswith("[email] [email]") and "a@b.co" not in data["description"]
    stored = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=AGENT)).json()
    assert stored["subject"] == body["subject"]  # the ticket itself keeps the original


async def test_a_body_over_a_mebibyte_is_refused_before_it_is_read(intake: ServiceHarness) -> None:
    # The fast lane read a body of any size before looking at the token: memory, not a 4xx.
    huge = b'{"channel": "web", "description": "' + b"x" * (1024 * 1024) + b'"}'
    for headers in ({}, {"Authorization": "Bearer nonsense"}):
        response = await intake.client.post(
            "/v1/tickets", content=huge, headers={**headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 413, response.text
        assert response.json()["type"].endswith("/payload-too-large")
