"""Approved answers reach the customer: email through a real SMTP server, other channels through a
real HTTP receiver that fails twice before accepting; failures stay visible on the ticket."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from intake_factories import assign, post_ticket, publish_answer
from sqlalchemy import select

from helpdesk_runtime.procs import free_port
from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from intake_service.app import create_app
from intake_service.channels import OutboundAnswer
from intake_service.delivery import deliver_due
from intake_service.models import Delivery
from intake_service.settings import IntakeSettings

CHANNEL = auth_headers("channel")
LEAD = auth_headers("lead")
WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789abcdef"


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("bounce-"):  # as a real server refuses an unknown mailbox: naming it
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


class FlakyReceiver:
    """A channel's webhook: answers 503 to the first two posts of each delivery (its Idempotency-Key),
    then 200; keeps what it accepted. Each delivery's count is its own, whichever test sent it first."""

    FAILURES = 2

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.refused: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/answers"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                delivery = self.headers.get("Idempotency-Key", "")
                with receiver._lock:
                    accept = receiver.refused[delivery] >= receiver.FAILURES
                    if accept:
                        receiver.posts.append((dict(self.headers), body))
                    else:
                        receiver.refused[delivery] += 1
                self.send_response(200 if accept else 503)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[FlakyReceiver]:
    receiver = FlakyReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture(scope="module")
async def delivering(
    make_service: Any, mailbox: tuple[Mailbox, int], receiver: FlakyReceiver
) -> AsyncIterator[ServiceHarness]:
    async with make_service(
        "intake",
        IntakeSettings,
        create_app,
        label="delivery",
        smtp_port=mailbox[1],
        channel_callbacks={"app": receiver.url},
        webhook_secret=WEBHOOK_SECRET,
        delivery_backoff_seconds=0.05,
        delivery_poll_seconds=0.05,
    ) as harness:
        yield harness


async def until(check: Any, within: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while (result := await check()) in (None, False, []):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
    return result


async def delivered_events(intake: ServiceHarness, ticket_id: str) -> list[dict[str, Any]]:
    async with intake.uow() as uow:
        rows = await uow.session.execute(
            select(OUTBOX.c.payload)
            .where(
                OUTBOX.c.key == ticket_id,
                OUTBOX.c.event_type == "helpdesk.ticket.answer_delivered.v1",
            )
            .order_by(OUTBOX.c.seq)
        )
    return [r.payload["data"] for r in rows]


async def test_email_answers_go_by_smtp_and_thread(
    delivering: ServiceHarness, mailbox: tuple[Mailbox, int]
) -> None:
    box, _ = mailbox
    ticket_id = await post_ticket(
        delivering,
        channel="email",
        subject="發票抬頭更改",
        description="請協助更改發票抬頭",
        customer={"email": "wang@example.com"},
    )
    await assign(delivering, ticket_id)
    sent_before = len(box.messages)

    await publish_answer(delivering, ticket_id, "您好，已為您更改發票抬頭。")
    first = await until(lambda: _count_at_least(delivering, ticket_id, 1))
    await publish_answer(delivering, ticket_id, "補充：新發票已寄出。", version=2)
    events = await until(lambda: _count_at_least(delivering, ticket_id, 2))

    mails = [message_from_bytes(m, policy=policy.default) for m in box.messages[sent_before:]]
    assert [m["To"] for m in mails] == ["wang@example.com", "wang@example.com"]
    number = (await delivering.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()["number"]
    assert number in mails[0]["Subject"]
    assert "已為您更改發票抬頭" in mails[0].get_content()
    assert mails[1]["In-Reply-To"] == mails[0]["Message-ID"]
    assert mails[0]["Message-ID"] in mails[1]["References"]
    assert [e["first_response"] for e in events] == [True, False]
    assert first[0]["channel"] == "email"
    shown = (await delivering.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    assert shown["status"] == "answered"


async def test_an_email_subject_with_a_line_break_still_gets_its_answer(
    delivering: ServiceHarness, mailbox: tuple[Mailbox, int]
) -> None:
    # Subjects are the customer's text: a line break in one made the Subject header unbuildable,
    # so the answer was retried, then failed, and never sent.
    box, _ = mailbox
    ticket_id = await post_ticket(
        delivering,
        channel="email",
        subject="保單理賠\r\n進度查詢\t（急）",
        description="上個月提交的理賠申請還沒有結果",
        customer={"external_id": f"mail-{uuid.uuid4()}", "email": "lin@example.com"},
    )
    await assign(delivering, ticket_id)
    sent_before = len(box.messages)

    await publish_answer(delivering, ticket_id, "您好，理賠已進入審核。")
    [event] = await until(lambda: _count_at_least(delivering, ticket_id, 1))

    number = (await delivering.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()["number"]
    mails = [message_from_bytes(m, policy=policy.default) for m in box.messages[sent_before:]]
    [mail] = [m for m in mails if number in m["Subject"]]
    assert mail["Subject"] == f"Re: 保單理賠 進度查詢 （急） [{number}]"
    assert event["attempts"] == 1


async def test_webhook_is_signed_and_retried_until_accepted(
    delivering: ServiceHarness, receiver: FlakyReceiver
) -> None:
    ticket_id = await post_ticket(delivering, channel="app", subject="App 閃退", description="更新後一直閃退")
    await assign(delivering, ticket_id)

    await publish_answer(delivering, ticket_id, "請先清除快取後重新登入。", correlationid="review-77")
    events = await until(lambda: _count_at_least(delivering, ticket_id, 1))

    assert events[0]["attempts"] == 3
    headers, body = receiver.posts[-1]
    assert receiver.refused[headers["Idempotency-Key"]] == 2  # refused twice, accepted the third time
    # The answer's correlation id goes on with it: to the integration and on the delivered event.
    assert headers["X-Correlation-ID"] == "review-77"
    async with delivering.uow() as uow:
        delivered = (
            await uow.session.execute(
                select(OUTBOX.c.headers, OUTBOX.c.payload).where(
                    OUTBOX.c.key == ticket_id, OUTBOX.c.event_type == "helpdesk.ticket.answer_delivered.v1"
                )
            )
        ).one()
    assert delivered.headers["correlationid"] == delivered.payload["correlationid"] == "review-77"
    timestamp, signature = (part.split("=", 1)[1] for part in headers["X-Helpdesk-Signature"].split(","))
    expected = hmac.new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    assert "請先清除快取".encode() in body


async def test_undeliverable_answers_are_visible_on_the_ticket(delivering: ServiceHarness) -> None:
    ticket_id = await post_ticket(delivering, channel="chat", subject="客服在嗎", description="想問問題")
    await assign(delivering, ticket_id)

    await publish_answer(delivering, ticket_id, "在的，請說。")

    async def failure() -> list[dict[str, Any]]:
        items = (await delivering.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)).json()
        return [i for i in items if i["kind"] == "delivery_failed"]

    failed = await until(failure)
    assert "no callback URL" in failed[0]["data"]["error"]
    assert await delivered_events(delivering, ticket_id) == []


async def _count_at_least(intake: ServiceHarness, ticket_id: str, n: int) -> list[dict[str, Any]] | None:
    events = await delivered_events(intake, ticket_id)
    return events if len(events) >= n else None


async def test_a_refused_recipient_is_visible_without_their_address(delivering: ServiceHarness) -> None:
    address = f"bounce-{uuid.uuid4().hex[:8]}@example.com"
    ticket_id = await post_ticket(
        delivering,
        channel="email",
        subject="地址變更",
        description="請更新我的通訊地址",
        customer={"external_id": f"mail-{uuid.uuid4()}", "email": address},
    )
    await assign(delivering, ticket_id)

    await publish_answer(delivering, ticket_id, "已為您更新。")

    async def failure() -> list[dict[str, Any]]:
        items = (
            await delivering.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=auth_headers("agent"))
        ).json()
        return [i for i in items if i["kind"] == "delivery_failed"]

    [failed] = await until(failure)
    # The server's refusal names the mailbox; agents see contact data masked, so the entry must not.
    assert "recipient refused" in failed["data"]["error"] and "[email]" in failed["data"]["error"]
    assert address not in str(failed)
    async with delivering.uow() as uow:
        stored = await uow.session.scalar(
            select(Delivery.last_error).where(Delivery.ticket_id == uuid.UUID(ticket_id))
        )
    assert stored is not None and address not in stored


# ---- the worker's passes, driven by the test (its own worker polls once an hour) ----------------


@pytest.fixture(scope="module")
async def held(make_service: Any) -> AsyncIterator[ServiceHarness]:
    async with make_service(
        "intake", IntakeSettings, create_app, label="delivery-held", delivery_poll_seconds=3600
    ) as harness:
        yield harness


class Accepting:
    """A channel that accepts every answer, running `during` (if given) while it does."""

    def __init__(self, during: Any = None, fail_on_call: int | None = None) -> None:
        self.sent: list[OutboundAnswer] = []
        self._during, self._fail_on_call = during, fail_on_call

    async def send(self, answer: OutboundAnswer) -> None:
        if self._fail_on_call == len(self.sent) + 1:
            raise asyncio.CancelledError  # the service stopping in the middle of a pass
        if self._during is not None:
            await self._during()
        self.sent.append(answer)


async def in_progress_ticket(intake: ServiceHarness) -> tuple[str, dict[str, str]]:
    ticket_id = await post_ticket(intake, channel="app", subject="保單借款", description="可以借多少？")
    agent = auth_headers("agent", sub=str(await assign(intake, ticket_id)))
    assert (await intake.client.post(f"/v1/tickets/{ticket_id}/start", headers=agent)).status_code == 200
    return ticket_id, agent


async def one_pass(intake: ServiceHarness, sender: Accepting) -> int:
    settings = intake.runtime.settings
    assert isinstance(settings, IntakeSettings)
    return await deliver_due(intake.runtime.uow, sender, settings)


async def test_a_ticket_closed_while_its_answer_is_sent_stays_closed(held: ServiceHarness) -> None:
    ticket_id, _ = await in_progress_ticket(held)
    await publish_answer(held, ticket_id, "最多可借保單價值的八成。")

    async def lead_closes() -> None:
        closed = await held.client.post(
            f"/v1/tickets/{ticket_id}/close", headers=LEAD, json={"reason": "manual"}
        )
        assert closed.status_code == 200, closed.text

    assert await one_pass(held, Accepting(during=lead_closes)) == 1

    ticket = (await held.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    assert ticket["status"] == "closed"  # the worker had read "in_progress" before the send
    [delivered] = await delivered_events(held, ticket_id)
    assert delivered["first_response"] is True


async def test_two_answers_delivered_in_one_pass_make_one_first_response(held: ServiceHarness) -> None:
    ticket_id, _ = await in_progress_ticket(held)
    await publish_answer(held, ticket_id, "第一版。", version=1)
    await publish_answer(held, ticket_id, "補充說明。", version=2)

    sender = Accepting()
    assert await one_pass(held, sender) == 2

    assert len(sender.sent) == 2
    events = await delivered_events(held, ticket_id)
    assert sorted(e["first_response"] for e in events) == [False, True]


async def test_what_a_pass_sent_before_it_was_stopped_stays_sent(held: ServiceHarness) -> None:
    ticket_id, _ = await in_progress_ticket(held)
    await publish_answer(held, ticket_id, "第一版。", version=1)
    await publish_answer(held, ticket_id, "補充說明。", version=2)

    sender = Accepting(fail_on_call=2)
    with pytest.raises(asyncio.CancelledError):
        await one_pass(held, sender)

    assert len(sender.sent) == 1
    async with held.uow() as uow:
        rows = (
            await uow.session.execute(
                select(Delivery.status, Delivery.attempts, Delivery.next_attempt_at)
                .where(Delivery.ticket_id == uuid.UUID(ticket_id))
                .order_by(Delivery.answer_version)
            )
        ).all()
    # Both were sent at once (INTAKE_DELIVERY_CONCURRENCY): either may be the one interrupted.
    # The one sent stays delivered, recorded before the pass raised.
    [sent_row] = [r for r in rows if r.status == "delivered"]
    [interrupted] = [r for r in rows if r.status == "pending"]
    assert (sent_row.attempts, interrupted.attempts) == (1, 1)
    # The interrupted one is not sent again at once (the channel may have taken it): it waits out
    # its claim, then counts as a failed attempt's retry would.
    assert interrupted.next_attempt_at > datetime.now(UTC)
    again = Accepting()
    assert await one_pass(held, again) == 0
    assert len(await delivered_events(held, ticket_id)) == 1


async def test_an_answer_published_for_a_closed_ticket_is_not_sent(held: ServiceHarness) -> None:
    # A lead closed the ticket (spam, a duplicate) while its answer was still in review.
    ticket_id, _ = await in_progress_ticket(held)
    closed = await held.client.post(f"/v1/tickets/{ticket_id}/close", headers=LEAD, json={"reason": "manual"})
    assert closed.status_code == 200, closed.text

    await publish_answer(held, ticket_id, "最多可借保單價值的八成。")

    assert await one_pass(held, Accepting()) == 0
    assert await delivered_events(held, ticket_id) == []
    deliveries = await held.client.get(f"/v1/tickets/{ticket_id}/deliveries", headers=LEAD)
    assert deliveries.status_code == 200 and deliveries.json() == []
    timeline = (await held.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)).json()
    [skipped] = [entry for entry in timeline if entry["kind"] == "answer_not_delivered"]
    assert skipped["data"]["reason"] == "ticket_closed"
