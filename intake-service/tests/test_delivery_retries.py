"""Answer delivery that can be depended on: retried by age (not given up after a few minutes),
a failed one retried by a lead, seen through the API, never sent twice by two workers, once per
answer version, and a delivered answer makes the ticket answered whatever intake's mirror said.

The worker's passes are driven by the tests (the instance's own worker polls once an hour)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from intake_factories import CHANNEL, assign, deliver, post_ticket, publish_answer
from sqlalchemy import func, select, update

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.contracts.enums import TicketStatus as S
from helpdesk_shared.contracts.review import AnswerSubmitted
from intake_service import delivery as delivery_module
from intake_service.app import create_app
from intake_service.channels import ChannelSender, DeliveryError, OutboundAnswer, SmtpSender, WebhookSender
from intake_service.delivery import deliver_due
from intake_service.domain.lifecycle import status_after_delivery
from intake_service.models import Customer, Delivery, Message, Ticket, TimelineEntry
from intake_service.repository import TicketRepository, load_ticket
from intake_service.settings import IntakeSettings

LEAD = auth_headers("lead")
AGENT = auth_headers("agent")
PROBLEM_JSON = "application/problem+json"
DELIVERED_EVENT = "helpdesk.ticket.answer_delivered.v1"


@pytest.fixture(scope="module")
async def intake(make_service: Any) -> AsyncIterator[ServiceHarness]:
    async with make_service(
        "intake", IntakeSettings, create_app, label="delivery-retries", delivery_poll_seconds=3600
    ) as harness:
        yield harness


def settings_of(intake: ServiceHarness, **overrides: Any) -> IntakeSettings:
    settings = intake.runtime.settings
    assert isinstance(settings, IntakeSettings)
    return settings.model_copy(update=overrides) if overrides else settings


class Sender:
    """A channel: accepts every answer, or fails each with `error`, running `during` while it sends
    (with `only`, fails and runs `during` for that delivery alone: other tests' leftovers pass)."""

    def __init__(
        self,
        error: DeliveryError | None = None,
        during: Callable[[OutboundAnswer], Awaitable[None]] | None = None,
        only: uuid.UUID | None = None,
    ) -> None:
        self.sent: list[OutboundAnswer] = []
        self._error, self._during, self._only = error, during, only

    async def send(self, answer: OutboundAnswer) -> None:
        if self._only is None or answer.delivery_id == self._only:
            if self._during is not None:
                await self._during(answer)
            if self._error is not None:
                raise self._error
        self.sent.append(answer)


async def one_pass(intake: ServiceHarness, sender: Any, settings: IntakeSettings | None = None) -> int:
    return await deliver_due(intake.runtime.uow, sender, settings or settings_of(intake))


async def deliveries_of(intake: ServiceHarness, ticket_id: str) -> list[Delivery]:
    async with intake.uow() as uow:
        rows = list(
            (
                await uow.session.scalars(
                    select(Delivery)
                    .where(Delivery.ticket_id == uuid.UUID(ticket_id))
                    .order_by(Delivery.answer_version, Delivery.created_at)
                )
            ).all()
        )
        uow.session.expunge_all()  # read as they are now, after the unit of work ends
    return rows


async def set_delivery(intake: ServiceHarness, delivery_id: uuid.UUID, **values: Any) -> None:
    async with intake.uow() as uow:
        await uow.session.execute(update(Delivery).where(Delivery.id == delivery_id).values(**values))
        await uow.commit()


async def timeline_kinds(intake: ServiceHarness, ticket_id: str, kind: str) -> list[TimelineEntry]:
    async with intake.uow() as uow:
        entries = list(
            (
                await uow.session.scalars(
                    select(TimelineEntry)
                    .where(TimelineEntry.ticket_id == uuid.UUID(ticket_id), TimelineEntry.kind == kind)
                    .order_by(TimelineEntry.seq)
                )
            ).all()
        )
        uow.session.expunge_all()
    return entries


async def delivered_events(intake: ServiceHarness, ticket_id: str) -> list[dict[str, Any]]:
    async with intake.uow() as uow:
        rows = await uow.session.execute(
            select(OUTBOX.c.payload)
            .where(OUTBOX.c.key == ticket_id, OUTBOX.c.event_type == "helpdesk.ticket.answer_delivered.v1")
            .order_by(OUTBOX.c.seq)
        )
    return [r.payload["data"] for r in rows]


async def ticket_with_answer(intake: ServiceHarness, channel: str = "app") -> tuple[str, Delivery]:
    ticket_id = await post_ticket(intake, channel=channel, subject="保單借款", description="可以借多少？")
    await assign(intake, ticket_id)
    assert await publish_answer(intake, ticket_id)
    [row] = await deliveries_of(intake, ticket_id)
    return ticket_id, row


# ---- 1. retried by age, not by count -------------------------------------------------------------


async def test_a_delivery_keeps_retrying_at_the_capped_pace_until_its_give_up_age(
    intake: ServiceHarness,
) -> None:
    # A callback down for a 20-minute deploy: 10 attempts 2 s doubling gave up after ~17 minutes.
    ticket_id, row = await ticket_with_answer(intake)
    failing = Sender(error=DeliveryError("webhook answered 503"), only=row.id)

    for attempts in (30, 500):  # well past the old cap; 2 ** 499 s would overflow a timedelta
        await set_delivery(intake, row.id, attempts=attempts, next_attempt_at=datetime.now(UTC))
        assert await one_pass(intake, failing) >= 1
        [row] = await deliveries_of(intake, ticket_id)
        assert (row.status, row.attempts) == ("pending", attempts + 1)
        pause = row.next_attempt_at - datetime.now(UTC)
        assert timedelta(minutes=9) < pause <= timedelta(minutes=10)  # the cap, not more
        assert row.last_error == "webhook answered 503"
        assert row.claim_token is None
    assert await timeline_kinds(intake, ticket_id, "delivery_failed") == []

    # Pending for longer than the give-up age: the next failure marks it failed, on the timeline.
    three_days_ago = datetime.now(UTC) - timedelta(seconds=259_200, minutes=1)
    await set_delivery(intake, row.id, pending_since=three_days_ago, next_attempt_at=datetime.now(UTC))
    await one_pass(intake, failing)
    [row] = await deliveries_of(intake, ticket_id)
    assert row.status == "failed"
    [failed] = await timeline_kinds(intake, ticket_id, "delivery_failed")
    assert failed.data["reason"] == "gave_up" and failed.data["error"] == "webhook answered 503"
    assert failed.data["delivery_id"] == str(row.id)


async def test_rows_from_before_the_give_up_age_count_from_their_creation(intake: ServiceHarness) -> None:
    ticket_id, row = await ticket_with_answer(intake)
    old = datetime.now(UTC) - timedelta(days=4)
    await set_delivery(intake, row.id, pending_since=None, created_at=old, next_attempt_at=datetime.now(UTC))
    await one_pass(intake, Sender(error=DeliveryError("webhook answered 502"), only=row.id))
    [row] = await deliveries_of(intake, ticket_id)
    assert row.status == "failed"


# ---- 1. a failed delivery retried by a lead; deliveries seen through the API ----------------------


async def test_a_lead_retries_a_failed_delivery_and_staff_see_where_deliveries_stand(
    intake: ServiceHarness,
) -> None:
    ticket_id, row = await ticket_with_answer(intake)
    await one_pass(intake, Sender(error=DeliveryError("webhook answered 410", permanent=True), only=row.id))
    base = f"/v1/tickets/{ticket_id}/deliveries"

    listed = await intake.client.get(base, headers=AGENT)
    assert listed.status_code == 200, listed.text
    [item] = listed.json()
    assert item["id"] == str(row.id)
    assert (item["status"], item["attempts"], item["last_error"]) == ("failed", 1, "webhook answered 410")
    assert item["next_attempt_at"] is None and item["delivered_at"] is None
    assert item["answer_version"] == 1 and item["channel"] == "app"
    for reader in ("reviewer", "admin"):
        assert (await intake.client.get(base, headers=auth_headers(reader))).status_code == 200
    refused = await intake.client.get(base, headers=auth_headers("channel"))
    assert refused.status_code == 403 and refused.headers["content-type"].startswith(PROBLEM_JSON)
    unknown_ticket = await intake.client.get(f"/v1/tickets/{uuid.uuid4()}/deliveries", headers=AGENT)
    assert unknown_ticket.status_code == 404

    retry = f"{base}/{row.id}/retry"
    for role in ("agent", "reviewer", "channel", "kb_editor", "ops"):
        forbidden = await intake.client.post(retry, headers=auth_headers(role))
        assert forbidden.status_code == 403, role
    other_ticket, other = await ticket_with_answer(intake)
    for path in (
        f"{base}/{uuid.uuid4()}/retry",  # unknown delivery
        f"{base}/{other.id}/retry",  # another ticket's
        f"/v1/tickets/{other_ticket}/deliveries/{row.id}/retry",  # this one, under another ticket
    ):
        missing = await intake.client.post(path, headers=LEAD)
        assert missing.status_code == 404, path
        assert missing.headers["content-type"].startswith(PROBLEM_JSON)
        assert missing.json()["type"].endswith("/delivery-not-found")
    no_ticket = await intake.client.post(
        f"/v1/tickets/{uuid.uuid4()}/deliveries/{row.id}/retry", headers=LEAD
    )
    assert no_ticket.status_code == 404 and no_ticket.json()["type"].endswith("/ticket-not-found")

    lead_id = str(uuid.uuid4())
    retried = await intake.client.post(retry, headers=auth_headers("lead", sub=lead_id))
    assert retried.status_code == 202, retried.text
    body = retried.json()
    assert (body["status"], body["attempts"]) == ("pending", 0)
    assert datetime.fromisoformat(body["next_attempt_at"]) <= datetime.now(UTC)
    [entry] = await timeline_kinds(intake, ticket_id, "delivery_retried")
    assert entry.actor == lead_id and entry.data["previous_attempts"] == 1
    assert entry.data["delivery_id"] == str(row.id)

    again = await intake.client.post(retry, headers=LEAD)  # pending: nothing to retry
    assert again.status_code == 409 and again.headers["content-type"].startswith(PROBLEM_JSON)
    assert again.json()["type"].endswith("/delivery-not-failed") and again.json()["status"] == "pending"

    # Due at once: the next pass sends it; the ticket is answered; delivered is not retried either.
    accepting = Sender()
    await one_pass(intake, accepting)
    assert str(row.id) in {str(a.delivery_id) for a in accepting.sent}
    [item] = (await intake.client.get(base, headers=LEAD)).json()
    assert (item["status"], item["attempts"], item["next_attempt_at"]) == ("delivered", 1, None)
    assert item["delivered_at"] is not None
    assert (await intake.client.post(retry, headers=LEAD)).status_code == 409
    assert len(await delivered_events(intake, ticket_id)) == 1


async def test_a_retried_delivery_gets_a_fresh_give_up_age(intake: ServiceHarness) -> None:
    ticket_id, row = await ticket_with_answer(intake)
    four_days_ago = datetime.now(UTC) - timedelta(days=4)
    await set_delivery(intake, row.id, pending_since=four_days_ago, created_at=four_days_ago)
    await one_pass(intake, Sender(error=DeliveryError("webhook answered 503"), only=row.id))
    [row] = await deliveries_of(intake, ticket_id)
    assert row.status == "failed"

    assert (
        await intake.client.post(f"/v1/tickets/{ticket_id}/deliveries/{row.id}/retry", headers=LEAD)
    ).status_code == 202
    await one_pass(intake, Sender(error=DeliveryError("webhook answered 503"), only=row.id))
    [row] = await deliveries_of(intake, ticket_id)
    assert (row.status, row.attempts) == ("pending", 1)  # retried again later, not failed at once


# ---- 2. two workers never send one answer twice ---------------------------------------------------


class SlowReceiver:
    """A channel's webhook that takes `delay` seconds to accept each post; counts deliveries."""

    def __init__(self, delay: float) -> None:
        self.accepted: Counter[str] = Counter()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                with receiver._lock:
                    receiver.accepted[self.headers["Idempotency-Key"]] += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/answers"


@pytest.fixture
def slow_receiver() -> Iterator[SlowReceiver]:
    receiver = SlowReceiver(delay=0.4)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


async def test_two_workers_on_a_slow_receiver_send_each_answer_once(
    intake: ServiceHarness, slow_receiver: SlowReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Claims short enough for a test (2 s), sends slow (0.4 s each): eight sends take longer than
    # one claim, as ten 15-second sends took longer than the 60-second claim of a batch.
    monkeypatch.setattr(delivery_module, "_MIN_CLAIM_SECONDS", 0.0)
    settings = settings_of(intake, delivery_timeout_seconds=0.5, channel_callbacks={"app": slow_receiver.url})
    ticket_id = await post_ticket(intake, channel="app", subject="理賠進度", description="請問進度？")
    await assign(intake, ticket_id)
    for version in range(1, 9):
        assert await publish_answer(intake, ticket_id, version=version)
    mine = {str(row.id) for row in await deliveries_of(intake, ticket_id)}

    async with httpx.AsyncClient() as client:
        sender = ChannelSender(SmtpSender(settings), WebhookSender(settings, client))

        async def first_worker() -> None:
            await deliver_due(intake.runtime.uow, sender, settings)

        async def second_worker() -> None:  # another replica, polling all along
            deadline = asyncio.get_running_loop().time() + 8
            while asyncio.get_running_loop().time() < deadline:
                await deliver_due(intake.runtime.uow, sender, settings)
                if {row.status for row in await deliveries_of(intake, ticket_id)} == {"delivered"}:
                    return
                await asyncio.sleep(0.05)

        await asyncio.gather(first_worker(), second_worker())

    assert {key: n for key, n in slow_receiver.accepted.items() if key in mine} == dict.fromkeys(mine, 1)
    rows = await deliveries_of(intake, ticket_id)
    assert [(r.status, r.attempts) for r in rows] == [("delivered", 1)] * 8
    events = await delivered_events(intake, ticket_id)
    assert len(events) == 8 and sorted(e["first_response"] for e in events) == [False] * 7 + [True]


async def test_a_late_failure_of_a_claim_taken_over_changes_nothing(intake: ServiceHarness) -> None:
    # The first worker's claim runs out mid-send; another worker takes the delivery over and
    # delivers it; then the first one's send fails. Its outcome is not recorded: the answer stays
    # delivered (it was overwritten with "failed").
    ticket_id, row = await ticket_with_answer(intake)
    second = Sender()

    async def claim_runs_out_and_another_worker_delivers(_: OutboundAnswer) -> None:
        await set_delivery(intake, row.id, next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        assert await one_pass(intake, second) >= 1

    first = Sender(
        error=DeliveryError("webhook answered 410", permanent=True),
        during=claim_runs_out_and_another_worker_delivers,
        only=row.id,
    )
    await one_pass(intake, first)

    assert [a.delivery_id for a in second.sent if a.delivery_id == row.id] == [row.id]
    [row] = await deliveries_of(intake, ticket_id)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 2, None)
    assert await timeline_kinds(intake, ticket_id, "delivery_failed") == []
    assert len(await delivered_events(intake, ticket_id)) == 1
    ticket = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    assert ticket["status"] == "answered"


async def test_a_claim_that_ran_out_before_the_send_is_not_sent(
    intake: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading the answer took most of the claim (1 s here): another worker may hold it by the time
    # the send would end, so it is left for the next claim.
    monkeypatch.setattr(delivery_module, "_MIN_CLAIM_SECONDS", 0.0)
    settings = settings_of(intake, delivery_timeout_seconds=0.25)
    ticket_id, row = await ticket_with_answer(intake)
    outbound = delivery_module._outbound

    async def slow_outbound(uow: Any, delivery: Delivery) -> OutboundAnswer:
        await asyncio.sleep(0.6)
        return await outbound(uow, delivery)

    monkeypatch.setattr(delivery_module, "_outbound", slow_outbound)
    sender = Sender()
    await one_pass(intake, sender, settings)
    assert row.id not in {a.delivery_id for a in sender.sent}
    [row] = await deliveries_of(intake, ticket_id)
    # Due again once its claim has run out (the pass may have claimed it more than once: the
    # module's other answers left pending keep it busy past that moment, each read as slow).
    assert row.status == "pending" and row.attempts >= 1
    assert row.next_attempt_at == row.claimed_until


# ---- 3. an answer that cannot be built fails at once ---------------------------------------------


async def test_an_email_that_cannot_be_composed_fails_at_once_with_its_reason(intake: ServiceHarness) -> None:
    ticket_id = await post_ticket(
        intake,
        channel="email",
        subject="地址變更",
        description="請更新",
        customer={"external_id": f"mail-{uuid.uuid4()}", "email": "chen@example.com"},
    )
    await assign(intake, ticket_id)
    async with intake.uow() as uow:  # stored before addresses were checked, say
        customer_id = await uow.session.scalar(
            select(Ticket.customer_id).where(Ticket.id == uuid.UUID(ticket_id))
        )
        await uow.session.execute(
            update(Customer).where(Customer.id == customer_id).values(email="chen@example.com\nBcc: x@y.z")
        )
        await uow.commit()
    assert await publish_answer(intake, ticket_id)

    settings = settings_of(intake)  # its SMTP server is not running: nothing may be tried
    await one_pass(intake, SmtpSender(settings))

    [row] = await deliveries_of(intake, ticket_id)
    assert (row.status, row.attempts) == ("failed", 1)
    [failed] = await timeline_kinds(intake, ticket_id, "delivery_failed")
    assert failed.data["reason"] == "permanent" and "could not be composed" in failed.data["error"]


# ---- 5. one delivery per answer version -----------------------------------------------------------


async def test_the_same_answer_version_published_again_changes_nothing(intake: ServiceHarness) -> None:
    ticket_id = await post_ticket(intake, channel="app", subject="退保", description="如何退保？")
    await assign(intake, ticket_id)
    answer_id = uuid.uuid4()

    assert await publish_answer(intake, ticket_id, answer_id=answer_id)
    assert await publish_answer(intake, ticket_id, answer_id=answer_id)  # a new event id, the same version

    async def counts() -> tuple[int, int, int]:
        async with intake.uow() as uow:
            ticket = uuid.UUID(ticket_id)
            return (
                await uow.session.scalar(select(func.count()).where(Delivery.ticket_id == ticket)) or 0,
                await uow.session.scalar(
                    select(func.count()).where(Message.ticket_id == ticket, Message.direction == "outbound")
                )
                or 0,
                len(await timeline_kinds(intake, ticket_id, "answer_published")),
            )

    assert await counts() == (1, 1, 1)
    sender = Sender()
    await one_pass(intake, sender)
    assert await publish_answer(intake, ticket_id, answer_id=answer_id)  # again, after it was delivered
    await one_pass(intake, sender)
    assert await counts() == (1, 1, 1)
    assert [a.answer_version for a in sender.sent if a.answer_id == answer_id] == [1]
    assert len(await delivered_events(intake, ticket_id)) == 1

    assert await publish_answer(intake, ticket_id, answer_id=answer_id, version=2)  # a new version is new
    assert (await counts())[0] == 2


# ---- 7. a delivered answer makes the ticket answered, whatever the mirror lagged at ---------------


@pytest.mark.parametrize("assigned", [False, True])
async def test_a_delivery_answers_a_ticket_whose_mirrored_status_lags(
    intake: ServiceHarness, assigned: bool
) -> None:
    # Review's events and routing's come on different topics: the answer may be delivered while
    # intake still shows the ticket new or assigned.
    ticket_id = await post_ticket(intake, channel="app", subject="保費", description="保費怎麼算？")
    if assigned:
        await assign(intake, ticket_id)
    assert await publish_answer(intake, ticket_id)
    await one_pass(intake, Sender())

    ticket = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    assert ticket["status"] == "answered"
    [change] = [
        e for e in await timeline_kinds(intake, ticket_id, "status_changed") if e.data.get("to") == "answered"
    ]
    assert change.data["from"] == ("assigned" if assigned else "new") and change.actor == "intake"


def test_only_open_tickets_become_answered_by_a_delivery() -> None:
    for status in (S.NEW, S.ASSIGNED, S.IN_PROGRESS, S.AWAITING_REVIEW, S.ANSWERED):
        assert status_after_delivery(status) == S.ANSWERED
    # A reopened ticket waits for an answer to the customer's newer message, not an older one's.
    for status in (S.REOPENED, S.RESOLVED, S.CLOSED):
        assert status_after_delivery(status) == status


# ---- 8. a follow-up the delivered answer never addressed reopens the ticket -----------------------


async def events_of(intake: ServiceHarness, ticket_id: str, event_type: str) -> list[dict[str, Any]]:
    async with intake.uow() as uow:
        rows = await uow.session.execute(
            select(OUTBOX.c.payload)
            .where(OUTBOX.c.key == ticket_id, OUTBOX.c.event_type == event_type)
            .order_by(OUTBOX.c.seq)
        )
    return [r.payload["data"] for r in rows]


async def submitted(intake: ServiceHarness, ticket_id: str, answer_id: uuid.UUID) -> None:
    await deliver(
        intake,
        AnswerSubmitted(
            ticket_id=uuid.UUID(ticket_id),
            answer_id=answer_id,
            answer_version=1,
            author_id=uuid.uuid4(),
            reviewer_id=uuid.uuid4(),
            submitted_at=datetime.now(UTC),
        ),
        service="review",
    )


async def customer_writes(intake: ServiceHarness, ticket_id: str) -> str:
    sent = await intake.client.post(
        f"/v1/tickets/{ticket_id}/messages", headers=CHANNEL, json={"body": "還有一個問題：利率多少？"}
    )
    assert sent.status_code == 201, sent.text
    message_id: str = sent.json()["id"]
    return message_id


REOPENED_EVENT = "helpdesk.ticket.reopened.v1"


async def test_a_follow_up_written_while_the_answer_was_in_review_reopens_the_ticket_on_delivery(
    intake: ServiceHarness,
) -> None:
    ticket_id = await post_ticket(intake, channel="app", subject="保單借款", description="可以借多少？")
    agent_id = await assign(intake, ticket_id)
    answer_id = uuid.uuid4()
    await submitted(intake, ticket_id, answer_id)
    follow_up = await customer_writes(intake, ticket_id)  # in review: no reopen yet
    assert (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()["status"] == (
        "awaiting_review"
    )
    assert await publish_answer(intake, ticket_id, answer_id=answer_id)
    await one_pass(intake, Sender())

    ticket = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    assert ticket["status"] == "reopened" and ticket["reopen_count"] == 1
    [delivered] = await delivered_events(intake, ticket_id)  # the first response still happened
    assert delivered["first_response"] is True
    [reopened] = await events_of(intake, ticket_id, REOPENED_EVENT)
    assert reopened["message_id"] == follow_up and reopened["previous_status"] == "awaiting_review"
    assert reopened["reopen_count"] == 1 and reopened["previous_agent_id"] == str(agent_id)
    # Routing sees the answer delivered (slot freed, clock paused), then the reopening.
    async with intake.uow() as uow:
        order = (
            await uow.session.scalars(
                select(OUTBOX.c.event_type)
                .where(OUTBOX.c.key == ticket_id, OUTBOX.c.event_type.in_([REOPENED_EVENT, DELIVERED_EVENT]))
                .order_by(OUTBOX.c.seq)
            )
        ).all()
    assert order == [DELIVERED_EVENT, REOPENED_EVENT]
    [change] = [
        e for e in await timeline_kinds(intake, ticket_id, "status_changed") if e.data["to"] == "reopened"
    ]
    assert change.data["from"] == "awaiting_review"


async def test_a_late_old_answer_keeps_a_reopened_ticket_reopened(intake: ServiceHarness) -> None:
    # Answer v1 is delivered, the customer writes (reopened); an old answer, stuck retrying since
    # before that message, is delivered late: it never addressed the message.
    ticket_id = await post_ticket(intake, channel="app", subject="保單借款", description="可以借多少？")
    await assign(intake, ticket_id)
    assert await publish_answer(intake, ticket_id, version=1)
    old = uuid.uuid4()
    assert await publish_answer(intake, ticket_id, answer_id=old, version=1)
    [first, late] = await deliveries_of(intake, ticket_id)
    if late.answer_id != old:
        first, late = late, first
    await set_delivery(intake, late.id, next_attempt_at=datetime.now(UTC) + timedelta(hours=1))
    await one_pass(intake, Sender())
    await customer_writes(intake, ticket_id)
    assert (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()["status"] == "reopened"

    await set_delivery(intake, late.id, next_attempt_at=datetime.now(UTC))
    await one_pass(intake, Sender())
    [row] = [r for r in await deliveries_of(intake, ticket_id) if r.id == late.id]
    assert row.status == "delivered"
    ticket = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    assert ticket["status"] == "reopened"
    assert len(await delivered_events(intake, ticket_id)) == 2
    # The late delivery freed the slot in routing: the reopening takes it again.
    reopenings = await events_of(intake, ticket_id, REOPENED_EVENT)
    assert [e["reopen_count"] for e in reopenings] == [1, 2]
    assert reopenings[1]["previous_status"] == "reopened"


async def test_a_follow_up_answered_by_a_newer_delivered_answer_does_not_reopen(
    intake: ServiceHarness,
) -> None:
    ticket_id = await post_ticket(intake, channel="app", subject="保單借款", description="可以借多少？")
    await assign(intake, ticket_id)
    answer_id = uuid.uuid4()
    await submitted(intake, ticket_id, answer_id)
    await customer_writes(intake, ticket_id)
    assert await publish_answer(intake, ticket_id, answer_id=answer_id)
    assert await publish_answer(intake, ticket_id, answer_id=answer_id, version=2)  # written after it
    # v2 first, then v1: once v2 is delivered the follow-up is answered, v1 changes nothing.
    [v1, _v2] = await deliveries_of(intake, ticket_id)
    await set_delivery(intake, v1.id, next_attempt_at=datetime.now(UTC) + timedelta(hours=1))
    await one_pass(intake, Sender())
    await set_delivery(intake, v1.id, next_attempt_at=datetime.now(UTC))
    await one_pass(intake, Sender())
    ticket = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    assert ticket["status"] == "answered" and ticket["reopen_count"] == 0
    assert await events_of(intake, ticket_id, REOPENED_EVENT) == []


# ---- 9. nothing is sent to a closed ticket ---------------------------------------------------------


async def close_ticket(intake: ServiceHarness, ticket_id: str) -> None:
    closed = await intake.client.post(
        f"/v1/tickets/{ticket_id}/close", headers=LEAD, json={"reason": "duplicate"}
    )
    assert closed.status_code == 200, closed.text


async def test_a_delivery_retrying_when_the_ticket_is_closed_is_not_sent(intake: ServiceHarness) -> None:
    ticket_id, row = await ticket_with_answer(intake)
    await one_pass(intake, Sender(error=DeliveryError("webhook answered 503"), only=row.id))
    await close_ticket(intake, ticket_id)
    await set_delivery(intake, row.id, next_attempt_at=datetime.now(UTC))

    sender = Sender()
    await one_pass(intake, sender)
    assert row.id not in {a.delivery_id for a in sender.sent}
    [row] = await deliveries_of(intake, ticket_id)
    assert row.status == "failed" and row.claim_token is None
    [entry] = await timeline_kinds(intake, ticket_id, "answer_not_delivered")
    assert entry.data["reason"] == "ticket_closed" and entry.data["answer_id"] == str(row.answer_id)
    assert await delivered_events(intake, ticket_id) == []
    assert (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()["status"] == "closed"


async def test_a_lead_cannot_retry_a_delivery_of_a_closed_ticket(intake: ServiceHarness) -> None:
    ticket_id, row = await ticket_with_answer(intake)
    await one_pass(intake, Sender(error=DeliveryError("webhook answered 410", permanent=True), only=row.id))
    await close_ticket(intake, ticket_id)
    retried = await intake.client.post(f"/v1/tickets/{ticket_id}/deliveries/{row.id}/retry", headers=LEAD)
    assert retried.status_code == 409 and retried.headers["content-type"].startswith(PROBLEM_JSON)
    assert retried.json()["type"].endswith("/ticket-closed")
    [row] = await deliveries_of(intake, ticket_id)
    assert row.status == "failed"


# ---- 10. timeline entries of deliveries are written under the ticket's lock ------------------------


async def test_a_failure_and_a_retry_take_their_timeline_seq_under_the_tickets_lock(
    intake: ServiceHarness,
) -> None:
    # A client pages the timeline by `seq`: an entry must not take a lower seq than one committed
    # before it. Another writer holds the ticket and writes an entry meanwhile: the delivery's
    # entries come after it (formerly they took their seq first and waited only for the commit).
    ticket_id, row = await ticket_with_answer(intake)

    async def meanwhile(start: Callable[[], Awaitable[Any]]) -> Any:
        async with intake.uow() as holder:
            await load_ticket(holder, uuid.UUID(ticket_id), for_update=True)
            task = asyncio.create_task(start())
            await asyncio.sleep(0.5)
            assert not task.done()
            await TicketRepository(holder.session).add_timeline(
                uuid.UUID(ticket_id), "note", at=datetime.now(UTC), actor="lead"
            )
            await holder.commit()
        return await task

    failing = Sender(error=DeliveryError("webhook answered 410", permanent=True), only=row.id)
    await meanwhile(lambda: one_pass(intake, failing))
    retried = await meanwhile(
        lambda: intake.client.post(f"/v1/tickets/{ticket_id}/deliveries/{row.id}/retry", headers=LEAD)
    )
    assert retried.status_code == 202, retried.text
    [first_note, second_note] = await timeline_kinds(intake, ticket_id, "note")
    [failed] = await timeline_kinds(intake, ticket_id, "delivery_failed")
    [retry] = await timeline_kinds(intake, ticket_id, "delivery_retried")
    assert first_note.seq < failed.seq < second_note.seq < retry.seq
