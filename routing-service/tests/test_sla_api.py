"""SLA API over a real database: calendars and their due-time preview, policies, problem+json errors."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from helpdesk_runtime.testing import ServiceHarness, auth_headers

ADMIN = auth_headers("admin")
LEAD = auth_headers("lead")
AGENT = auth_headers("agent")
PROBLEM = "application/problem+json"
OFFICE = [["09:00", "12:00"], ["13:30", "18:00"]]


async def due(routing: ServiceHarness, calendar: str = "cn-default", **params: Any) -> Any:
    return await routing.client.get(f"/v1/sla/calendars/{calendar}/due", params=params, headers=AGENT)


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://helpdesk.dev/problems/{slug}"
    assert body["status"] == status
    return body


async def test_preview_reproduces_the_national_day_example(routing: ServiceHarness) -> None:
    # Wednesday 16:00 + 240: two hours on 30 September, 1–7 October off, two hours on the 8th.
    response = await due(routing, start="2026-09-30T16:00:00+08:00", business_minutes=240)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "calendar_id": "cn-default",
        "start": "2026-09-30T08:00:00Z",
        "business_minutes": 240,
        "working_days": None,
        "due_at": "2026-10-08T03:00:00Z",
        "coverage": "statutory",
    }


async def test_preview_in_working_days_and_with_an_unencoded_plus(routing: ServiceHarness) -> None:
    # "+08:00" sent unencoded arrives as " 08:00"; one working day from Monday 09:00 ends at 18:00.
    response = await routing.client.get(
        "/v1/sla/calendars/cn-default/due?start=2026-03-02T09:00:00+08:00&working_days=1", headers=AGENT
    )
    assert response.status_code == 200, response.text
    assert response.json()["due_at"] == "2026-03-02T10:00:00Z"
    assert response.json()["working_days"] == 1


async def test_preview_past_the_published_schedules_says_estimated(routing: ServiceHarness) -> None:
    # 2031's schedule is not published: the law's days off only. Tuesday 30 September 17:00 + 120:
    # 1–3 October (Wednesday to Friday) and the weekend are off → Monday 6 October 10:00.
    response = await due(routing, start="2031-09-30T17:00:00+08:00", business_minutes=120)
    assert response.status_code == 200, response.text
    assert response.json()["due_at"] == "2031-10-06T02:00:00Z"
    assert response.json()["coverage"] == "estimated"


async def test_preview_past_any_holiday_data_says_fallback(routing: ServiceHarness) -> None:
    # 2100 is past the estimates too: weekends only. Friday 17:00 + 120 → Monday 10:00.
    response = await due(routing, start="2100-03-05T17:00:00+08:00", business_minutes=120)
    assert response.status_code == 200, response.text
    assert response.json()["due_at"] == "2100-03-08T02:00:00Z"
    assert response.json()["coverage"] == "fallback"


@pytest.mark.parametrize(
    ("params", "slug"),
    [
        ({"start": "2026-09-30T16:00:00", "business_minutes": 240}, "invalid-business-time"),
        ({"start": "yesterday", "business_minutes": 240}, "invalid-business-time"),
        ({"start": "2026-09-30T16:00:00+08:00", "business_minutes": -1}, "validation-error"),
        ({"start": "2026-09-30T16:00:00+08:00"}, "invalid-business-time"),
        (
            {"start": "2026-09-30T16:00:00+08:00", "business_minutes": 1, "working_days": 1},
            "invalid-business-time",
        ),
        ({"business_minutes": 10}, "validation-error"),
        # Python's dates end at years 1 and 9999: local time, the day before or UTC fall outside.
        ({"start": "9999-12-31T23:59:00Z", "business_minutes": 60}, "invalid-business-time"),
        ({"start": "0001-01-01T00:00:00Z", "business_minutes": 60}, "invalid-business-time"),
        ({"start": "0001-01-01T00:00:00+14:00", "working_days": 1}, "invalid-business-time"),
        # Longer than any policy's target (first response 525,600 minutes, resolution 365 days).
        ({"start": "2026-09-30T16:00:00+08:00", "business_minutes": 525_601}, "validation-error"),
        ({"start": "2026-09-30T16:00:00+08:00", "working_days": 366}, "validation-error"),
    ],
)
async def test_preview_refuses_bad_input(routing: ServiceHarness, params: dict[str, Any], slug: str) -> None:
    assert_problem(await due(routing, **params), 422, slug)


async def test_preview_of_an_unknown_calendar_is_404(routing: ServiceHarness) -> None:
    response = await due(routing, "no-such-calendar", start="2026-09-30T16:00:00+08:00", business_minutes=1)
    assert_problem(response, 404, "calendar-not-found")


async def test_the_seed_calendar_is_served(routing: ServiceHarness) -> None:
    response = await routing.client.get("/v1/sla/calendars/cn-default", headers=AGENT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["time_zone"] == "Asia/Shanghai"
    assert body["holiday_source"] == "CN"
    assert body["standard_daily_minutes"] == 450
    assert body["weekly_hours"] == {str(d): [["09:00", "12:00"], ["13:30", "18:00"]] for d in range(5)}
    assert body["source_years"][0] <= 2026 <= body["source_years"][1]


async def test_custom_calendar_crud(routing: ServiceHarness) -> None:
    calendar_id = f"hk-{uuid.uuid4().hex[:8]}"
    definition = {
        "name": "Hong Kong office",
        "time_zone": "Asia/Hong_Kong",
        "weekly_hours": {**{str(d): OFFICE for d in range(5)}, "5": [["20:00", "00:00"]]},
        "holidays": ["2026-03-03"],
    }
    created = await routing.client.post(
        "/v1/sla/calendars", json={"id": calendar_id, **definition}, headers=LEAD
    )
    assert created.status_code == 201, created.text
    assert created.json()["holiday_source"] is None
    assert created.json()["weekly_hours"]["5"] == [["20:00", "00:00"]]  # until midnight
    # Saturday 23:00 + 120: the hour to midnight, then Monday 09:00–10:00.
    saturday = await due(routing, calendar_id, start="2026-03-07T23:00:00+08:00", business_minutes=120)
    assert saturday.json()["due_at"] == "2026-03-09T02:00:00Z"
    duplicate = await routing.client.post(
        "/v1/sla/calendars", json={"id": calendar_id, **definition}, headers=LEAD
    )
    assert_problem(duplicate, 409, "calendar-exists")

    # Monday 17:00 + 120: one hour on Monday, Tuesday 3 March is a holiday, one hour on Wednesday.
    preview = await due(routing, calendar_id, start="2026-03-02T17:00:00+08:00", business_minutes=120)
    assert preview.json()["due_at"] == "2026-03-04T02:00:00Z"
    assert preview.json()["coverage"] == "none"

    changed = await routing.client.put(
        f"/v1/sla/calendars/{calendar_id}", json={**definition, "holidays": []}, headers=ADMIN
    )
    assert changed.status_code == 200, changed.text
    preview = await due(routing, calendar_id, start="2026-03-02T17:00:00+08:00", business_minutes=120)
    assert preview.json()["due_at"] == "2026-03-03T02:00:00Z"

    listed = await routing.client.get("/v1/sla/calendars", headers=AGENT)
    assert {c["id"] for c in listed.json()} >= {"cn-default", calendar_id}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weekly_hours": {"0": [["09:00", "12:00"], ["11:00", "13:00"]]}}, "overlap"),
        ({"weekly_hours": {"0": [["18:00", "09:00"]]}}, "must start before it ends"),
        ({"weekly_hours": {}}, "no working intervals"),
        ({"time_zone": "Mars/Olympus_Mons"}, "unknown time zone"),
        ({"holidays": ["2026-03-07"], "workdays": ["2026-03-07"]}, "both holidays and workdays"),
    ],
)
async def test_inconsistent_calendars_are_422_with_the_reason(
    routing: ServiceHarness, change: dict[str, Any], message: str
) -> None:
    body = {"id": f"bad-{uuid.uuid4().hex[:8]}", "name": "bad", "time_zone": "Asia/Shanghai"}
    body |= {"weekly_hours": {"0": OFFICE}} | change
    problem = assert_problem(
        await routing.client.post("/v1/sla/calendars", json=body, headers=LEAD), 422, "invalid-calendar"
    )
    assert message in problem["detail"]
    missing = await routing.client.get(f"/v1/sla/calendars/{body['id']}", headers=AGENT)
    assert_problem(missing, 404, "calendar-not-found")


async def test_weekday_keys_are_checked(routing: ServiceHarness) -> None:
    body = {"id": "bad-weekday", "name": "bad", "time_zone": "UTC", "weekly_hours": {"7": OFFICE}}
    assert_problem(
        await routing.client.post("/v1/sla/calendars", json=body, headers=LEAD), 422, "validation-error"
    )


async def test_only_leads_and_admins_change_calendars(routing: ServiceHarness) -> None:
    body = {"id": "agent-made", "name": "x", "time_zone": "UTC", "weekly_hours": {"0": OFFICE}}
    assert_problem(await routing.client.post("/v1/sla/calendars", json=body, headers=AGENT), 403, "forbidden")
    assert_problem(
        await routing.client.put("/v1/sla/calendars/cn-default", json=body, headers=AGENT), 403, "forbidden"
    )
    assert_problem(await routing.client.get("/v1/sla/calendars"), 401, "unauthorized")
    reviewer = auth_headers("reviewer")
    assert_problem(await routing.client.get("/v1/sla/calendars", headers=reviewer), 403, "forbidden")
    unknown = await routing.client.put(
        "/v1/sla/calendars/nope", json={k: v for k, v in body.items() if k != "id"}, headers=LEAD
    )
    assert_problem(unknown, 404, "calendar-not-found")


async def test_default_policies_are_seeded_in_precedence_order(routing: ServiceHarness) -> None:
    response = await routing.client.get("/v1/sla/policies", headers=auth_headers("ops"))
    assert response.status_code == 200, response.text
    seeded = [p for p in response.json() if p["id"].startswith("5a000000-")]
    assert [(p["name"], p["first_response_minutes"], p["resolution_working_days"]) for p in seeded] == [
        ("Urgent", 60, 1),
        ("Difficult (疑難) and complaints", 240, 5),
        ("High priority", 240, 2),
        ("Low priority", 960, 5),
        ("Default", 480, 3),
    ]
    assert all(p["calendar_id"] == "cn-default" and p["warning_share"] == 0.8 for p in seeded)


async def test_policy_crud_and_its_problems(routing: ServiceHarness) -> None:
    name = f"forum complaints {uuid.uuid4().hex[:6]}"
    body = {
        "name": name,
        "kind": "complaint",
        "channel": "forum",
        "precedence": 5000,
        "first_response_minutes": 120,
        "resolution_working_days": 2,
        "active": False,
    }
    created = await routing.client.post("/v1/sla/policies", json=body, headers=LEAD)
    assert created.status_code == 201, created.text
    policy = created.json()
    assert policy["warning_share"] == 0.8 and policy["pause_when_waiting_on_customer"] is True
    assert policy["calendar_id"] == "cn-default" and policy["priority"] is None

    duplicate = await routing.client.post("/v1/sla/policies", json=body, headers=LEAD)
    assert_problem(duplicate, 409, "policy-exists")
    unknown_calendar = await routing.client.post(
        "/v1/sla/policies", json={**body, "name": name + "?", "calendar_id": "atlantis"}, headers=LEAD
    )
    assert_problem(unknown_calendar, 422, "unknown-calendar")
    for bad in ({"warning_share": 1}, {"warning_share": 0}, {"first_response_minutes": 0}, {"kind": "rant"}):
        response = await routing.client.post("/v1/sla/policies", json={**body, **bad}, headers=LEAD)
        assert_problem(response, 422, "validation-error")
    assert_problem(await routing.client.post("/v1/sla/policies", json=body, headers=AGENT), 403, "forbidden")

    updated = await routing.client.put(
        f"/v1/sla/policies/{policy['id']}", json={**body, "warning_share": 0.5}, headers=ADMIN
    )
    assert updated.status_code == 200, updated.text
    fetched = await routing.client.get(f"/v1/sla/policies/{policy['id']}", headers=AGENT)
    assert fetched.json()["warning_share"] == 0.5
    assert datetime.fromisoformat(fetched.json()["updated_at"]) > datetime.fromisoformat(policy["created_at"])
    missing = await routing.client.get(f"/v1/sla/policies/{uuid.uuid4()}", headers=AGENT)
    assert_problem(missing, 404, "policy-not-found")


async def test_sla_of_an_unknown_ticket_is_404(routing: ServiceHarness) -> None:
    response = await routing.client.get(f"/v1/tickets/{uuid.uuid4()}/sla", headers=AGENT)
    assert_problem(response, 404, "ticket-sla-not-found")
