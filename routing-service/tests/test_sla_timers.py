"""SLA clocks over a ticket's life, and firing them exactly once, on a real database.

These tests run on a routing instance of their own whose SLA worker sleeps for an hour after its
first (empty) pass, so every warning and breach is fired by the test's own calls, with the clock
time the test chooses; every test starts from an empty `sla_timers` table. The last test uses the
shared routing instance instead, to show that the worker wired into the app fires on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

import pytest
from routing_factories import delivered, events, ticket_sla, without_sla_worker
from routing_factories import ticket_created_at as created
from sqlalchemy import delete, select, update

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.contracts import (
    EventEnvelope,
    Priority,
    SlaBreached,
    SlaWarning,
    TicketClassified,
    TicketClosed,
    TicketEscalated,
    TicketReopened,
    TicketResolved,
    TicketStatus,
)
from helpdesk_shared.contracts.enums import CloseReason
from routing_service import sla
from routing_service.app import create_app
from routing_service.domain.business_time import cn_default
from routing_service.models import Agent, Assignment, QueueEntry, SlaTimer
from routing_service.settings import RoutingSettings
from routing_service.sla_timers import fire_due, sla_timer_worker

SH = ZoneInfo("Asia/Shanghai")
LEAD = auth_headers("lead")
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01")
CN = cn_default()
MONDAY_9 = datetime(2026, 3, 2, 9, 0, tzinfo=SH)  # an ordinary working Monday
POLICY = {
    "urgent": uuid.UUID("5a000000-0000-4000-8000-000000000001"),
    "difficult": uuid.UUID("5a000000-0000-4000-8000-000000000002"),
    "high": uuid.UUID("5a000000-0000-4000-8000-000000000003"),
    "low": uuid.UUID("5a000000-0000-4000-8000-000000000004"),
    "default": uuid.UUID("5a000000-0000-4000-8000-000000000005"),
}


@pytest.fixture(scope="module")
async def clocks(make_service: Any) -> AsyncIterator[ServiceHarness]:
    async with make_service("routing", RoutingSettings, create_app, label="sla", sla_poll_seconds=3600) as h:
        await without_sla_worker(h)
        yield h


@pytest.fixture(autouse=True)
async def no_clocks(clocks: ServiceHarness) -> None:
    async with clocks.uow() as uow:
        await uow.session.execute(delete(SlaTimer))
        await uow.commit()


def wrap(payload: Any) -> EventEnvelope[Any]:
    return EventEnvelope.wrap(payload, source="/helpdesk/intake", subject=str(payload.ticket_id))


def reopened(ticket_id: uuid.UUID, at: datetime, previous: TicketStatus) -> EventEnvelope[Any]:
    return wrap(TicketReopened(ticket_id=ticket_id, previous_status=previous, reopen_count=1, reopened_at=at))


async def handle(clocks: ServiceHarness, event: EventEnvelope[Any]) -> bool:
    consumer = clocks.runtime.consumer
    assert consumer is not None
    return await consumer.handle_event(event, topic="helpdesk.intake")


def utc(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("overrides", "policy", "first_minutes", "days"),
    [
        ({}, "default", 480, 3),
        ({"priority": Priority.URGENT}, "urgent", 60, 1),
        ({"kind": "complaint", "priority": Priority.LOW}, "difficult", 240, 5),
        ({"customer_vip": True}, "difficult", 240, 5),
        ({"priority": Priority.LOW, "channel": "email"}, "low", 960, 5),
        ({"priority": Priority.HIGH}, "high", 240, 2),
    ],
)
async def test_ticket_created_starts_both_clocks_from_the_matching_policy(
    clocks: ServiceHarness, overrides: dict[str, Any], policy: str, first_minutes: int, days: int
) -> None:
    event = created(MONDAY_9, **overrides)
    assert await handle(clocks, event)
    body = await ticket_sla(clocks, event.data.ticket_id)
    first, resolution = body["timers"]["first_response"], body["timers"]["resolution"]
    assert first["policy_id"] == resolution["policy_id"] == str(POLICY[policy])
    assert first["started_at"] == resolution["started_at"] == utc(MONDAY_9)
    assert first["due_at"] == utc(CN.add_business_minutes(MONDAY_9, first_minutes))
    assert first["warn_at"] == utc(CN.add_business_minutes(MONDAY_9, int(first_minutes * 0.8)))
    assert resolution["due_at"] == utc(CN.add_working_days(MONDAY_9, days))
    assert body["priority"] == event.data.priority


async def test_a_fresh_clock_runs_with_its_business_minutes_left(clocks: ServiceHarness) -> None:
    event = created(datetime.now(UTC))
    await handle(clocks, event)
    first = (await ticket_sla(clocks, event.data.ticket_id))["timers"]["first_response"]
    assert first["state"] == "running"
    assert 470 <= first["remaining_business_minutes"] <= 480


async def test_redelivered_and_replayed_ticket_created_do_not_restart_clocks(clocks: ServiceHarness) -> None:
    event = created(MONDAY_9)
    ticket_id = event.data.ticket_id
    assert await handle(clocks, event)
    assert await handle(clocks, delivered(ticket_id, MONDAY_9 + timedelta(hours=1)))
    before = await ticket_sla(clocks, ticket_id)

    assert not await handle(clocks, event)  # Kafka redelivery: same event id, the inbox stops it
    assert await handle(clocks, wrap(event.data))  # a replay under a new event id
    after = await ticket_sla(clocks, ticket_id)
    assert after == before
    assert after["timers"]["first_response"]["state"] == "met"


async def test_classification_can_refine_the_match_before_anything_fired(clocks: ServiceHarness) -> None:
    event = created(MONDAY_9)
    await handle(clocks, event)
    async with clocks.uow() as uow:
        started = await sla.start_timers(uow, event.data, difficult=True)
        await uow.commit()
    assert started is not None
    assert started.policy_id == POLICY["difficult"]
    assert started.first_response_due_at == CN.add_business_minutes(MONDAY_9, 240)
    body = await ticket_sla(clocks, event.data.ticket_id)
    assert body["timers"]["resolution"]["due_at"] == utc(CN.add_working_days(MONDAY_9, 5))


async def test_the_timers_follow_routings_classification(clocks: ServiceHarness) -> None:
    """A rule finding the ticket urgent puts it under the urgent policy; `ticket.classified` says so."""
    keyword = f"kw{uuid.uuid4().hex[:10]}"
    rule = await clocks.client.post(
        "/v1/routing/rules",
        headers=LEAD,
        json={"name": f"urgent-{keyword}", "pattern": keyword, "urgent": True},
    )
    assert rule.status_code == 201, rule.text
    try:
        event = created(MONDAY_9, subject=f"{keyword} 保單被盜用")
        assert await handle(clocks, event)
    finally:
        await clocks.client.delete(f"/v1/routing/rules/{rule.json()['id']}", headers=LEAD)

    body = await ticket_sla(clocks, event.data.ticket_id)
    first = body["timers"]["first_response"]
    assert (first["policy_id"], body["priority"]) == (str(POLICY["urgent"]), "urgent")
    assert first["due_at"] == utc(CN.add_business_minutes(MONDAY_9, 60))
    classified = await events(clocks, event.data.ticket_id, TicketClassified)
    assert [(c["sla_policy_id"], c["first_response_due_at"]) for c in classified] == [
        (str(POLICY["urgent"]), first["due_at"])
    ]
    assert classified[0]["resolution_due_at"] == body["timers"]["resolution"]["due_at"]


async def test_answer_delivered_stops_first_response_as_met_and_pauses_resolution(
    clocks: ServiceHarness,
) -> None:
    now = datetime.now(UTC)
    event = created(now)
    await handle(clocks, event)
    await handle(clocks, delivered(event.data.ticket_id, now + timedelta(minutes=1)))
    timers = (await ticket_sla(clocks, event.data.ticket_id))["timers"]
    assert timers["first_response"]["state"] == "met"
    assert timers["first_response"]["stopped_by"] == "answered"
    assert timers["first_response"]["stopped_at"] == utc(now + timedelta(minutes=1))
    assert timers["first_response"]["remaining_business_minutes"] is None
    assert timers["resolution"]["state"] == "paused"
    assert timers["resolution"]["paused_at"] == utc(now + timedelta(minutes=1))


async def test_a_late_answer_is_a_breach(clocks: ServiceHarness) -> None:
    event = created(MONDAY_9)
    await handle(clocks, event)
    await handle(clocks, delivered(event.data.ticket_id, MONDAY_9 + timedelta(days=1, hours=1)))  # Tue 10:00
    first = (await ticket_sla(clocks, event.data.ticket_id))["timers"]["first_response"]
    assert first["due_at"] == utc(datetime(2026, 3, 3, 9, 30, tzinfo=SH))
    assert first["state"] == "breached"


async def test_customer_reply_resumes_resolution_with_the_time_it_had_left(clocks: ServiceHarness) -> None:
    event = created(MONDAY_9)
    ticket_id = event.data.ticket_id
    await handle(clocks, event)
    await handle(clocks, delivered(ticket_id, datetime(2026, 3, 2, 11, 0, tzinfo=SH)))
    await handle(clocks, reopened(ticket_id, datetime(2026, 3, 4, 9, 0, tzinfo=SH), TicketStatus.ANSWERED))
    resolution = (await ticket_sla(clocks, ticket_id))["timers"]["resolution"]
    # Due Wednesday 18:00 with 1230 business minutes left at the pause on Monday 11:00; resumed
    # Wednesday 09:00 → Wednesday 450 + Thursday 450 + Friday 330 = Friday 16:00.
    assert resolution["due_at"] == utc(datetime(2026, 3, 6, 16, 0, tzinfo=SH))
    assert resolution["paused_at"] is None
    assert resolution["started_at"] == utc(MONDAY_9)


async def test_paused_time_does_not_count_when_resolved_while_waiting(clocks: ServiceHarness) -> None:
    event = created(MONDAY_9)
    ticket_id = event.data.ticket_id
    await handle(clocks, event)
    await handle(clocks, delivered(ticket_id, datetime(2026, 3, 2, 11, 0, tzinfo=SH)))
    # Resolved a week later without the customer ever replying: the wait was the customer's.
    resolved_at = datetime(2026, 3, 9, 10, 0, tzinfo=SH)
    await handle(clocks, wrap(TicketResolved(ticket_id=ticket_id, resolved_at=resolved_at)))
    resolution = (await ticket_sla(clocks, ticket_id))["timers"]["resolution"]
    assert resolution["state"] == "met"
    assert resolution["stopped_by"] == "resolved"


async def test_resolved_then_reopened_restarts_resolution_from_the_reopen(clocks: ServiceHarness) -> None:
    event = created(MONDAY_9)
    ticket_id = event.data.ticket_id
    await handle(clocks, event)
    await handle(clocks, wrap(TicketResolved(ticket_id=ticket_id, resolved_at=MONDAY_9 + timedelta(hours=6))))
    timers = (await ticket_sla(clocks, ticket_id))["timers"]
    assert timers["resolution"]["state"] == timers["first_response"]["state"] == "met"
    assert timers["first_response"]["stopped_by"] == "resolved"

    reopen = datetime(2026, 3, 5, 9, 0, tzinfo=SH)  # Thursday
    await handle(clocks, reopened(ticket_id, reopen, TicketStatus.RESOLVED))
    timers = (await ticket_sla(clocks, ticket_id))["timers"]
    assert timers["resolution"]["started_at"] == utc(reopen)
    assert timers["resolution"]["due_at"] == utc(datetime(2026, 3, 9, 18, 0, tzinfo=SH))  # 3 days on
    assert timers["resolution"]["stopped_at"] is None
    assert timers["first_response"]["state"] == "met"  # a first response happens once


async def test_closing_stops_every_clock(clocks: ServiceHarness) -> None:
    now = datetime.now(UTC)
    event = created(now)
    await handle(clocks, event)
    closed = TicketClosed(
        ticket_id=event.data.ticket_id,
        reason=CloseReason.SPAM,
        previous_status=TicketStatus.NEW,
        closed_at=now,
    )
    await handle(clocks, wrap(closed))
    timers = (await ticket_sla(clocks, event.data.ticket_id))["timers"]
    assert {t["state"] for t in timers.values()} == {"cancelled"}
    assert {t["stopped_by"] for t in timers.values()} == {"closed"}
    assert await fire_due(clocks.uow, now=now + timedelta(days=30)) == (0, 0, 0)


async def test_warning_then_breach_each_fire_once(clocks: ServiceHarness) -> None:
    event = created(MONDAY_9, priority=Priority.URGENT)  # first response 60 min: warn 09:48, due 10:00
    ticket_id = event.data.ticket_id
    await handle(clocks, event)

    assert await fire_due(clocks.uow, now=datetime(2026, 3, 2, 9, 47, tzinfo=SH)) == (0, 0, 0)
    assert await fire_due(clocks.uow, now=datetime(2026, 3, 2, 9, 50, tzinfo=SH)) == (1, 1, 0)
    assert await fire_due(clocks.uow, now=datetime(2026, 3, 2, 9, 55, tzinfo=SH)) == (0, 0, 0)
    (warning,) = await events(clocks, ticket_id, SlaWarning)
    assert warning["target"] == "first_response"
    assert warning["share"] == 0.8
    assert warning["due_at"] == utc(datetime(2026, 3, 2, 10, 0, tzinfo=SH))

    # Due at 10:00, breached once the grace for answers still on their way is up (5 s).
    assert await fire_due(clocks.uow, now=datetime(2026, 3, 2, 10, 0, tzinfo=SH)) == (0, 0, 0)
    assert await fire_due(clocks.uow, now=datetime(2026, 3, 2, 10, 0, 5, tzinfo=SH)) == (1, 0, 1)
    assert await fire_due(clocks.uow, now=datetime(2026, 3, 2, 10, 30, tzinfo=SH)) == (0, 0, 0)
    assert [e["type"] for e in await events(clocks, ticket_id, SlaWarning, SlaBreached)] == [
        SlaWarning.cloudevent_type(),
        SlaBreached.cloudevent_type(),
    ]
    first = (await ticket_sla(clocks, ticket_id))["timers"]["first_response"]
    assert first["state"] == "breached" and first["escalated"] is True
    assert first["breached_at"] == utc(datetime(2026, 3, 2, 10, 0, 5, tzinfo=SH))


async def test_due_breaches_fire_exactly_once_under_concurrent_passes(clocks: ServiceHarness) -> None:
    tickets = [created(MONDAY_9) for _ in range(25)]
    for event in tickets:
        await handle(clocks, event)
    now = datetime(2026, 3, 20, 12, tzinfo=SH)  # long after both clocks of every ticket

    passes = await asyncio.gather(*(fire_due(clocks.uow, now=now, batch=100) for _ in range(2)))
    while (more := await fire_due(clocks.uow, now=now, batch=100)).claimed:
        passes.append(more)

    assert sum(p.breaches for p in passes) == 2 * len(tickets)
    assert sum(p.warnings for p in passes) == 0  # found past due: the breach says it all
    for event in tickets:
        fired = Counter(
            e["type"] for e in await events(clocks, event.data.ticket_id, SlaBreached, TicketEscalated)
        )
        assert fired == {SlaBreached.cloudevent_type(): 2, TicketEscalated.cloudevent_type(): 2}


async def test_each_breach_of_a_pass_starts_a_trace_of_its_own(clocks: ServiceHarness) -> None:
    """A pass runs outside any request or event: each clock it breaches is a new trace, carried by
    both the breach's `sla.breached` and its `ticket.escalated` (envelope and record header)."""
    tickets = [created(MONDAY_9) for _ in range(2)]
    for event in tickets:
        await handle(clocks, event)

    # Long after both clocks of both tickets: four breaches in one pass.
    assert await fire_due(clocks.uow, now=datetime(2026, 3, 20, 12, tzinfo=SH)) == (2, 0, 4)

    trace_ids = []
    names = [SlaBreached.cloudevent_type(), TicketEscalated.cloudevent_type()]
    for event in tickets:
        async with clocks.uow() as uow:
            rows = (
                await uow.session.execute(
                    select(OUTBOX.c.payload, OUTBOX.c.headers)
                    .where(OUTBOX.c.key == str(event.data.ticket_id), OUTBOX.c.event_type.in_(names))
                    .order_by(OUTBOX.c.seq)
                )
            ).all()
        assert [r.payload["type"] for r in rows] == names * 2
        for breached, escalated in (rows[0:2], rows[2:4]):
            traceparent = breached.payload["traceparent"]
            assert isinstance(traceparent, str) and TRACEPARENT.fullmatch(traceparent), traceparent
            assert breached.headers["traceparent"] == traceparent
            assert escalated.payload["traceparent"] == escalated.headers["traceparent"] == traceparent
            trace_ids.append(traceparent.split("-")[1])
    assert len(set(trace_ids)) == 4, "breaches fired by one pass share a trace"


async def test_breach_escalates_to_the_team_lead_with_raised_priority(clocks: ServiceHarness) -> None:
    lead_id = uuid.uuid4()
    team = await clocks.client.post(
        "/v1/teams", json={"name": f"理賠組 {lead_id}", "lead_id": str(lead_id)}, headers=LEAD
    )
    agent = await clocks.client.post(
        "/v1/agents",
        json={"name": "王專員", "team_id": team.json()["id"], "roles": ["specialist"], "max_concurrent": 50},
        headers=LEAD,
    )
    assert agent.status_code == 201, agent.text
    async with clocks.uow() as uow:  # this agent alone takes the ticket
        await uow.session.execute(
            update(Agent).where(Agent.id != uuid.UUID(agent.json()["id"])).values(presence="offline")
        )
        await uow.commit()
    event = created(MONDAY_9)
    ticket_id = event.data.ticket_id
    await handle(clocks, event)

    # First response (480 min) was due Tuesday 09:30; resolution (3 days) is due Wednesday 18:00.
    assert await fire_due(clocks.uow, now=datetime(2026, 3, 3, 9, 45, tzinfo=SH)) == (1, 0, 1)
    breached, escalated = await events(clocks, ticket_id, SlaBreached, TicketEscalated)
    assert breached["target"] == "first_response" and breached["priority"] == "normal"
    assert breached["agent_id"] == agent.json()["id"] and breached["team_id"] == team.json()["id"]
    assert escalated["reason"] == "sla_breach" and escalated["sla_target"] == "first_response"
    assert (escalated["previous_priority"], escalated["priority"]) == ("normal", "high")
    assert escalated["lead_id"] == str(lead_id)
    assert escalated["agent_id"] == agent.json()["id"] and escalated["team_id"] == team.json()["id"]
    assert (await ticket_sla(clocks, ticket_id))["priority"] == "high"

    assert await fire_due(clocks.uow, now=datetime(2026, 3, 5, 9, 0, tzinfo=SH)) == (1, 0, 1)
    second = (await events(clocks, ticket_id, TicketEscalated))[-1]
    assert (second["sla_target"], second["previous_priority"], second["priority"]) == (
        "resolution",
        "high",
        "urgent",
    )
    body = await ticket_sla(clocks, ticket_id)
    assert body["priority"] == "urgent"
    assert {t["state"] for t in body["timers"].values()} == {"breached"}


async def test_a_breach_of_a_ticket_held_by_a_lead_outside_any_team_names_the_team_they_lead(
    clocks: ServiceHarness,
) -> None:
    # Difficult tickets go to leads, and a lead need not be a member of the team they lead.
    lead = await clocks.client.post(
        "/v1/agents", json={"name": "陳組長", "roles": ["lead"], "max_concurrent": 50}, headers=LEAD
    )
    assert lead.status_code == 201, lead.text
    lead_id = lead.json()["id"]
    team = await clocks.client.post(
        "/v1/teams", json={"name": f"核保組 {lead_id}", "lead_id": lead_id}, headers=LEAD
    )
    assert team.status_code == 201, team.text
    event = created(MONDAY_9)
    ticket_id = event.data.ticket_id
    await handle(clocks, event)
    async with clocks.uow() as uow:  # held by the lead, as a difficult ticket is
        await uow.session.execute(
            update(Assignment).where(Assignment.ticket_id == ticket_id).values(agent_id=uuid.UUID(lead_id))
        )
        await uow.commit()

    assert await fire_due(clocks.uow, now=datetime(2026, 3, 3, 9, 45, tzinfo=SH)) == (1, 0, 1)
    breached, escalated = await events(clocks, ticket_id, SlaBreached, TicketEscalated)
    assert (breached["agent_id"], breached["team_id"]) == (lead_id, team.json()["id"])
    assert (escalated["team_id"], escalated["lead_id"]) == (team.json()["id"], lead_id)


async def test_breach_moves_a_queued_ticket_up_the_queue(clocks: ServiceHarness) -> None:
    async with clocks.uow() as uow:  # nobody free: the ticket waits in the queue
        await uow.session.execute(update(Agent).values(presence="offline"))
        await uow.commit()
    event = created(MONDAY_9, priority=Priority.LOW)  # first response 960 min: due Wednesday 10:00
    await handle(clocks, event)

    assert await fire_due(clocks.uow, now=datetime(2026, 3, 4, 10, 0, 5, tzinfo=SH)) == (1, 0, 1)
    async with clocks.uow() as uow:
        entry = await uow.session.get(QueueEntry, event.data.ticket_id)
        assert entry is not None
        assert (entry.priority, entry.priority_rank) == ("normal", Priority.NORMAL.rank)
    (escalated,) = await events(clocks, event.data.ticket_id, TicketEscalated)
    assert escalated["lead_id"] is None and escalated["agent_id"] is None


async def test_the_running_service_fires_due_clocks_by_itself(routing: ServiceHarness) -> None:
    """The worker wired into the app (polling every second) fires without anyone calling it."""
    event = created(MONDAY_9)  # both clocks long past due
    ticket_id = event.data.ticket_id
    await handle(routing, event)
    give_up = time.monotonic() + 15
    while len(await events(routing, ticket_id, SlaBreached)) < 2:
        assert time.monotonic() < give_up, "the SLA worker did not fire the due clocks"
        await asyncio.sleep(0.1)
    assert len(await events(routing, ticket_id, TicketEscalated)) == 2
    closed = TicketClosed(
        ticket_id=ticket_id,
        reason=CloseReason.MANUAL,
        previous_status=TicketStatus.NEW,
        closed_at=datetime.now(UTC),
    )
    await handle(routing, wrap(closed))  # give back whatever it holds in the shared routing instance


class WatchedEvent(asyncio.Event):
    """An event that tells when someone starts waiting for it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = asyncio.Event()

    async def wait(self) -> Literal[True]:
        self.waited.set()
        return await super().wait()


async def test_after_a_start_clocks_fire_only_once_the_waiting_events_are_handled(
    clocks: ServiceHarness,
) -> None:
    # Answers delivered while routing was away wait in Kafka: their clocks must not breach first.
    event = created(MONDAY_9)
    await handle(clocks, event)
    caught_up = WatchedEvent()
    units_of_work = 0

    def uow() -> Any:  # the worker's passes, counted
        nonlocal units_of_work
        units_of_work += 1
        return clocks.uow()

    settings = RoutingSettings(
        database_url="postgresql://unused/unused", sla_poll_seconds=0.05, sla_start_wait_seconds=60
    )
    runtime = SimpleNamespace(settings=settings, uow=uow, consumer=SimpleNamespace(caught_up=caught_up))

    async def breached() -> bool:
        async with clocks.uow() as uow:
            fired = await uow.session.scalars(
                select(SlaTimer.breached_at).where(SlaTimer.ticket_id == event.data.ticket_id)
            )
            return any(at is not None for at in fired)

    worker = asyncio.create_task(sla_timer_worker(cast(Any, runtime)))
    try:
        await asyncio.wait_for(caught_up.waited.wait(), timeout=10)  # the worker waits for the consumer …
        assert units_of_work == 0  # … having made no pass before it
        assert not await breached()  # long past due, but the consumer is still catching up
        caught_up.set()
        deadline = time.monotonic() + 10
        while not await breached():
            assert time.monotonic() < deadline, "the clock never fired"
            await asyncio.sleep(0.05)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
