"""A channel retrying a follow-up with its Idempotency-Key stores it once and announces it once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from intake_factories import CHANNEL, assign, post_ticket
from sqlalchemy import func, select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from intake_service.models import Message, Ticket

LEAD = auth_headers("lead")
RECEIVED = "helpdesk.ticket.message_received.v1"


async def new_ticket(intake: ServiceHarness) -> str:
    ticket_id = await post_ticket(intake, subject="理賠文件", description="需要補哪些文件？")
    await assign(intake, ticket_id)
    return ticket_id


def keyed(key: str, caller: dict[str, str] = CHANNEL) -> dict[str, str]:
    return {**caller, "Idempotency-Key": key}


async def post(intake: ServiceHarness, ticket_id: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
    return await intake.client.post(f"/v1/tickets/{ticket_id}/messages", headers=headers, json=body)


async def stored(intake: ServiceHarness, ticket_id: str) -> tuple[int, int]:
    """How many inbound messages the ticket holds, and how many `message_received` events it emitted."""
    async with intake.uow() as uow:
        messages = await uow.session.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.ticket_id == uuid.UUID(ticket_id), Message.direction == "inbound")
        )
        events = await uow.session.scalar(
            select(func.count())
            .select_from(OUTBOX)
            .where(OUTBOX.c.key == ticket_id, OUTBOX.c.event_type == RECEIVED)
        )
    return int(messages or 0), int(events or 0)


async def test_a_retry_with_the_same_key_returns_the_first_message(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake)
    key, body = str(uuid.uuid4()), {"body": "保單號碼是 P12345"}

    first = await post(intake, ticket_id, keyed(key), body)
    retry = await post(intake, ticket_id, keyed(key), body)

    assert first.status_code == retry.status_code == 201, retry.text
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await stored(intake, ticket_id) == (1, 1)
    kinds = [
        i["kind"] for i in (await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)).json()
    ]
    assert kinds.count("message") == 1


async def test_the_same_key_with_another_body_or_ticket_is_a_409(intake: ServiceHarness) -> None:
    ticket_id, other_ticket = await new_ticket(intake), await new_ticket(intake)
    key = str(uuid.uuid4())
    await post(intake, ticket_id, keyed(key), {"body": "第一則"})

    other_body = await post(intake, ticket_id, keyed(key), {"body": "另一則"})
    other_place = await post(intake, other_ticket, keyed(key), {"body": "第一則"})

    for response in (other_body, other_place):
        assert response.status_code == 409, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"].endswith("/idempotency-key-reused")
    assert await stored(intake, ticket_id) == (1, 1)
    assert await stored(intake, other_ticket) == (0, 0)


async def test_a_key_used_for_a_new_ticket_is_not_taken_again_by_a_follow_up(intake: ServiceHarness) -> None:
    key = str(uuid.uuid4())
    created = await intake.client.post(
        "/v1/tickets",
        headers=keyed(key),
        json={
            "channel": "web",
            "kind": "question",
            "subject": "退保",
            "description": "如何退保？",
            "customer": {"external_id": f"c-{uuid.uuid4()}"},
        },
    )
    assert created.status_code == 201, created.text

    reused = await post(intake, created.json()["id"], keyed(key), {"body": "補充"})

    assert reused.status_code == 409, reused.text
    assert await stored(intake, created.json()["id"]) == (0, 0)


async def test_twenty_concurrent_posts_with_one_key_store_one_message(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake)
    key, body = str(uuid.uuid4()), {"body": "急件，請儘快處理"}

    responses = await asyncio.gather(*(post(intake, ticket_id, keyed(key), body) for _ in range(20)))

    assert {r.status_code for r in responses} == {201}, [r.text for r in responses if r.status_code != 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 19
    assert await stored(intake, ticket_id) == (1, 1)


async def test_keys_belong_to_their_caller(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake)
    body = {"body": "同一則訊息"}

    mine = await post(intake, ticket_id, keyed("retry-7"), body)
    theirs = await post(
        intake, ticket_id, keyed("retry-7", auth_headers("channel", sub="mail-gateway")), body
    )

    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert await stored(intake, ticket_id) == (2, 2)


async def test_a_replay_reports_the_first_message_even_after_the_ticket_moved_on(
    intake: ServiceHarness,
) -> None:
    ticket_id = await new_ticket(intake)
    key, body = str(uuid.uuid4()), {"body": "謝謝，問題解決了"}
    first = await post(intake, ticket_id, keyed(key), body)
    assert (await intake.client.post(f"/v1/tickets/{ticket_id}/close", headers=LEAD)).status_code == 200

    retry = await post(intake, ticket_id, keyed(key), body)

    assert retry.status_code == 201, retry.text
    assert retry.json()["id"] == first.json()["id"]
    async with intake.uow() as uow:
        status = await uow.session.scalar(select(Ticket.status).where(Ticket.id == uuid.UUID(ticket_id)))
    assert status == "closed"


async def test_a_refused_follow_up_does_not_use_up_its_key(intake: ServiceHarness) -> None:
    closed, open_ticket = await new_ticket(intake), await new_ticket(intake)
    await intake.client.post(f"/v1/tickets/{closed}/close", headers=LEAD)
    key = str(uuid.uuid4())

    refused = await post(intake, closed, keyed(key), {"body": "還在嗎"})
    unknown = await post(intake, str(uuid.uuid4()), keyed(key), {"body": "還在嗎"})
    accepted = await post(intake, open_ticket, keyed(key), {"body": "還在嗎"})

    assert (refused.status_code, unknown.status_code, accepted.status_code) == (409, 404, 201)
    assert refused.json()["type"].endswith("/ticket-closed")


async def test_an_invalid_key_is_a_422(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake)

    response = await post(intake, ticket_id, keyed("k" * 300), {"body": "太長的鍵"})

    assert response.status_code == 422
    assert response.json()["type"].endswith("/invalid-idempotency-key")
    assert await stored(intake, ticket_id) == (0, 0)
