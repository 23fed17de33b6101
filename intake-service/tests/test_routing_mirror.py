"""Routing's classification and escalations mirrored on intake's tickets: the fields, the list
filters that use them, the timeline, and old or repeated events that must not undo newer state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from intake_factories import CHANNEL, assign
from intake_factories import deliver as deliver_from
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy import text as sa_text
from sqlalchemy.dialects import postgresql

from helpdesk_runtime.testing import ServiceHarness, auth_headers, partition_records
from helpdesk_shared.chassis.db import INBOX, OUTBOX
from helpdesk_shared.chassis.pagination import PageParams
from helpdesk_shared.contracts import EventEnvelope, TicketAssigned, TicketClassified, TicketEscalated
from helpdesk_shared.contracts.enums import EscalationReason, Priority, SlaTarget
from intake_service.models import Delivery, Message, TimelineEntry
from intake_service.repository import TicketFilters, TicketRepository

LEAD = auth_headers("lead")
POLICY = uuid.UUID("5a000000-0000-4000-8000-000000000002")
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


async def deliver(intake: ServiceHarness, payload: TicketClassified | TicketEscalated) -> EventEnvelope[Any]:
    return await deliver_from(intake, payload, service="routing")


async def new_ticket(
    intake: ServiceHarness, marker: str, *, priority: str = "normal", category_hint: str | None = None
) -> str:
    response = await intake.client.post(
        "/v1/tickets",
        headers=CHANNEL,
        json={
            "channel": "web",
            "kind": "question",
            "priority": priority,
            "subject": f"理賠進度 {marker}",
            "description": "上個月提交的理賠申請還沒有結果",
            "customer": {"external_id": f"c-{uuid.uuid4()}"},
        }
        | ({"category_hint": category_hint} if category_hint else {}),
    )
    assert response.status_code == 201, response.text
    ticket_id: str = response.json()["id"]
    return ticket_id


def classified(ticket_id: str, *, at: datetime = T0, **fields: Any) -> TicketClassified:
    values: dict[str, Any] = {
        "domain": "health-insurance",
        "category": "理賠",
        "confidence": 0.9,
        "priority": Priority.NORMAL,
        "sla_policy_id": POLICY,
        "first_response_due_at": at + timedelta(hours=4),
        "resolution_due_at": at + timedelta(days=5),
    } | fields
    return TicketClassified(ticket_id=uuid.UUID(ticket_id), classified_at=at, **values)


def escalated(ticket_id: str, *, at: datetime, previous: Priority, priority: Priority) -> TicketEscalated:
    return TicketEscalated(
        ticket_id=uuid.UUID(ticket_id),
        reason=EscalationReason.SLA_BREACH,
        sla_target=SlaTarget.FIRST_RESPONSE,
        previous_priority=previous,
        priority=priority,
        lead_id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
        escalated_at=at,
    )


async def shown(intake: ServiceHarness, ticket_id: str) -> dict[str, Any]:
    response = await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)
    assert response.status_code == 200, response.text
    ticket: dict[str, Any] = response.json()
    return ticket


async def found(intake: ServiceHarness, marker: str, **params: Any) -> set[str]:
    response = await intake.client.get(
        "/v1/tickets", headers=LEAD, params={"q": marker, "limit": 200, **params}
    )
    assert response.status_code == 200, response.text
    return {t["id"] for t in response.json()["items"]}


async def timeline(intake: ServiceHarness, ticket_id: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items


async def test_a_ticket_routing_made_urgent_is_found_by_its_priority_and_category(
    intake: ServiceHarness,
) -> None:
    marker = uuid.uuid4().hex[:10]
    ticket_id = await new_ticket(intake, marker, category_hint="保單服務")
    other = await new_ticket(intake, marker, category_hint="保單服務")
    before = await shown(intake, ticket_id)
    assert (before["priority"], before["category"], before["difficult"], before["sla_policy_id"]) == (
        "normal",
        None,
        False,
        None,
    )

    await deliver(intake, classified(ticket_id, priority=Priority.URGENT, urgent=True, difficult=True))

    ticket = await shown(intake, ticket_id)
    assert {k: ticket[k] for k in ("priority", "domain", "category", "category_hint", "difficult")} == {
        "priority": "urgent",
        "domain": "health-insurance",
        "category": "理賠",
        "category_hint": "保單服務",
        "difficult": True,
    }
    assert ticket["sla_policy_id"] == str(POLICY)
    assert datetime.fromisoformat(ticket["first_response_due_at"]) == T0 + timedelta(hours=4)
    assert datetime.fromisoformat(ticket["resolution_due_at"]) == T0 + timedelta(days=5)
    assert ticket["escalated_at"] is None
    assert await found(intake, marker, priority="urgent", category="理賠") == {ticket_id}
    # The channel's hint stands for the category only until routing decided one.
    assert await found(intake, marker, category="保單服務") == {other}
    assert await found(intake, marker, difficult="true") == {ticket_id}
    assert await found(intake, marker, difficult="false") == {other}
    assert await found(intake, marker, domain="health-insurance") == {ticket_id}
    assert await found(intake, marker, domain="life-insurance") == set()


async def test_a_classification_without_a_category_leaves_the_hint_to_the_filter(
    intake: ServiceHarness,
) -> None:
    marker = uuid.uuid4().hex[:10]
    ticket_id = await new_ticket(intake, marker, category_hint="續保")

    await deliver(intake, classified(ticket_id, category=None))

    assert (await shown(intake, ticket_id))["category"] is None
    assert await found(intake, marker, category="續保") == {ticket_id}
    assert await found(intake, marker, domain="health-insurance", category="續保") == {ticket_id}


async def test_an_escalation_raises_the_priority_and_an_older_classification_does_not_lower_it(
    intake: ServiceHarness,
) -> None:
    marker = uuid.uuid4().hex[:10]
    ticket_id = await new_ticket(intake, marker)
    await deliver(intake, classified(ticket_id, at=T0))
    await deliver(
        intake,
        escalated(ticket_id, at=T0 + timedelta(hours=5), previous=Priority.NORMAL, priority=Priority.HIGH),
    )
    raised = await shown(intake, ticket_id)
    assert raised["priority"] == "high"
    assert datetime.fromisoformat(raised["escalated_at"]) == T0 + timedelta(hours=5)

    # A classification decided before the escalation (a late copy): its category is newer than the
    # one stored, its priority older than the escalation's.
    await deliver(intake, classified(ticket_id, at=T0 + timedelta(hours=1), category="退保"))
    # One older than the classification stored now changes nothing at all, nor does an older escalation.
    await deliver(intake, classified(ticket_id, at=T0, category="續保", priority=Priority.LOW))
    await deliver(
        intake,
        escalated(ticket_id, at=T0 + timedelta(hours=2), previous=Priority.LOW, priority=Priority.NORMAL),
    )

    ticket = await shown(intake, ticket_id)
    assert (ticket["priority"], ticket["category"]) == ("high", "退保")
    assert datetime.fromisoformat(ticket["escalated_at"]) == T0 + timedelta(hours=5)
    assert await found(intake, marker, priority="high", category="退保") == {ticket_id}
    kinds = [item["kind"] for item in await timeline(intake, ticket_id, LEAD)]
    assert (kinds.count("classified"), kinds.count("escalated")) == (2, 1)

    # A classification decided after the escalation is routing's newer word on the priority.
    await deliver(
        intake, classified(ticket_id, at=T0 + timedelta(hours=6), priority=Priority.URGENT, urgent=True)
    )
    assert (await shown(intake, ticket_id))["priority"] == "urgent"


async def test_classification_and_escalation_are_on_the_staff_timeline_only(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake, uuid.uuid4().hex[:10])
    lead_id = uuid.UUID("00000000-0000-4000-8000-000000000001")

    await deliver(intake, classified(ticket_id, priority=Priority.URGENT, urgent=True, difficult=True))
    await deliver(
        intake,
        TicketEscalated(
            ticket_id=uuid.UUID(ticket_id),
            reason=EscalationReason.MANUAL,
            previous_priority=Priority.URGENT,
            priority=Priority.URGENT,
            lead_id=lead_id,
            note="客戶第三次來電",
            escalated_at=T0 + timedelta(minutes=30),
        ),
    )

    entries = {item["kind"]: item for item in await timeline(intake, ticket_id, LEAD)}
    assert (entries["classified"]["actor"], entries["classified"]["data"]) == (
        "routing",
        {"domain": "health-insurance", "category": "理賠", "priority": "urgent", "difficult": True},
    )
    assert datetime.fromisoformat(entries["classified"]["occurred_at"]) == T0
    assert (entries["escalated"]["actor"], entries["escalated"]["data"]) == (
        "routing",
        {
            "reason": "manual",
            "sla_target": None,
            "previous_priority": "urgent",
            "priority": "urgent",
            "lead_id": str(lead_id),
            "note": "客戶第三次來電",
        },
    )
    shown_to_channel = {item["kind"] for item in await timeline(intake, ticket_id, CHANNEL)}
    assert shown_to_channel.isdisjoint({"classified", "escalated"})


async def test_a_redelivered_classification_changes_nothing(intake: ServiceHarness) -> None:
    ticket_id = await new_ticket(intake, uuid.uuid4().hex[:10])
    consumer = intake.runtime.consumer
    assert consumer is not None
    event = EventEnvelope.wrap(classified(ticket_id), source="/helpdesk/routing", subject=ticket_id)
    # The same decision again under another event id (routing replaying it) is older than nothing stored.
    replay = EventEnvelope.wrap(classified(ticket_id), source="/helpdesk/routing", subject=ticket_id)

    first = await consumer.handle_event(event, topic="helpdesk.routing")
    second = await consumer.handle_event(event, topic="helpdesk.routing")
    await consumer.handle_event(replay, topic="helpdesk.routing")

    assert (first, second) == (True, False)
    kinds = [item["kind"] for item in await timeline(intake, ticket_id, LEAD)]
    assert kinds.count("classified") == 1


def batches_of(event_type: str) -> float:
    labels = {"service": "intake", "type": event_type}
    return REGISTRY.get_sample_value("helpdesk_event_batch_size_count", labels) or 0.0


async def test_a_run_of_classifications_is_applied_in_one_transaction_skipping_unknown_tickets(
    intake: ServiceHarness,
) -> None:
    marker = uuid.uuid4().hex[:10]
    tickets = [await new_ticket(intake, marker) for _ in range(3)]
    ghost = str(uuid.uuid4())
    events = [
        EventEnvelope.wrap(classified(t, category=f"類別{n}"), source="/helpdesk/routing", subject=t)
        for n, t in enumerate([tickets[0], ghost, *tickets[1:]])
    ]
    consumer = intake.runtime.consumer
    assert consumer is not None
    runs = batches_of(events[0].type)

    await consumer.handle_records(partition_records([*events, events[0]], "helpdesk.routing"))

    assert batches_of(events[0].type) == runs + 1  # one run: the unknown ticket did not break it up
    assert [(await shown(intake, t))["category"] for t in tickets] == ["類別0", "類別2", "類別3"]
    async with intake.uow() as uow:
        outcome = await uow.session.scalar(select(INBOX.c.outcome).where(INBOX.c.event_id == events[1].id))
        dead = (await uow.session.execute(select(OUTBOX.c.event_id).where(OUTBOX.c.key == ghost))).all()
        classified_entries = (
            await uow.session.scalars(
                select(TimelineEntry.ticket_id).where(
                    TimelineEntry.ticket_id == tickets[0], TimelineEntry.kind == "classified"
                )
            )
        ).all()
    assert (outcome, dead) == ("processed", [])
    assert len(classified_entries) == 1  # the redelivery in the run was skipped


async def test_an_escalation_of_an_unknown_ticket_is_ignored_not_dead_lettered(
    intake: ServiceHarness,
) -> None:
    ghost = uuid.uuid4()

    event = await deliver(
        intake, escalated(str(ghost), at=datetime.now(UTC), previous=Priority.NORMAL, priority=Priority.HIGH)
    )

    async with intake.uow() as uow:
        outcome = await uow.session.scalar(select(INBOX.c.outcome).where(INBOX.c.event_id == event.id))
        dead = (await uow.session.execute(select(OUTBOX.c.event_id).where(OUTBOX.c.key == str(ghost)))).all()
    assert (outcome, dead) == ("processed", [])


async def test_a_difficult_assignment_marks_the_ticket_difficult(intake: ServiceHarness) -> None:
    # Routing makes a ticket reopened twice difficult when it assigns it again, with no new classification.
    ticket_id = await new_ticket(intake, uuid.uuid4().hex[:10])
    await deliver(intake, classified(ticket_id, difficult=False))
    await deliver_from(
        intake,
        TicketAssigned(
            ticket_id=uuid.UUID(ticket_id),
            agent_id=uuid.uuid4(),
            assigned_at=datetime.now(UTC),
            reason="reopened 2 times: difficult, to the team lead",
            difficult=True,
        ),
        service="routing",
    )
    assert (await shown(intake, ticket_id))["difficult"] is True
    await assign(intake, ticket_id)  # an ordinary assignment later does not take it back
    assert (await shown(intake, ticket_id))["difficult"] is True


async def test_sla_filters_find_tickets_whose_clock_still_runs_past_a_time(intake: ServiceHarness) -> None:
    marker = uuid.uuid4().hex[:10]
    now = datetime.now(UTC)
    overdue, later, answered, resolved = [await new_ticket(intake, marker) for _ in range(4)]
    for ticket_id in (overdue, answered, resolved):
        await deliver(intake, classified(ticket_id, at=now - timedelta(days=6)))  # both clocks overdue
    await deliver(intake, classified(later, at=now))
    # An answer reached the customer: the first-response clock stopped, resolution runs on.
    async with intake.uow() as uow:
        message = Message(
            id=uuid.uuid4(),
            ticket_id=uuid.UUID(answered),
            direction="outbound",
            author="agent",
            channel="web",
            body="答覆",
            created_at=now,
        )
        uow.session.add(message)
        await uow.session.flush()
        uow.session.add(
            Delivery(
                ticket_id=uuid.UUID(answered),
                message_id=message.id,
                answer_id=uuid.uuid4(),
                answer_version=1,
                channel="web",
                status="delivered",
                attempts=1,
                next_attempt_at=now,
                delivered_at=now,
            )
        )
        await uow.commit()
    agent_id = await assign(intake, resolved)
    resolving = await intake.client.post(
        f"/v1/tickets/{resolved}/resolve", headers=auth_headers("agent", sub=str(agent_id))
    )
    assert resolving.status_code == 200, resolving.text

    due = {"first_response_due_before": now.isoformat()}
    assert await found(intake, marker, **due) == {overdue}
    assert await found(intake, marker, resolution_due_before=now.isoformat()) == {overdue, answered}
    soon = (now + timedelta(hours=5)).isoformat()
    assert await found(intake, marker, first_response_due_before=soon) == {overdue, later}
    naive = await intake.client.get(
        "/v1/tickets", headers=LEAD, params={"resolution_due_before": "2026-12-01T00:00:00"}
    )
    assert naive.status_code == 422
    assert naive.json()["errors"][0]["field"] == "query.resolution_due_before"


async def test_the_category_filter_is_served_by_its_index(intake: ServiceHarness) -> None:
    query = TicketRepository.page_query(PageParams(limit=50, cursor=None), TicketFilters(category="理賠"))
    sql = query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    async with intake.uow() as uow:
        await uow.session.execute(sa_text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join((await uow.session.execute(sa_text(f"EXPLAIN {sql}"))).scalars())
    assert "ix_tickets_category_created_at" in plan, plan


async def test_an_older_classification_in_the_same_run_changes_nothing(intake: ServiceHarness) -> None:
    # Both in one transaction: the newer one's changes are not written yet when the older one
    # locks the ticket again, and must not be lost (read again from the row, they were).
    ticket_id = await new_ticket(intake, uuid.uuid4().hex[:10])
    events = [
        EventEnvelope.wrap(payload, source="/helpdesk/routing", subject=ticket_id)
        for payload in (
            classified(ticket_id, at=T0 + timedelta(minutes=5), category="新類別"),
            classified(ticket_id, at=T0, category="舊類別"),
        )
    ]
    consumer = intake.runtime.consumer
    assert consumer is not None

    await consumer.handle_records(partition_records(events, "helpdesk.routing"))

    assert (await shown(intake, ticket_id))["category"] == "新類別"
    kinds = [item["kind"] for item in await timeline(intake, ticket_id, LEAD)]
    assert kinds.count("classified") == 1


ROUTING_DECISIONS = (
    "domain",
    "category",
    "difficult",
    "sla_policy_id",
    "first_response_due_at",
    "resolution_due_at",
    "escalated_at",
)


async def test_channel_integrations_see_tickets_without_routings_decisions(intake: ServiceHarness) -> None:
    marker = uuid.uuid4().hex[:10]
    ticket_id = await new_ticket(intake, marker, category_hint="保單服務")
    await deliver(intake, classified(ticket_id, priority=Priority.HIGH, difficult=True))
    await deliver(
        intake,
        escalated(ticket_id, at=T0 + timedelta(hours=1), previous=Priority.HIGH, priority=Priority.URGENT),
    )
    staff = await shown(intake, ticket_id)
    assert all(staff[field] is not None for field in ROUTING_DECISIONS)

    response = await intake.client.get(f"/v1/tickets/{ticket_id}", headers=CHANNEL)
    assert response.status_code == 200, response.text
    channel = response.json()
    # The rest alike: status, assignee, priority (urgent now), the channel's own category_hint.
    assert channel == staff | dict.fromkeys(ROUTING_DECISIONS)
    assert (channel["priority"], channel["category_hint"]) == ("urgent", "保單服務")
    listed = await intake.client.get("/v1/tickets", headers=CHANNEL, params={"q": marker})
    assert listed.json()["items"] == [channel]
    staff_listed = await intake.client.get("/v1/tickets", headers=LEAD, params={"q": marker})
    assert staff_listed.json()["items"] == [staff]


async def test_channel_integrations_cannot_filter_by_routings_decisions(intake: ServiceHarness) -> None:
    # What they may not see they may not ask about either: `difficult=true` would tell which are.
    marker = uuid.uuid4().hex[:10]
    ticket_id = await new_ticket(intake, marker, category_hint="保單服務")
    await deliver(intake, classified(ticket_id, difficult=True))
    for params in (
        {"domain": "health-insurance"},
        {"difficult": "true"},
        {"difficult": "false"},
        {"first_response_due_before": datetime.now(UTC).isoformat()},
        {"resolution_due_before": datetime.now(UTC).isoformat()},
    ):
        response = await intake.client.get("/v1/tickets", headers=CHANNEL, params={"q": marker, **params})
        assert response.status_code == 403, (params, response.text)
        assert response.json()["type"].endswith("/staff-only-filter")
        assert next(iter(params)) in response.json()["detail"]

    async def channel_found(**params: Any) -> set[str]:
        response = await intake.client.get("/v1/tickets", headers=CHANNEL, params={"q": marker, **params})
        assert response.status_code == 200, response.text
        return {t["id"] for t in response.json()["items"]}

    # Their category is the hint they sent: routing's category (理賠) finds nothing for them.
    assert await channel_found(category="保單服務") == {ticket_id}
    assert await channel_found(category="理賠") == set()
    assert await found(intake, marker, category="理賠") == {ticket_id}


async def test_a_replayed_create_answers_with_the_channels_view(intake: ServiceHarness) -> None:
    # Only channels create tickets; by the time a retry comes, routing may have decided.
    headers = {**CHANNEL, "Idempotency-Key": f"mirror-{uuid.uuid4()}"}
    body = {
        "channel": "web",
        "kind": "question",
        "subject": "理賠進度",
        "description": "上個月提交的理賠申請還沒有結果",
        "customer": {"external_id": f"c-{uuid.uuid4()}"},
    }
    first = await intake.client.post("/v1/tickets", headers=headers, json=body)
    assert first.status_code == 201, first.text
    assert {field: first.json()[field] for field in ROUTING_DECISIONS} == dict.fromkeys(ROUTING_DECISIONS)
    await deliver(intake, classified(first.json()["id"], difficult=True))

    retry = await intake.client.post("/v1/tickets", headers=headers, json=body)

    assert retry.headers["idempotent-replayed"] == "true"
    assert {field: retry.json()[field] for field in ROUTING_DECISIONS} == dict.fromkeys(ROUTING_DECISIONS)
    assert (await shown(intake, first.json()["id"]))["difficult"] is True
