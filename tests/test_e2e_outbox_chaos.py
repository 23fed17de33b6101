"""The outbox keeps its promise: with the broker down tickets are still accepted,
and once it is back every event is delivered and applied exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpdesk_runtime.kafka import KafkaBroker
from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.testing import auth_headers

from .conftest import launch_stack
from .test_e2e_ticket_flow import eventually, new_ticket

pytestmark = pytest.mark.e2e

CHANNEL = auth_headers("channel")
LEAD = auth_headers("lead")
TICKETS_DURING_OUTAGE = 12  # below the demo team's total capacity (18): all must be assigned


def counter_total(client: httpx.Client, url: str, family: str, service: str | None = None) -> float:
    text = client.get(f"{url}/metrics").text
    for metric in text_string_to_metric_families(text):
        if metric.name == family:
            return sum(
                s.value
                for s in metric.samples
                if s.name.endswith(("_total", family))
                and (service is None or s.labels.get("service") == service)
            )
    return 0.0


def test_broker_outage_loses_nothing_and_applies_nothing_twice(
    infra: Infra, private_broker: KafkaBroker, tmp_path: Path
) -> None:
    stack = launch_stack(infra, kafka_bootstrap=private_broker.bootstrap_servers, log_dir=tmp_path / "logs")
    try:
        with httpx.Client(timeout=10) as client:
            intake = stack.url("intake")
            warm = client.post(f"{intake}/v1/tickets", json=new_ticket(), headers=CHANNEL).json()
            eventually(
                lambda: client.get(f"{intake}/v1/tickets/{warm['id']}", headers=LEAD).json()["assignee_id"],
                within=10.0,
            )

            private_broker.stop()
            accepted = []
            for _ in range(TICKETS_DURING_OUTAGE):
                response = client.post(
                    f"{intake}/v1/tickets",
                    headers=CHANNEL,
                    json=new_ticket(customer={"external_id": f"c-{uuid.uuid4()}"}),
                )
                assert response.status_code == 201, response.text
                accepted.append(response.json()["id"])
            # Still ready (it takes tickets), and says what it is missing.
            ready = client.get(f"{intake}/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            assert ready.json()["checks"]["kafka"].startswith("unavailable")
            eventually(
                lambda: (
                    counter_total(client, intake, "helpdesk_outbox_backlog", "intake")
                    >= TICKETS_DURING_OUTAGE
                ),
                within=15.0,
                interval=0.5,
            )

            private_broker.restart()

            def all_assigned() -> bool:
                shown = [client.get(f"{intake}/v1/tickets/{t}", headers=LEAD).json() for t in accepted]
                return all(t["assignee_id"] for t in shown)

            eventually(all_assigned, within=60.0, interval=0.5)
            expected = TICKETS_DURING_OUTAGE + 1
            eventually(
                lambda: (
                    client.get(f"{stack.url('metrics')}/v1/metrics/summary", headers=LEAD).json()
                    == {"tickets_created": expected, "tickets_assigned": expected}
                ),
                within=30.0,
            )
            # Counters move once per *applied* event: a redelivered event must not move them again.
            assert counter_total(client, stack.url("metrics"), "helpdesk_tickets_created") == expected
            assert counter_total(client, stack.url("metrics"), "helpdesk_tickets_assigned") == expected
            agents = client.get(f"{stack.url('routing')}/v1/agents", headers=LEAD).json()["items"]
            assert sum(a["active_tickets"] for a in agents) == expected
            eventually(
                lambda: counter_total(client, intake, "helpdesk_outbox_backlog", "intake") == 0, within=10.0
            )
    finally:
        stack.stop()
