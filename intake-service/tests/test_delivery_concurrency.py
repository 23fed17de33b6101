"""A dead callback does not hold up every other answer: a pass runs several attempts at once, each
on a delivery of its own (never one twice, even with two replicas' passes at once), and fresh
answers are claimed before retries. Deliveries carry the trace of the `answer.published` event on:
to the webhook receiver and onto the events the delivery publishes.

A real HTTP receiver hangs (past the send timeout, kept short here) for one channel's URL and
accepts at once for another; the worker's passes are driven by the tests."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from intake_factories import assign, post_ticket, publish_answer
from sqlalchemy import select, update

from helpdesk_runtime.testing import ServiceHarness
from helpdesk_shared.chassis.db import OUTBOX
from intake_service.app import create_app
from intake_service.channels import WebhookSender
from intake_service.delivery import deliver_due
from intake_service.models import Delivery
from intake_service.settings import IntakeSettings

TIMEOUT = 0.5  # the send timeout: a hung receiver costs an attempt this long
HANG = 3 * TIMEOUT  # how long the hung receiver sleeps before it answers (nobody waits for it)


class Receiver:
    """Webhooks: `/hang` sleeps past the timeout, `/ok` accepts at once; counts posts per delivery
    (their Idempotency-Key) and keeps the headers of those accepted."""

    def __init__(self) -> None:
        self.posts: Counter[str] = Counter()
        self.accepted: dict[str, dict[str, str]] = {}
        self.started: dict[str, float] = {}  # when each delivery's (last) post came in
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.hang_url, self.ok_url = f"{base}/hang", f"{base}/ok"

    def hung_posts(self, delivery_ids: set[uuid.UUID]) -> int:
        with self._lock:
            return sum(self.posts[str(d)] for d in delivery_ids)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers.get("Idempotency-Key", "")
                with receiver._lock:
                    receiver.posts[key] += 1
                    receiver.started[key] = time.monotonic()
                    if self.path == "/ok":
                        receiver.accepted[key] = dict(self.headers)
                if self.path == "/hang":
                    time.sleep(HANG)
                try:
                    self.send_response(200 if self.path == "/ok" else 503)
                    self.end_headers()
                except OSError:
                    pass  # the sender stopped waiting long ago

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture(scope="module")
async def intake(make_service: Any, receiver: Receiver) -> AsyncIterator[ServiceHarness]:
    async with make_service(
        "intake",
        IntakeSettings,
        create_app,
        label="delivery-concurrency",
        delivery_poll_seconds=3600,
        channel_callbacks={"chat": receiver.hang_url, "app": receiver.ok_url},
    ) as harness:
        yield harness


def settings_of(intake: ServiceHarness, **overrides: Any) -> IntakeSettings:
    settings = intake.runtime.settings
    assert isinstance(settings, IntakeSettings)
    return settings.model_copy(update={"delivery_timeout_seconds": TIMEOUT, **overrides})


async def one_pass(intake: ServiceHarness, settings: IntakeSettings) -> int:
    async with httpx.AsyncClient() as client:
        claimed: int = await deliver_due(intake.runtime.uow, WebhookSender(settings, client), settings)
    return claimed


async def answered_ticket(
    intake: ServiceHarness, channel: str, *, traceparent: str | None = None
) -> uuid.UUID:
    """A ticket on `channel` with an answer published; returns its delivery's id."""
    ticket_id = await post_ticket(intake, channel=channel, subject="App 閃退", description="更新後一直閃退")
    await assign(intake, ticket_id)
    assert await publish_answer(intake, ticket_id, "請先清除快取後重新登入。", traceparent=traceparent)
    async with intake.uow() as uow:
        delivery_id: uuid.UUID = (
            await uow.session.scalars(select(Delivery.id).where(Delivery.ticket_id == uuid.UUID(ticket_id)))
        ).one()
    return delivery_id


async def deliveries(intake: ServiceHarness, ids: set[uuid.UUID]) -> list[Delivery]:
    async with intake.uow() as uow:
        rows = list((await uow.session.scalars(select(Delivery).where(Delivery.id.in_(ids)))).all())
        uow.session.expunge_all()
    return rows


async def set_deliveries(intake: ServiceHarness, ids: set[uuid.UUID], **values: Any) -> None:
    async with intake.uow() as uow:
        await uow.session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(**values))
        await uow.commit()


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_backlog_of_retries_to_a_dead_webhook_does_not_hold_up_a_fresh_answer(
    intake: ServiceHarness, receiver: Receiver
) -> None:
    # A dead webhook with answers overdue for their retries, more of them than the pass runs at once.
    hung = {await answered_ticket(intake, "chat") for _ in range(12)}
    await set_deliveries(intake, hung, attempts=3, next_attempt_at=datetime.now(UTC) - timedelta(hours=1))
    settings = settings_of(intake, delivery_concurrency=4)

    passing = asyncio.create_task(one_pass(intake, settings))
    try:
        # Every slot the pass has waits on the dead webhook; then a fresh answer to a working channel.
        await until(lambda: receiver.hung_posts(hung) >= 1)
        await asyncio.sleep(0.05)
        started = time.monotonic()
        fresh = await answered_ticket(intake, "app")

        await until(lambda: receiver.posts[str(fresh)] >= 1)
        waited = time.monotonic() - started
        # It waits for a slot, at most about one send timeout, not for the whole backlog (12 x 0.5 s).
        assert waited < 2 * TIMEOUT, waited
        assert await passing == 13
    finally:
        await passing
        await set_deliveries(intake, hung, status="failed")  # not due again for the other tests

    assert receiver.posts[str(fresh)] == 1
    assert [receiver.posts[str(d)] for d in hung] == [1] * 12  # each attempted once, none twice
    rows = {row.id: row for row in await deliveries(intake, hung | {fresh})}
    assert (rows[fresh].status, rows[fresh].attempts) == ("delivered", 1)
    assert {(rows[d].attempts, rows[d].last_error) for d in hung} == {(4, "webhook: ReadTimeout('')")}


async def test_attempts_run_at_once_and_no_delivery_is_sent_twice(
    intake: ServiceHarness, receiver: Receiver
) -> None:
    hung = {await answered_ticket(intake, "chat") for _ in range(6)}
    working = {await answered_ticket(intake, "app") for _ in range(20)}
    settings = settings_of(intake, delivery_concurrency=8)

    try:
        # Two replicas' passes at once, eight attempts each.
        claimed = await asyncio.gather(one_pass(intake, settings), one_pass(intake, settings))
        assert sum(claimed) == 26
        assert await one_pass(intake, settings) == 0  # nothing due again yet
    finally:
        await set_deliveries(intake, hung, status="failed")

    # The six hung sends overlapped (one after another, each would start a timeout after the last).
    hung_started = [receiver.started[str(d)] for d in hung]
    assert max(hung_started) - min(hung_started) < TIMEOUT
    assert {receiver.posts[str(d)] for d in hung | working} == {1}
    rows = await deliveries(intake, hung | working)
    assert {(row.status, row.attempts) for row in rows if row.id in working} == {("delivered", 1)}
    assert {row.attempts for row in rows if row.id in hung} == {1}


# ---- the answer.published event's trace goes on with its delivery -----------------------------------


async def test_the_delivery_carries_the_published_answers_trace_on(
    intake: ServiceHarness, receiver: Receiver
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    delivery_id = await answered_ticket(intake, "app", traceparent=f"00-{trace_id}-{parent_id}-01")

    assert await one_pass(intake, settings_of(intake)) == 1

    [row] = await deliveries(intake, {delivery_id})
    async with intake.uow() as uow:
        delivered = (
            await uow.session.execute(
                select(OUTBOX.c.headers, OUTBOX.c.payload).where(
                    OUTBOX.c.key == str(row.ticket_id),
                    OUTBOX.c.event_type == "helpdesk.ticket.answer_delivered.v1",
                )
            )
        ).one()
    traceparent = delivered.payload["traceparent"]
    assert traceparent is not None and traceparent.split("-")[1] == trace_id
    assert delivered.headers["traceparent"] == traceparent
    # The integration gets it too, as a child of ours: the worker's attempt is a span of its own.
    sent = receiver.accepted[str(delivery_id)]["traceparent"]
    assert sent.split("-")[1] == trace_id and sent.split("-")[2] != parent_id
    assert row.traceparent is not None and row.traceparent.split("-")[1] == trace_id
