"""The vertical slice across real processes, real Kafka and real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.seed import DEMO_AGENTS, LEAD_ID
from helpdesk_runtime.stack import SERVICES, Stack
from helpdesk_runtime.testing import auth_headers
from helpdesk_shared.contracts import parse_event
from helpdesk_shared.contracts.topics import SERVICE_TOPIC

pytestmark = pytest.mark.e2e

CHANNEL = auth_headers("channel")
LEAD = auth_headers("lead")


def new_ticket(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "app",
        "kind": "question",
        "subject": "車險續保問題",
        "description": "我的車險下個月到期，想知道續保需要準備什麼資料。",
        "customer": {"external_id": f"app-{uuid.uuid4()}", "phone": "+86 139 0000 1111"},
    }
    body.update(overrides)
    return body


def eventually(check: Callable[[], Any], *, within: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s; last result: {result!r}")
        time.sleep(interval)


async def every_record(bootstrap: str, topics: list[str]) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on ``topics`` so far."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        found: list[ConsumerRecord[bytes, bytes]] = []
        while batch := await consumer.getmany(timeout_ms=1500):
            found.extend(record for records in batch.values() for record in records)
        return found
    finally:
        await consumer.stop()


def test_posted_ticket_is_assigned_within_five_seconds(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url("intake"), timeout=5) as intake:
        created = intake.post("/v1/tickets", json=new_ticket(), headers=CHANNEL)
        assert created.status_code == 201, created.text
        ticket = created.json()
        assert ticket["assignee_id"] is None

        def assigned() -> dict[str, Any] | None:
            shown = intake.get(f"/v1/tickets/{ticket['id']}", headers=CHANNEL).json()
            return shown if shown["assignee_id"] else None

        shown = eventually(assigned, within=5.0)
    assert shown["status"] == "assigned"
    assert shown["assignee_id"] in {str(a.id) for a in DEMO_AGENTS}


def test_a_requests_correlation_id_travels_with_every_event_it_caused(stack: Stack, infra: Infra) -> None:
    correlation_id = f"portal-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=stack.url("intake"), timeout=5) as intake:
        created = intake.post(
            "/v1/tickets", json=new_ticket(), headers={**CHANNEL, "X-Correlation-ID": correlation_id}
        )
        ticket = created.json()
        eventually(
            lambda: intake.get(f"/v1/tickets/{ticket['id']}", headers=CHANNEL).json()["assignee_id"], within=5
        )

    topics = [stack.topic_prefix + t for t in SERVICE_TOPIC.values()]
    records = [
        r for r in asyncio.run(every_record(infra.kafka_bootstrap, topics)) if r.key == ticket["id"].encode()
    ]
    types = {parse_event(r.value).type for r in records}
    assert {"helpdesk.ticket.created.v1", "helpdesk.ticket.assigned.v1"} <= types  # intake's, then routing's
    for record in records:
        assert dict(record.headers)["correlationid"] == correlation_id.encode()
        assert parse_event(record.value).correlationid == correlation_id


def intake_ticket_count(client: httpx.Client, intake_url: str) -> int:
    """How many tickets intake holds (every page of ``GET /v1/tickets``)."""
    count, cursor = 0, None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        response = client.get(f"{intake_url}/v1/tickets", params=params, headers=LEAD)
        assert response.status_code == 200, response.text
        page = response.json()
        count += len(page["items"])
        if not (cursor := page["next_cursor"]):
            return count


def test_every_service_consumes_what_it_needs(stack: Stack) -> None:
    intake, metrics = stack.url("intake"), stack.url("metrics")
    with httpx.Client(timeout=5) as client:

        def tickets_counted() -> int:
            response = client.get(f"{metrics}/v1/metrics/summary", headers=LEAD)
            assert response.status_code == 200, response.text
            counted: int = response.json()["tickets_created"]
            return counted

        def until_counted(expected: int, within: float) -> None:
            try:
                eventually(lambda: tickets_counted() == expected, within=within, interval=0.2)
            except AssertionError as exc:
                raise AssertionError(f"metrics counts {tickets_counted()} tickets, not {expected}") from exc

        # Metrics counts tickets from intake's events, and earlier tests' may still be on their way:
        # only once it has counted every ticket intake holds can one more be this test's.
        # (Nothing else posts tickets meanwhile: the tests of a session run one at a time.)
        before = intake_ticket_count(client, intake)
        until_counted(before, within=30.0)
        created = client.post(f"{intake}/v1/tickets", json=new_ticket(), headers=CHANNEL)
        assert created.status_code == 201, created.text
        ticket = created.json()

        def owner_known() -> dict[str, Any] | None:
            response = client.get(f"{stack.url('review')}/v1/tickets/{ticket['id']}/owner", headers=LEAD)
            return response.json() if response.status_code == 200 else None

        owner = eventually(owner_known, within=10.0)
        shown = client.get(f"{intake}/v1/tickets/{ticket['id']}", headers=LEAD).json()
        assert owner["agent_id"] == shown["assignee_id"]

        until_counted(before + 1, within=10.0)
        assert intake_ticket_count(client, intake) == before + 1  # and that one is this test's


def test_health_readiness_and_prometheus_metrics_of_every_service(stack: Stack) -> None:
    with httpx.Client(timeout=5) as client:
        for spec in SERVICES:
            base = stack.url(spec.name)
            assert client.get(f"{base}/healthz").json() == {"status": "ok"}
            ready = client.get(f"{base}/readyz")
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"database": "ok", "kafka": "ok"}
            client.get(f"{base}/v1/definitely-not-a-route")
            metrics = client.get(f"{base}/metrics")
            assert metrics.headers["content-type"].startswith("text/plain")
            families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
            for name in (
                "helpdesk_http_requests",
                "helpdesk_http_request_duration_seconds",
                "helpdesk_outbox_backlog",
                "helpdesk_consumer_lag",
            ):
                assert name in families, (spec.name, name, sorted(families))
            statuses = {
                s.labels["status"]
                for s in families["helpdesk_http_requests"].samples
                if s.labels.get("service") == spec.name
            }
            assert "404" in statuses
            lag = [s for s in families["helpdesk_consumer_lag"].samples if s.labels["service"] == spec.name]
            assert lag, f"{spec.name} reports no consumer lag samples"


def test_unknown_route_and_method_are_problems(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url("intake"), timeout=5) as client:
        missing = client.get("/v1/nothing-here")
        wrong_method = client.delete("/v1/tickets", headers=CHANNEL)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == "application/problem+json"


def test_customer_reply_after_resolution_reopens_with_the_same_agent(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url("intake"), timeout=5) as intake:
        ticket = intake.post("/v1/tickets", json=new_ticket(), headers=CHANNEL).json()
        first = eventually(
            lambda: intake.get(f"/v1/tickets/{ticket['id']}", headers=LEAD).json()["assignee_id"], within=5.0
        )
        assert intake.post(f"/v1/tickets/{ticket['id']}/resolve", headers=LEAD).status_code == 200

        reply = intake.post(
            f"/v1/tickets/{ticket['id']}/messages",
            headers=CHANNEL,
            json={"body": "還是不清楚，請再說明續保要帶哪些證件。"},
        )
        assert reply.status_code == 201

        def back_with_an_agent() -> dict[str, Any] | None:
            shown = intake.get(f"/v1/tickets/{ticket['id']}", headers=LEAD).json()
            return shown if shown["status"] == "assigned" and shown["reopen_count"] == 1 else None

        shown = eventually(back_with_an_agent, within=10.0)
        timeline = intake.get(f"/v1/tickets/{ticket['id']}/timeline", headers=LEAD).json()
    assert shown["assignee_id"] == first
    kinds = [item["kind"] for item in timeline]
    assert kinds.count("assigned") == 2
    last_assignment = [item for item in timeline if item["kind"] == "assigned"][-1]
    assert last_assignment["data"]["reason"] == "reopened: back to the previous agent"


def test_complaints_land_with_the_team_lead_who_adds_a_collaborator(stack: Stack) -> None:
    marker = f"case{uuid.uuid4().hex[:10]}"  # this test's rule matches this test's ticket only
    with httpx.Client(timeout=5) as client:
        intake, routing, review = stack.url("intake"), stack.url("routing"), stack.url("review")
        rule = client.post(
            f"{routing}/v1/routing/rules",
            headers=LEAD,
            json={"name": f"e2e {marker}", "pattern": marker, "domain": "auto-insurance", "category": "理賠"},
        )
        assert rule.status_code == 201, rule.text
        ticket = client.post(
            f"{intake}/v1/tickets",
            headers=CHANNEL,
            json=new_ticket(
                kind="complaint",
                subject="投訴：理賠員態度惡劣",
                description=f"電話裡對我很不耐煩，要求主管處理（案號 {marker}）",
            ),
        ).json()
        owner = eventually(
            lambda: client.get(f"{intake}/v1/tickets/{ticket['id']}", headers=LEAD).json()["assignee_id"],
            within=5.0,
        )
        assert owner == str(LEAD_ID)

        # Intake mirrors what routing decided: domain and category (the rule), difficulty (a
        # complaint) and the SLA policy with its due times, as routing's clocks hold them.
        def classified_shown() -> dict[str, Any] | None:
            shown: dict[str, Any] = client.get(f"{intake}/v1/tickets/{ticket['id']}", headers=LEAD).json()
            return shown if shown["sla_policy_id"] else None

        classified = eventually(classified_shown, within=5.0)
        sla = client.get(f"{routing}/v1/tickets/{ticket['id']}/sla", headers=LEAD).json()
        due = {timer["target"]: datetime.fromisoformat(timer["due_at"]) for timer in sla["timers"]}
        assert (classified["domain"], classified["category"], classified["difficult"]) == (
            "auto-insurance",
            "理賠",
            True,
        )
        assert {classified["sla_policy_id"]} == {timer["policy_id"] for timer in sla["timers"]}
        assert datetime.fromisoformat(classified["first_response_due_at"]) == due["first_response"]
        assert datetime.fromisoformat(classified["resolution_due_at"]) == due["resolution"]
        listed = client.get(
            f"{intake}/v1/tickets",
            headers=LEAD,
            params={"category": "理賠", "domain": "auto-insurance", "difficult": "true", "kind": "complaint"},
        ).json()
        assert ticket["id"] in {t["id"] for t in listed["items"]}

        helper = next(str(a.id) for a in DEMO_AGENTS if a.id != LEAD_ID and "specialist" in a.roles)
        added = client.put(
            f"{routing}/v1/tickets/{ticket['id']}/collaborators/{helper}",
            headers=auth_headers("lead", sub=str(LEAD_ID)),
        )
        assert added.status_code == 200, added.text

        def collaborators_known() -> list[str]:
            shown = client.get(f"{review}/v1/tickets/{ticket['id']}/owner", headers=LEAD).json()
            ids: list[str] = shown.get("collaborator_ids", [])
            return ids

        drafters = eventually(collaborators_known, within=10.0)
        timeline = client.get(f"{intake}/v1/tickets/{ticket['id']}/timeline", headers=LEAD).json()
    assigned = next(item for item in timeline if item["kind"] == "assigned")
    assert assigned["data"]["difficult"] is True
    assert drafters == [helper]


def test_transfers_are_authorised_and_visible_in_the_timeline(stack: Stack) -> None:
    with httpx.Client(timeout=5) as client:
        intake, routing = stack.url("intake"), stack.url("routing")
        ticket = client.post(f"{intake}/v1/tickets", headers=CHANNEL, json=new_ticket()).json()
        owner = eventually(
            lambda: client.get(f"{intake}/v1/tickets/{ticket['id']}", headers=LEAD).json()["assignee_id"],
            within=5.0,
        )
        other = next(str(a.id) for a in DEMO_AGENTS if str(a.id) != owner and "specialist" in a.roles)

        stranger = client.post(
            f"{routing}/v1/tickets/{ticket['id']}/transfer",
            headers=auth_headers("agent", sub=other),
            json={"to_agent_id": other, "reason": "我來接"},
        )
        moved = client.post(
            f"{routing}/v1/tickets/{ticket['id']}/transfer",
            headers=auth_headers("agent", sub=owner),
            json={"to_agent_id": other, "reason": "需要車險專長"},
        )

        def transferred() -> list[dict[str, Any]]:
            timeline = client.get(f"{intake}/v1/tickets/{ticket['id']}/timeline", headers=LEAD).json()
            return [item for item in timeline if item["kind"] == "transferred"]

        entries = eventually(transferred, within=5.0)
        shown = client.get(f"{intake}/v1/tickets/{ticket['id']}", headers=LEAD).json()
    assert stranger.status_code == 403
    assert stranger.headers["content-type"] == "application/problem+json"
    assert moved.status_code == 201, moved.text
    assert entries[0]["data"] == {"from_agent_id": owner, "to_agent_id": other, "reason": "需要車險專長"}
    assert shown["assignee_id"] == other
