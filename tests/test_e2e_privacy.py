"""保密: personal data never leaves intake's database — not in any event, not in any log line."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.stack import Stack
from helpdesk_runtime.testing import auth_headers
from helpdesk_shared.contracts.topics import SERVICE_TOPIC

from .test_e2e_ticket_flow import eventually, every_record

pytestmark = pytest.mark.e2e

CHANNEL = auth_headers("channel")
LEAD = auth_headers("lead")


def test_no_email_or_phone_in_any_event_or_log(stack: Stack, infra: Infra) -> None:
    email = f"secret.{uuid.uuid4().hex[:8]}@example.com"
    phone = "+86 139 " + str(uuid.uuid4().int)[:4] + " 7731"
    with httpx.Client(base_url=stack.url("intake"), timeout=5) as intake:
        ticket = intake.post(
            "/v1/tickets",
            headers=CHANNEL,
            json={
                "channel": "web",
                "kind": "complaint",
                "subject": f"我的電話 {phone} 打不通客服",
                "description": f"請寄到 {email} 或打 {phone}",
                "customer": {
                    "external_id": f"web-{uuid.uuid4()}",
                    "name": "周先生",
                    "email": email,
                    "phone": phone,
                },
            },
        ).json()
        eventually(
            lambda: intake.get(f"/v1/tickets/{ticket['id']}", headers=LEAD).json()["assignee_id"], within=5.0
        )
        intake.post(f"/v1/tickets/{ticket['id']}/resolve", headers=LEAD)
        intake.post(f"/v1/tickets/{ticket['id']}/messages", headers=CHANNEL, json={"body": "謝謝"})

    topics = [stack.topic_prefix + t for t in SERVICE_TOPIC.values()]
    events = [r.value for r in asyncio.run(every_record(infra.kafka_bootstrap, topics))]
    assert any(ticket["id"].encode() in e for e in events), "the flow's events were not found"
    leaks = [e for e in events if any(c in e for c in (email.encode(), phone.encode(), "周先生".encode()))]
    assert leaks == [], "an event carries the customer's email, phone or name"
    logs = b"".join(path.read_bytes() for path in stack.log_dir.glob("*.log"))
    assert email.encode() not in logs
    assert phone.encode() not in logs
