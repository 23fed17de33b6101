"""Idempotent intake, the lifecycle state machine, follow-ups that reopen, the timeline, search."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

from intake_factories import assign, queue
from sqlalchemy import func, select
from sqlalchemy import text as sa_text
from sqlalchemy.dialects import postgresql

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.chassis.pagination import PageParams
from intake_service.models import Customer, Ticket
from intake_service.repository import TicketFilters, TicketRepository

CHANNEL = auth_headers("channel", sub="web-portal")
LEAD = auth_headers("lead")


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "channel": "web",
        "kind": "question",
        "subject": "退保手續",
        "description": "請問退保需要哪些文件？",
        "customer": {"external_id": f"c-{uuid.uuid4()}"},
    }
    data.update(overrides)
    return data


async def new_assigned_ticket(intake: ServiceHarness) -> tuple[str, uuid.UUID]:
    ticket = (await intake.client.post("/v1/tickets", json=body(), headers=CHANNEL)).json()
    agent_id = uuid.uuid4()
    await assign(intake, ticket["id"], agent_id)
    return ticket["id"], agent_id


async def test_a_retry_with_the_same_key_returns_the_first_ticket(intake: ServiceHarness) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    data = body()
    first = await intake.client.post("/v1/tickets", json=data, headers={**CHANNEL, **key})
    retry = await intake.client.post("/v1/tickets", json=data, headers={**CHANNEL, **key})
    assert first.status_code == retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers


async def test_the_same_key_with_another_body_is_a_409(intake: ServiceHarness) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    await intake.client.post("/v1/tickets", json=body(), headers={**CHANNEL, **key})
    other = await intake.client.post(
        "/v1/tickets", json=body(subject="另一個問題"), headers={**CHANNEL, **key}
    )
    assert other.status_code == 409
    assert other.json()["type"].endswith("/idempotency-key-reused")


async def test_fifty_concurrent_posts_with_one_key_make_exactly_one_ticket(intake: ServiceHarness) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    data = body()

    responses = await asyncio.gather(
        *(intake.client.post("/v1/tickets", json=data, headers={**CHANNEL, **key}) for _ in range(50))
    )

    assert {r.status_code for r in responses} == {201}
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    async with intake.uow() as uow:
        stored = await uow.session.scalar(
            select(func.count())
            .select_from(Ticket)
            .join(Customer, Customer.id == Ticket.customer_id)
            .where(Customer.external_id == data["customer"]["external_id"])
        )
        events = await uow.session.scalar(
            select(func.count())
            .select_from(OUTBOX)
            .where(
                OUTBOX.c.event_type == "helpdesk.ticket.created.v1",
                OUTBOX.c.payload["data"]["subject"].astext == data["subject"],
                OUTBOX.c.key == str(responses[0].json()["id"]),
            )
        )
    assert (stored, events) == (1, 1)


async def test_keys_belong_to_their_caller(intake: ServiceHarness) -> None:
    key = {"Idempotency-Key": "order-1001"}
    mine = await intake.client.post("/v1/tickets", json=body(), headers={**CHANNEL, **key})
    theirs = await intake.client.post(
        "/v1/tickets", json=body(), headers={**auth_headers("channel", sub="mail-gateway"), **key}
    )
    assert mine.json()["id"] != theirs.json()["id"]


async def test_an_overlong_key_is_a_422(intake: ServiceHarness) -> None:
    response = await intake.client.post(
        "/v1/tickets", json=body(), headers={**CHANNEL, "Idempotency-Key": "k" * 300}
    )
    assert response.status_code == 422
    assert response.json()["type"].endswith("/invalid-idempotency-key")


async def test_assignee_works_resolves_and_closes(intake: ServiceHarness) -> None:
    ticket_id, agent_id = await new_assigned_ticket(intake)
    agent = auth_headers("agent", sub=str(agent_id))

    started = await intake.client.post(f"/v1/tickets/{ticket_id}/start", headers=agent)
    resolved = await intake.client.post(
        f"/v1/tickets/{ticket_id}/resolve", headers=agent, json={"note": "已說明"}
    )
    closed = await intake.client.post(f"/v1/tickets/{ticket_id}/close", headers=agent)

    assert [started.json()["status"], resolved.json()["status"], closed.json()["status"]] == [
        "in_progress",
        "resolved",
        "closed",
    ]
    assert resolved.json()["resolution_count"] == 1
    assert closed.json()["closed_at"] is not None


async def test_other_agents_may_not_change_the_ticket_but_a_lead_may(intake: ServiceHarness) -> None:
    ticket_id, _ = await new_assigned_ticket(intake)
    stranger = await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=auth_headers("agent"))
    lead = await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=LEAD)
    assert stranger.status_code == 403
    assert lead.status_code == 200


async def test_illegal_transitions_are_409(intake: ServiceHarness) -> None:
    fresh = (await intake.client.post("/v1/tickets", json=body(), headers=CHANNEL)).json()
    start_unassigned = await intake.client.post(f"/v1/tickets/{fresh['id']}/start", headers=LEAD)
    assert start_unassigned.status_code == 409
    assert start_unassigned.json()["current_status"] == "new"

    ticket_id, _ = await new_assigned_ticket(intake)
    await intake.client.post(f"/v1/tickets/{ticket_id}/close", headers=LEAD)
    again = await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=LEAD)
    message = await intake.client.post(
        f"/v1/tickets/{ticket_id}/messages", headers=CHANNEL, json={"body": "還在嗎"}
    )
    assert again.status_code == 409
    assert message.status_code == 409
    assert message.json()["type"].endswith("/ticket-closed")


async def test_a_customer_reply_after_resolution_reopens_for_the_same_agent(intake: ServiceHarness) -> None:
    ticket_id, agent_id = await new_assigned_ticket(intake)
    await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=LEAD)

    reply = await intake.client.post(
        f"/v1/tickets/{ticket_id}/messages",
        headers=CHANNEL,
        json={"body": "問題還沒解決，文件寄出後沒有回音。"},
    )

    assert reply.status_code == 201
    shown = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    assert (shown["status"], shown["reopen_count"]) == ("reopened", 1)
    async with intake.uow() as uow:
        events = (
            await uow.session.execute(
                select(OUTBOX.c.event_type, OUTBOX.c.payload)
                .where(OUTBOX.c.key == ticket_id)
                .order_by(OUTBOX.c.seq)
            )
        ).all()
    types = [e.event_type for e in events]
    assert types[-2:] == ["helpdesk.ticket.message_received.v1", "helpdesk.ticket.reopened.v1"]
    assert events[-1].payload["data"]["previous_agent_id"] == str(agent_id)
    assert events[-1].payload["data"]["previous_status"] == "resolved"

    await assign(intake, ticket_id, agent_id)
    assert (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()["status"] == "assigned"


async def message_received(intake: ServiceHarness, message_id: str) -> dict[str, Any]:
    """The `ticket.message_received` event's data for one message, as it sits in the outbox."""
    async with intake.uow() as uow:
        data: dict[str, Any] = (
            await uow.session.execute(
                select(OUTBOX.c.payload["data"]).where(
                    OUTBOX.c.event_type == "helpdesk.ticket.message_received.v1",
                    OUTBOX.c.payload["data"]["message_id"].astext == message_id,
                )
            )
        ).scalar_one()
    return data


async def test_a_follow_up_leaves_intake_without_the_customers_contact_details(
    intake: ServiceHarness,
) -> None:
    # `555 0100` matches no phone pattern: only the customer's known phone can catch it.
    customer = {"external_id": f"c-{uuid.uuid4()}", "email": "lin@example.com", "phone": "555 0100"}
    ticket = (await intake.client.post("/v1/tickets", json=body(customer=customer), headers=CHANNEL)).json()

    reply = await intake.client.post(
        f"/v1/tickets/{ticket['id']}/messages",
        headers=CHANNEL,
        json={"body": "請打 555 0100 或手機 0912-345-678，市話 02-2345-6789，保單 2026-12-06 14:30 到期"},
    )

    assert reply.status_code == 201, reply.text
    assert (await message_received(intake, reply.json()["id"]))["body"] == (
        "請打 [phone] 或手機 [phone]，市話 [phone]，保單 2026-12-06 14:30 到期"
    )


async def test_a_follow_up_that_redaction_lengthens_is_cut_to_the_event_limit(intake: ServiceHarness) -> None:
    ticket = (await intake.client.post("/v1/tickets", json=body(), headers=CHANNEL)).json()

    reply = await intake.client.post(
        f"/v1/tickets/{ticket['id']}/messages", headers=CHANNEL, json={"body": "a@b.co " * 2857}
    )

    assert reply.status_code == 201, reply.text  # was a 500: the redacted body outgrew the event
    redacted = (await message_received(intake, reply.json()["id"]))["body"]
    assert len(redacted) == 20_000
    assert redacted.startswith("[email] [email]") and "a@b.co" not in redacted


async def test_timeline_lists_what_happened_in_order(intake: ServiceHarness) -> None:
    ticket_id, agent_id = await new_assigned_ticket(intake)
    await intake.client.post(f"/v1/tickets/{ticket_id}/messages", headers=CHANNEL, json={"body": "補充資料"})
    await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=LEAD)

    items = (await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)).json()

    assert [i["kind"] for i in items] == [
        "created",
        "assigned",
        "status_changed",
        "message",
        "status_changed",
    ]
    assert items[1]["data"]["agent_id"] == str(agent_id)
    assert items[4]["data"] == {"from": "assigned", "to": "resolved", "note": None}
    assert [i["seq"] for i in items] == sorted(i["seq"] for i in items)


async def test_a_channel_sees_the_conversation_but_not_internal_notes(intake: ServiceHarness) -> None:
    ticket_id, agent_id = await new_assigned_ticket(intake)
    await intake.client.post(f"/v1/tickets/{ticket_id}/messages", headers=CHANNEL, json={"body": "補充資料"})
    await intake.client.post(
        f"/v1/tickets/{ticket_id}/resolve", headers=LEAD, json={"note": "內部：客戶是重複投保"}
    )

    items = (await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=CHANNEL)).json()

    assert [i["kind"] for i in items] == ["created", "status_changed", "message", "status_changed"]
    assert all(i["actor"] is None for i in items)
    assert items[-1]["data"] == {"from": "assigned", "to": "resolved"}
    assert str(agent_id) not in str(items) and "重複投保" not in str(items)


async def test_a_ticket_returned_to_the_queue_loses_its_assignee_and_is_new_again(
    intake: ServiceHarness,
) -> None:
    ticket_id, _ = await new_assigned_ticket(intake)
    await queue(intake, ticket_id, reason="returned to the queue: the assignee went offline")

    ticket = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    assert ticket["status"] == "new" and ticket["assignee_id"] is None
    items = (await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)).json()
    assert [i["kind"] for i in items][-2:] == ["queued", "status_changed"]
    assert "offline" in items[-2]["data"]["reason"]

    other = uuid.uuid4()
    await assign(intake, ticket_id, other)
    ticket = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    assert ticket["status"] == "assigned" and ticket["assignee_id"] == str(other)


async def test_filters_and_chinese_search(intake: ServiceHarness) -> None:
    marker = uuid.uuid4().hex[:8]
    complaint = (
        await intake.client.post(
            "/v1/tickets",
            headers=CHANNEL,
            json=body(
                kind="complaint",
                channel="phone",
                priority="high",
                subject=f"投訴理賠太慢 {marker}",
                description="我對理賠處理速度非常不滿意",
            ),
        )
    ).json()
    await intake.client.post("/v1/tickets", headers=CHANNEL, json=body(subject=f"保費查詢 {marker}"))

    async def ids(**params: Any) -> set[str]:
        page = (await intake.client.get("/v1/tickets", headers=LEAD, params={"limit": 200, **params})).json()
        return {t["id"] for t in page["items"]}

    assert await ids(kind="complaint", channel="phone", priority="high", q=marker) == {complaint["id"]}
    # Simplified query words find Traditional text (and the other way round).
    assert complaint["id"] in await ids(q="理赔 处理")
    assert complaint["id"] not in await ids(q="保費", kind="complaint")
    bad_range = await intake.client.get(
        "/v1/tickets",
        headers=LEAD,
        params={"created_from": "2026-02-01T00:00:00Z", "created_to": "2026-01-01T00:00:00Z"},
    )
    assert bad_range.status_code == 422
    bad_kind = await intake.client.get("/v1/tickets", headers=LEAD, params={"kind": "rant"})
    assert bad_kind.json()["errors"][0]["field"] == "query.kind"


async def test_search_needs_all_the_words_and_is_served_by_the_search_index(intake: ServiceHarness) -> None:
    marker = uuid.uuid4().hex[:8]
    blob = secrets.token_hex(1600)  # a pasted file: one 3,200-character "word", too long to index
    posted = await intake.client.post(
        "/v1/tickets",
        headers=CHANNEL,
        json=body(subject=f"附件打不開 {marker}", description=f"客服給我的檔案內容是 {blob} 請幫忙"),
    )
    assert posted.status_code == 201, posted.text
    pasted = posted.json()
    other = (
        await intake.client.post("/v1/tickets", headers=CHANNEL, json=body(subject=f"附件 {marker}"))
    ).json()

    async def found(q: str) -> set[str]:
        page = (await intake.client.get("/v1/tickets", headers=LEAD, params={"q": q, "limit": 200})).json()
        return {t["id"] for t in page["items"]}

    assert await found(marker) == {pasted["id"], other["id"]}
    assert await found(f"{marker} 檔案") == {pasted["id"]}  # every word of the query, not any

    query = TicketRepository.page_query(
        PageParams(limit=50, cursor=None), TicketFilters(search_terms=(marker,))
    )
    sql = query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    async with intake.uow() as uow:
        # A handful of test rows would be read in order; forbidding that shows the index is usable.
        await uow.session.execute(sa_text("SET LOCAL enable_seqscan = off"))
        await uow.session.execute(sa_text("SET LOCAL enable_indexscan = off"))
        plan = "\n".join((await uow.session.execute(sa_text(f"EXPLAIN {sql}"))).scalars())
    assert "ix_tickets_search" in plan, plan


async def test_a_created_range_needs_times_with_an_offset(intake: ServiceHarness) -> None:
    # Without an offset a time is ambiguous (a Shanghai team's 09:00 is not UTC's), and comparing
    # one with an offset-carrying bound is impossible: a 422 naming it, never a 500.
    for params in (
        {"created_from": "2026-01-01T00:00:00", "created_to": "2026-02-01T00:00:00Z"},
        {"created_to": "2026-02-01T00:00:00"},
    ):
        response = await intake.client.get("/v1/tickets", headers=LEAD, params=params)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] in {"query.created_from", "query.created_to"}
    fine = await intake.client.get(
        "/v1/tickets", headers=LEAD, params={"created_from": "2026-01-01T00:00:00+08:00"}
    )
    assert fine.status_code == 200


async def test_resolving_with_an_empty_domain_is_a_422(intake: ServiceHarness) -> None:
    ticket_id, agent_id = await new_assigned_ticket(intake)
    agent = auth_headers("agent", sub=str(agent_id))
    response = await intake.client.post(
        f"/v1/tickets/{ticket_id}/resolve", headers=agent, json={"domain": ""}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "body.domain"
    ticket = await intake.client.get(f"/v1/tickets/{ticket_id}", headers=agent)
    assert ticket.json()["status"] == "assigned"


async def test_a_ticket_locked_for_a_change_is_read_as_it_is_now(intake: ServiceHarness) -> None:
    ticket_id = uuid.UUID(
        (await intake.client.post("/v1/tickets", json=body(), headers=CHANNEL)).json()["id"]
    )
    async with intake.uow() as uow:
        repo = TicketRepository(uow.session)
        seen = await repo.get(ticket_id)
        assert seen is not None and seen.status == "new"
        async with intake.uow() as other:  # a concurrent change, committed meanwhile
            await other.session.execute(
                sa_text("UPDATE tickets SET status = 'closed' WHERE id = :id"), {"id": ticket_id}
            )
            await other.commit()
        locked = await repo.get(ticket_id, for_update=True)
        assert locked is seen and locked.status == "closed"
