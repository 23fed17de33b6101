"""保密: personal data never leaves intake's database — not in any event, not in any log line."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from aiokafka import ConsumerRecord

from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.stack import Stack
from helpdesk_runtime.testing import auth_headers
from helpdesk_shared.contracts import TicketReopened
from helpdesk_shared.contracts.topics import SERVICE_TOPIC

from .test_e2e_ticket_flow import eventually, every_record

pytestmark = pytest.mark.e2e

CHANNEL = auth_headers("channel")
LEAD = auth_headers("lead")
NAME = "周先生"
REOPENED = TicketReopened.cloudevent_type()  # the last event intake publishes in this flow


def test_no_email_phone_or_name_in_any_event_or_log(stack: Stack, infra: Infra) -> None:
    email = f"secret.{uuid.uuid4().hex[:8]}@example.com"
    phone = "+86 139 " + str(uuid.uuid4().int)[:4] + " 7731"
    with httpx.Client(base_url=stack.url("intake"), timeout=5) as intake:
        created = intake.post(
            "/v1/tickets",
            headers=CHANNEL,
            json={
                "channel": "web",
                "kind": "complaint",
                "subject": f"我的電話 {phone} 打不通客服",
                "description": f"請寄到 {email} 或打 {phone}",
                "customer": {
                    "external_id": f"web-{uuid.uuid4()}",
                    "name": NAME,
                    "email": email,
                    "phone": phone,
                },
            },
        )
        assert created.status_code == 201, created.text
        ticket = created.json()
        eventually(
            lambda: intake.get(f"/v1/tickets/{ticket['id']}", headers=LEAD).json()["assignee_id"], within=5.0
        )
        resolved = intake.post(f"/v1/tickets/{ticket['id']}/resolve", headers=LEAD)
        assert resolved.status_code == 200, resolved.text
        reply = intake.post(f"/v1/tickets/{ticket['id']}/messages", headers=CHANNEL, json={"body": "謝謝"})
        assert reply.status_code == 201, reply.text  # reopens the resolved ticket

        def reassigned() -> bool:
            shown = intake.get(f"/v1/tickets/{ticket['id']}", headers=LEAD).json()
            return bool(shown["status"] == "assigned" and shown["reopen_count"] == 1)

        eventually(reassigned, within=15.0)  # routing's answer to the reopening is on Kafka too

    # Intake's events of a ticket share a partition, in order: once the last one is on Kafka, the
    # others before it are as well.
    topics = [stack.topic_prefix + t for t in SERVICE_TOPIC.values()]
    records = wait_for_event(infra.kafka_bootstrap, topics, ticket["id"], REOPENED, within=20.0)
    events = [r.value for r in records]
    leaks = [e for e in events if any(c in e for c in (email.encode(), phone.encode(), NAME.encode()))]
    assert leaks == [], "an event carries the customer's email, phone or name"
    logs = b"".join(path.read_bytes() for path in stack.log_dir.glob("*.log"))
    assert email.encode() not in logs
    assert phone.encode() not in logs
    assert NAME.encode() not in logs


def wait_for_event(
    bootstrap: str, topics: list[str], ticket_id: str, event_type: str, *, within: float
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on ``topics``, read once ``event_type`` of the ticket is among them."""
    deadline = time.monotonic() + within
    while True:
        records = asyncio.run(every_record(bootstrap, topics))
        mine = [r for r in records if r.key == ticket_id.encode()]
        if any(dict(r.headers).get("ce_type") == event_type.encode() for r in mine):
            return records
        if time.monotonic() > deadline:
            types = sorted({dict(r.headers).get("ce_type", b"?").decode() for r in mine})
            raise AssertionError(f"{event_type} of {ticket_id} not on Kafka within {within}s; seen: {types}")
