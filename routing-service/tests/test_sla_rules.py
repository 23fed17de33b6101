"""SLA rules that keep calendars cheap and clocks honest: bounded calendars, refused policies that
can never be due, a follow-up answer resuming a paused clock, the breach grace, portable zones.

The tests that touch the database run on a routing instance of their own (its SLA worker sleeps,
so the tests fire clocks with the time they choose); each starts from an empty `sla_timers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from routing_factories import consume, delivered, events, ticket_sla, without_sla_worker
from routing_factories import ticket_created_at as created
from sqlalchemy import delete, update

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import (
    EventEnvelope,
    Priority,
    SlaBreached,
    SlaWarning,
    TicketEscalated,
    TicketQueued,
    TicketReopened,
    TicketResolved,
    TicketStatus,
)
from helpdesk_shared.contracts.review import AnswerSubmitted
from routing_service.app import create_app
from routing_service.domain.business_time import BusinessCalendar, InvalidCalendarError, cn_default
from routing_service.domain.sla import timer_state
from routing_service.models import Calendar, SlaPolicy, SlaTimer
from routing_service.settings import RoutingSettings
from routing_service.sla_repository import SLA_CONFIG, to_domain
from routing_service.sla_timers import fire_due, sla_timer_worker

SH = ZoneInfo("Asia/Shanghai")
LEAD = auth_headers("lead")
AGENT = auth_headers("agent")
PROBLEM = "application/problem+json"
CN = cn_default()
MONDAY_9 = datetime(2026, 3, 2, 9, 0, tzinfo=SH)  # an ordinary working Monday
OFFICE = [["09:00", "12:00"], ["13:30", "18:00"]]
GRACE = timedelta(seconds=5)  # ROUTING_SLA_BREACH_GRACE_SECONDS by default


@pytest.fixture(scope="module")
async def rules(make_service: Any) -> AsyncIterator[ServiceHarness]:
    async with make_service(
        "routing",
        RoutingSettings,
        create_app,
        label="slarules",
        sla_poll_seconds=3600,
        queue_sweep_seconds=3600,
    ) as harness:
        await without_sla_worker(harness)
        yield harness


@pytest.fixture
async def clocks(rules: ServiceHarness) -> ServiceHarness:
    async with rules.uow() as uow:
        await uow.session.execute(delete(SlaTimer))
        await uow.commit()
    return rules


def wrap(payload: Any, source: str = "/helpdesk/intake") -> EventEnvelope[Any]:
    return EventEnvelope.wrap(payload, source=source, subject=str(payload.ticket_id))


def submitted(ticket_id: uuid.UUID, at: datetime) -> EventEnvelope[Any]:
    payload = AnswerSubmitted(
        ticket_id=ticket_id, answer_id=uuid.uuid4(), answer_version=2, author_id=uuid.uuid4(), submitted_at=at
    )
    return wrap(payload, source="/helpdesk/review")


def reopened(ticket_id: uuid.UUID, at: datetime, previous: TicketStatus) -> EventEnvelope[Any]:
    return wrap(TicketReopened(ticket_id=ticket_id, previous_status=previous, reopen_count=1, reopened_at=at))


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://helpdesk.dev/problems/{slug}"
    return body


def utc(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def every(count: int, minutes: int) -> list[tuple[time, time]]:
    """``count`` intervals of ``minutes`` each, one per hour from midnight."""
    return [(time(h), time(h, minutes) if minutes < 60 else time(h + 1)) for h in range(count)]


# ---- 1. calendars are bounded: intervals per weekday, interval length ------------------------------


def test_a_weekday_holds_at_most_twelve_intervals() -> None:
    BusinessCalendar(id="twelve", time_zone="Asia/Shanghai", weekly_hours={0: every(12, 15)})
    with pytest.raises(InvalidCalendarError, match="at most 12"):
        BusinessCalendar(id="thirteen", time_zone="Asia/Shanghai", weekly_hours={0: every(13, 15)})


def test_an_interval_lasts_at_least_fifteen_minutes() -> None:
    BusinessCalendar(id="quarter", time_zone="UTC", weekly_hours={0: [(time(23, 45), time(0))]})
    with pytest.raises(InvalidCalendarError, match="at least 15 minutes"):
        BusinessCalendar(id="short", time_zone="UTC", weekly_hours={0: [(time(9), time(9, 14))]})


def test_a_stored_calendar_past_the_limits_does_not_build() -> None:
    row = Calendar(
        id="stored-many",
        name="stored before the limits",
        time_zone="Asia/Shanghai",
        weekly_hours={"0": [[f"{h:02d}:00", f"{h:02d}:30"] for h in range(13)]},
        holidays=[],
        workdays=[],
        holiday_source=None,
    )
    with pytest.raises(InvalidCalendarError, match="at most 12"):
        to_domain(row)


async def test_the_api_refuses_more_than_twelve_intervals_naming_the_field(rules: ServiceHarness) -> None:
    many = [[f"{h:02d}:00", f"{h:02d}:30"] for h in range(13)]
    body = {"id": f"many-{uuid.uuid4().hex[:8]}", "name": "many", "time_zone": "Asia/Shanghai"}
    response = await rules.client.post(
        "/v1/sla/calendars", json=body | {"weekly_hours": {"0": OFFICE, "2": many}}, headers=LEAD
    )
    problem = assert_problem(response, 422, "validation-error")
    assert [e["field"] for e in problem["errors"]] == ["body.weekly_hours.2"]


async def test_the_api_refuses_an_interval_shorter_than_fifteen_minutes(rules: ServiceHarness) -> None:
    body = {"id": f"short-{uuid.uuid4().hex[:8]}", "name": "short", "time_zone": "Asia/Shanghai"}
    response = await rules.client.post(
        "/v1/sla/calendars", json=body | {"weekly_hours": {"0": [["09:00", "09:01"]]}}, headers=LEAD
    )
    assert "at least 15 minutes" in assert_problem(response, 422, "invalid-calendar")["detail"]


# ---- 2. a follow-up answer resumes a paused resolution clock ---------------------------------------


async def test_a_follow_up_answer_resumes_the_paused_resolution_clock(clocks: ServiceHarness) -> None:
    event = created(MONDAY_9)  # default policy: resolution 3 working days (1350 min), warning at 80 %
    ticket_id = event.data.ticket_id
    assert await consume(clocks, event)
    assert await consume(clocks, delivered(ticket_id, datetime(2026, 3, 2, 11, 0, tzinfo=SH)))
    assert (await ticket_sla(clocks, ticket_id))["timers"]["resolution"]["state"] == "paused"

    # The agent sends a follow-up without the customer replying (ANSWERED → AWAITING_REVIEW).
    tuesday_9 = datetime(2026, 3, 3, 9, 0, tzinfo=SH)
    assert await consume(clocks, submitted(ticket_id, tuesday_9))
    resolution = (await ticket_sla(clocks, ticket_id))["timers"]["resolution"]
    assert resolution["paused_at"] is None and resolution["stopped_at"] is None  # running again
    # 1230 of 1350 minutes were left at the pause (due Thursday 16:00), 960 until the warning.
    due, warn = CN.add_business_minutes(tuesday_9, 1230), CN.add_business_minutes(tuesday_9, 960)
    assert (resolution["due_at"], resolution["warn_at"]) == (utc(due), utc(warn))

    assert await fire_due(clocks.uow, now=warn - timedelta(seconds=1)) == (0, 0, 0)
    assert await fire_due(clocks.uow, now=warn) == (1, 1, 0)
    assert await fire_due(clocks.uow, now=due + GRACE) == (1, 0, 1)
    (warning,) = await events(clocks, ticket_id, SlaWarning)
    (breach,) = await events(clocks, ticket_id, SlaBreached)
    assert warning["target"] == breach["target"] == "resolution"
    assert breach["due_at"] == utc(due)


async def test_the_next_delivery_pauses_the_resumed_clock_again(clocks: ServiceHarness) -> None:
    event = created(MONDAY_9)
    ticket_id = event.data.ticket_id
    await consume(clocks, event)
    await consume(clocks, delivered(ticket_id, datetime(2026, 3, 2, 11, 0, tzinfo=SH)))
    await consume(clocks, submitted(ticket_id, datetime(2026, 3, 3, 9, 0, tzinfo=SH)))
    again = datetime(2026, 3, 3, 10, 0, tzinfo=SH)
    await consume(clocks, delivered(ticket_id, again))
    resolution = (await ticket_sla(clocks, ticket_id))["timers"]["resolution"]
    assert (resolution["state"], resolution["paused_at"]) == ("paused", utc(again))
    # 1230 minutes were left on Tuesday 09:00, one hour ran until the second delivery.
    assert resolution["remaining_business_minutes"] == 1230 - 60


async def test_a_submission_from_before_the_pause_does_not_resume_it(clocks: ServiceHarness) -> None:
    event = created(MONDAY_9)
    ticket_id = event.data.ticket_id
    await consume(clocks, event)
    paused = datetime(2026, 3, 2, 11, 0, tzinfo=SH)
    await consume(clocks, delivered(ticket_id, paused))
    await consume(clocks, submitted(ticket_id, paused - timedelta(minutes=30)))  # the answer just delivered
    resolution = (await ticket_sla(clocks, ticket_id))["timers"]["resolution"]
    assert (resolution["state"], resolution["paused_at"]) == ("paused", utc(paused))


# ---- 3. policies that can never be due are refused; a failing resume does not stop the reopen -----


def saturday_calendar(calendar_id: str) -> dict[str, Any]:
    return {
        "id": calendar_id,
        "name": "Saturdays only",
        "time_zone": "UTC",
        "weekly_hours": {"5": [["10:00", "14:00"]]},
    }


async def test_a_policy_that_can_never_be_due_is_refused(rules: ServiceHarness) -> None:
    calendar_id = f"sat-{uuid.uuid4().hex[:8]}"
    # Four hours a week, and from eight weeks on every Saturday is a holiday for over three years.
    first = date.today() + timedelta(weeks=8)
    first += timedelta(days=(5 - first.weekday()) % 7)
    holidays = [str(first + timedelta(weeks=w)) for w in range(170)]
    definition = saturday_calendar(calendar_id) | {"holidays": holidays}
    response = await rules.client.post("/v1/sla/calendars", json=definition, headers=LEAD)
    assert response.status_code == 201, response.text
    body = {
        "name": f"never-{calendar_id}",
        "precedence": 9000,
        "first_response_minutes": 525_600,
        "resolution_working_days": 1,
        "calendar_id": calendar_id,
    }
    problem = assert_problem(
        await rules.client.post("/v1/sla/policies", json=body, headers=LEAD), 422, "invalid-business-time"
    )
    assert "first_response_minutes" in problem["detail"]
    listed = await rules.client.get("/v1/sla/policies", headers=AGENT)
    assert body["name"] not in {p["name"] for p in listed.json()}

    fine = await rules.client.post(
        "/v1/sla/policies", json=body | {"first_response_minutes": 240}, headers=LEAD
    )
    assert fine.status_code == 201, fine.text
    updated = await rules.client.put(
        f"/v1/sla/policies/{fine.json()['id']}",
        json=body | {"first_response_minutes": 240, "resolution_working_days": 365},
        headers=LEAD,
    )
    assert "resolution_working_days" in assert_problem(updated, 422, "invalid-business-time")["detail"]


async def test_a_calendar_edit_that_leaves_a_policy_without_due_times_is_refused(
    rules: ServiceHarness,
) -> None:
    calendar_id = f"office-{uuid.uuid4().hex[:8]}"
    definition = {"name": "office", "time_zone": "UTC", "weekly_hours": {str(d): OFFICE for d in range(5)}}
    created_calendar = await rules.client.post(
        "/v1/sla/calendars", json={"id": calendar_id, **definition}, headers=LEAD
    )
    assert created_calendar.status_code == 201, created_calendar.text
    policy = await rules.client.post(
        "/v1/sla/policies",
        json={
            "name": f"long-{calendar_id}",
            "precedence": 9000,
            "first_response_minutes": 525_600,  # ~3.2 years of office days: fine
            "resolution_working_days": 5,
            "calendar_id": calendar_id,
            "active": False,
        },
        headers=LEAD,
    )
    assert policy.status_code == 201, policy.text

    saturdays = {k: v for k, v in saturday_calendar(calendar_id).items() if k != "id"}
    response = await rules.client.put(f"/v1/sla/calendars/{calendar_id}", json=saturdays, headers=LEAD)
    assert f"long-{calendar_id}" in assert_problem(response, 422, "invalid-business-time")["detail"]
    kept = await rules.client.get(f"/v1/sla/calendars/{calendar_id}", headers=AGENT)
    assert kept.json()["weekly_hours"] == {str(d): OFFICE for d in range(5)}


@pytest.mark.parametrize("before_reopen", ["paused", "resolved"])
async def test_a_reopen_whose_clock_cannot_be_computed_still_reassigns_the_ticket(
    clocks: ServiceHarness, before_reopen: str
) -> None:
    # Saturdays from 2031 on are all holidays for more than three years: no due time from then.
    calendar_id = f"sat-{uuid.uuid4().hex[:8]}"
    holidays = [str(date(2031, 1, 4) + timedelta(weeks=w)) for w in range(170)]
    response = await clocks.client.post(
        "/v1/sla/calendars", json=saturday_calendar(calendar_id) | {"holidays": holidays}, headers=LEAD
    )
    assert response.status_code == 201, response.text
    policy = await clocks.client.post(
        "/v1/sla/policies",
        json={
            "name": f"saturday-{calendar_id}",
            "precedence": 0,
            "kind": "service_request",
            "channel": "forum",
            "first_response_minutes": 60,
            "resolution_working_days": 1,
            "calendar_id": calendar_id,
        },
        headers=LEAD,
    )
    assert policy.status_code == 201, policy.text
    try:
        saturday_10 = datetime(2030, 12, 28, 10, tzinfo=UTC)
        event = created(saturday_10, kind="service_request", channel="forum")
        ticket_id = event.data.ticket_id
        assert await consume(clocks, event)
        if before_reopen == "paused":
            await consume(clocks, delivered(ticket_id, saturday_10 + timedelta(minutes=30)))
        else:
            resolved_at = saturday_10 + timedelta(hours=2)
            await consume(clocks, wrap(TicketResolved(ticket_id=ticket_id, resolved_at=resolved_at)))
        before = (await ticket_sla(clocks, ticket_id))["timers"]["resolution"]

        previous = TicketStatus.ANSWERED if before_reopen == "paused" else TicketStatus.RESOLVED
        assert await consume(clocks, reopened(ticket_id, datetime(2031, 1, 2, tzinfo=UTC), previous))
        assert len(await events(clocks, ticket_id, TicketQueued)) == 2  # routed again after the reopen
        assert (await ticket_sla(clocks, ticket_id))["timers"]["resolution"] == before
    finally:
        await clocks.client.put(
            f"/v1/sla/policies/{policy.json()['id']}",
            json={k: v for k, v in policy.json().items() if k in _POLICY_FIELDS} | {"active": False},
            headers=LEAD,
        )


_POLICY_FIELDS = {
    "name",
    "kind",
    "priority",
    "difficult",
    "channel",
    "precedence",
    "first_response_minutes",
    "resolution_working_days",
    "warning_share",
    "pause_when_waiting_on_customer",
    "calendar_id",
    "active",
}


# ---- 4. breaches wait out a grace; a clock stopped in time is met ----------------------------------


def test_the_breach_grace_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RoutingSettings(database_url="postgresql://unused/unused").sla_breach_grace_seconds == 5.0
    monkeypatch.setenv("ROUTING_SLA_BREACH_GRACE_SECONDS", "0")
    assert RoutingSettings(database_url="postgresql://unused/unused").sla_breach_grace_seconds == 0
    monkeypatch.setenv("ROUTING_SLA_BREACH_GRACE_SECONDS", "-1")
    with pytest.raises(ValidationError):
        RoutingSettings(database_url="postgresql://unused/unused")


async def test_a_breach_fires_once_the_grace_is_over(clocks: ServiceHarness) -> None:
    event = created(MONDAY_9, priority=Priority.URGENT)  # first response 60 min: warn 09:48, due 10:00
    await consume(clocks, event)
    due = datetime(2026, 3, 2, 10, 0, tzinfo=SH)
    assert await fire_due(clocks.uow, now=due + GRACE - timedelta(milliseconds=1)) == (1, 1, 0)  # warns only
    assert await fire_due(clocks.uow, now=due + GRACE) == (1, 0, 1)
    (breach,) = await events(clocks, event.data.ticket_id, SlaBreached)
    assert datetime.fromisoformat(breach["breached_at"]) == due + GRACE


async def test_an_answer_delivered_just_before_due_and_consumed_just_after_is_no_breach(
    clocks: ServiceHarness,
) -> None:
    event = created(MONDAY_9, priority=Priority.URGENT)
    ticket_id = event.data.ticket_id
    await consume(clocks, event)
    due = datetime(2026, 3, 2, 10, 0, tzinfo=SH)
    assert await fire_due(clocks.uow, now=datetime(2026, 3, 2, 9, 50, tzinfo=SH)) == (1, 1, 0)

    assert await fire_due(clocks.uow, now=due + timedelta(seconds=1)) == (0, 0, 0)
    await consume(clocks, delivered(ticket_id, due - timedelta(milliseconds=100)))
    assert await fire_due(clocks.uow, now=due + timedelta(seconds=10)) == (0, 0, 0)
    assert await events(clocks, ticket_id, SlaBreached, TicketEscalated) == []
    body = await ticket_sla(clocks, ticket_id)
    assert body["timers"]["first_response"]["state"] == "met"
    assert body["priority"] == "urgent"


async def test_a_clock_stopped_before_due_is_met_even_with_a_breach_recorded(clocks: ServiceHarness) -> None:
    event = created(MONDAY_9, priority=Priority.URGENT)
    ticket_id = event.data.ticket_id
    await consume(clocks, event)
    due = datetime(2026, 3, 2, 10, 0, tzinfo=SH)
    # Fired without a grace (a worker configured with 0 s, or one from before the grace existed).
    assert await fire_due(clocks.uow, now=due + timedelta(seconds=1), grace=timedelta(0)) == (1, 0, 1)
    await consume(clocks, delivered(ticket_id, due - timedelta(milliseconds=100)))
    first = (await ticket_sla(clocks, ticket_id))["timers"]["first_response"]
    assert first["breached_at"] == utc(due + timedelta(seconds=1))
    assert first["state"] == "met"


@pytest.mark.parametrize(
    ("stopped_at", "stopped_by", "state"),
    [
        (timedelta(0), "answered", "met"),
        (-timedelta(seconds=1), "resolved", "met"),
        (-timedelta(seconds=1), "closed", "cancelled"),
        (timedelta(microseconds=1), "answered", "breached"),
    ],
)
def test_timer_state_of_a_stopped_clock_with_a_breach_recorded(
    stopped_at: timedelta, stopped_by: str, state: str
) -> None:
    due = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    got = timer_state(
        now=due + timedelta(hours=1),
        due_at=due,
        paused_at=None,
        stopped_at=due + stopped_at,
        stopped_by=stopped_by,
        breached_at=due + timedelta(seconds=1),
    )
    assert got == state


async def test_the_worker_waits_the_configured_grace(clocks: ServiceHarness) -> None:
    event = created(datetime.now(UTC))
    ticket_id = event.data.ticket_id
    await consume(clocks, event)
    now = datetime.now(UTC)
    async with clocks.uow() as uow:  # first response due 10 s ago, its warning 20 s ago
        await uow.session.execute(
            update(SlaTimer)
            .where(SlaTimer.ticket_id == ticket_id, SlaTimer.target == "first_response")
            .values(due_at=now - timedelta(seconds=10), warn_at=now - timedelta(seconds=20))
        )
        await uow.commit()

    async def run_worker(grace_seconds: float) -> None:
        settings = RoutingSettings(
            database_url="postgresql://unused/unused",
            sla_poll_seconds=0.05,
            sla_breach_grace_seconds=grace_seconds,
        )
        runtime = SimpleNamespace(settings=settings, uow=clocks.uow, consumer=None)
        worker = asyncio.create_task(sla_timer_worker(cast(Any, runtime)))
        try:
            await asyncio.sleep(0.5)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    await run_worker(60)
    async with clocks.uow() as uow:
        timer = await uow.session.get_one(SlaTimer, (ticket_id, "first_response"))
        assert timer.warned_at is not None and timer.breached_at is None
    await run_worker(0)
    assert len(await events(clocks, ticket_id, SlaBreached)) == 1


# ---- 5. zone names that mean the same on every host; one broken calendar breaks nothing else -------


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "Factory", "right/UTC", "posix/Asia/Shanghai"])
def test_host_dependent_zone_names_are_refused(zone: str) -> None:
    with pytest.raises(InvalidCalendarError, match="time zone"):
        BusinessCalendar(id="host", time_zone=zone, weekly_hours={0: [(time(9), time(17))]})


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai", "America/New_York", "Etc/GMT-8"])
def test_iana_zone_names_are_accepted(zone: str) -> None:
    BusinessCalendar(id="iana", time_zone=zone, weekly_hours={0: [(time(9), time(17))]})


async def test_the_api_refuses_a_host_dependent_zone(rules: ServiceHarness) -> None:
    body = {"id": f"local-{uuid.uuid4().hex[:8]}", "name": "local", "time_zone": "localtime"}
    response = await rules.client.post(
        "/v1/sla/calendars", json=body | {"weekly_hours": {"0": OFFICE}}, headers=LEAD
    )
    assert "localtime" in assert_problem(response, 422, "invalid-calendar")["detail"]


@pytest.mark.parametrize(
    "stored",
    [
        {"time_zone": "Asia/Shanghai", "weekly_hours": {"0": [["12:00", "09:00"]]}},  # never valid
        {"time_zone": "localtime", "weekly_hours": {"0": OFFICE}},  # valid before zones were checked
    ],
    ids=["inconsistent", "host-zone"],
)
async def test_an_unbuildable_stored_calendar_is_skipped(
    clocks: ServiceHarness, stored: dict[str, Any]
) -> None:
    calendar_id = f"broken-{uuid.uuid4().hex[:8]}"
    policy_id = uuid.uuid4()
    now = datetime.now(UTC)
    async with clocks.uow() as uow:
        uow.session.add(
            Calendar(id=calendar_id, name="broken", holidays=[], workdays=[], holiday_source=None, **stored)
        )
        await uow.session.flush()
        uow.session.add(
            SlaPolicy(
                id=policy_id,
                name=f"on-{calendar_id}",
                kind="service_request",
                channel="phone",
                precedence=0,
                first_response_minutes=60,
                resolution_working_days=1,
                warning_share=0.8,
                pause_when_waiting_on_customer=True,
                calendar_id=calendar_id,
                active=True,
                created_at=now,
                updated_at=now,
            )
        )
        await uow.commit()
        SLA_CONFIG.invalidate(uow.session)
    try:
        ordinary = created(MONDAY_9)
        assert await consume(clocks, ordinary)
        assert (await ticket_sla(clocks, ordinary.data.ticket_id))["timers"]["first_response"]["state"]

        on_broken = created(MONDAY_9, kind="service_request", channel="phone")
        assert await consume(clocks, on_broken)
        assert len(await events(clocks, on_broken.data.ticket_id, TicketQueued)) == 1  # routed, no clocks
        missing = await clocks.client.get(f"/v1/tickets/{on_broken.data.ticket_id}/sla", headers=AGENT)
        assert_problem(missing, 404, "ticket-sla-not-found")

        listed = await clocks.client.get("/v1/sla/calendars", headers=AGENT)
        assert listed.status_code == 200, listed.text
        assert calendar_id in {c["id"] for c in listed.json()}
        shown = await clocks.client.get(f"/v1/sla/calendars/{calendar_id}", headers=AGENT)
        assert shown.status_code == 200, shown.text
        preview = await clocks.client.get(
            f"/v1/sla/calendars/{calendar_id}/due",
            params={"start": "2026-03-02T09:00:00+08:00", "business_minutes": 60},
            headers=AGENT,
        )
        assert_problem(preview, 422, "invalid-calendar")
        policy = await clocks.client.post(
            "/v1/sla/policies",
            json={
                "name": f"another-{calendar_id}",
                "first_response_minutes": 60,
                "resolution_working_days": 1,
                "calendar_id": calendar_id,
            },
            headers=LEAD,
        )
        assert_problem(policy, 422, "invalid-calendar")
        fixed = await clocks.client.put(
            f"/v1/sla/calendars/{calendar_id}",
            json={"name": "fixed", "time_zone": "Asia/Shanghai", "weekly_hours": {"0": OFFICE}},
            headers=LEAD,
        )
        assert fixed.status_code == 200, fixed.text
    finally:
        async with clocks.uow() as uow:
            await uow.session.execute(delete(SlaTimer).where(SlaTimer.policy_id == policy_id))
            await uow.session.execute(delete(SlaPolicy).where(SlaPolicy.id == policy_id))
            await uow.session.execute(delete(Calendar).where(Calendar.id == calendar_id))
            await uow.commit()
            SLA_CONFIG.invalidate(uow.session)
