"""No request makes routing answer 500: schemathesis-generated requests, valid and invalid, for
every operation of its OpenAPI document (see `helpdesk_runtime.api_fuzz`). Training examples
come as JSON lines, which schemathesis does not write: `test_classifier_api` covers them."""

from __future__ import annotations

from routing_factories import ADMIN, consume, ticket_created

from helpdesk_runtime.api_fuzz import fuzz
from helpdesk_runtime.testing import ServiceHarness, auth_headers
from routing_service.app import create_app
from routing_service.settings import RoutingSettings

ROLES = ("agent", "reviewer", "lead", "admin", "ops")


async def test_no_generated_request_is_answered_with_a_server_error(make_service) -> None:  # type: ignore[no-untyped-def]
    # An instance of its own: the requests create and change teams, agents, calendars, policies
    # and rules — the other tests' SLA arithmetic and assignments must not see them.
    async with make_service(
        "routing", RoutingSettings, create_app, label="fuzz", queue_sweep_seconds=3600
    ) as routing:
        await _fuzz(routing)


async def _fuzz(routing: ServiceHarness) -> None:
    team = (await routing.client.post("/v1/teams", headers=ADMIN, json={"name": "險種組"})).json()
    agent = (
        await routing.client.post(
            "/v1/agents",
            headers=ADMIN,
            json={
                "name": "專員",
                "team_id": team["id"],
                "roles": ["specialist", "lead"],
                "domains": ["auto-insurance"],
                "max_concurrent": 5,
            },
        )
    ).json()
    calendar = "fuzz-calendar"
    created = await routing.client.post(
        "/v1/sla/calendars",
        headers=ADMIN,
        json={
            "id": calendar,
            "name": "測試",
            "time_zone": "Asia/Taipei",
            "weekly_hours": {"0": [["09:00", "12:00"], ["13:30", "18:00"]]},
        },
    )
    assert created.status_code == 201, created.text
    policies = (await routing.client.get("/v1/sla/policies", headers=ADMIN)).json()
    rule = await routing.client.post(
        "/v1/routing/rules",
        headers=ADMIN,
        json={"name": "車險", "pattern": "車禍", "domain": "auto-insurance"},
    )
    event = ticket_created()
    await consume(routing, event)
    caller = auth_headers(*ROLES, sub=agent["id"])

    report = await fuzz(
        routing.client,
        headers=caller,
        path_parameters={
            "team_id": team["id"],
            "agent_id": agent["id"],
            "calendar_id": calendar,
            "policy_id": policies[0]["id"],
            "rule_id": rule.json()["id"],
            "ticket_id": str(event.data.ticket_id),
        },
        skip_paths={"/v1/routing/training-examples"},
    )

    report.check(at_least_sent=300, at_least_succeeded=100)
