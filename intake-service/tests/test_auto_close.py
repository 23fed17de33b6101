"""Auto-close: tickets answered or resolved N days ago with no customer reply since are closed once,
by the system, whatever the number of workers; anything newer, reopened or still in work stays."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from intake_factories import CHANNEL, assign, post_ticket
from sqlalchemy import select, update

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from intake_service.app import create_app
from intake_service.autoclose import close_idle
from intake_service.models import Delivery, Message, Ticket
from intake_service.settings import IntakeSettings

LEAD = auth_headers("lead")
DAYS = 3
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01")


@pytest.fixture(scope="module")
async def idle(make_service: Any) -> AsyncIterator[ServiceHarness]:
    """Its own worker is off: these tests run the passes themselves."""
    async with make_service(
        "intake", IntakeSettings, create_app, label="autoclose", auto_close_after_days=0
    ) as harness:
        yield harness


async def new_ticket(intake: ServiceHarness) -> str:
    return await post_ticket(intake, kind="question", subject="保費扣款", description="本月保費扣了兩次")


async def backdate(intake: ServiceHarness, ticket_id: str, status: str, days_ago: float) -> None:
    """The ticket has been in `status` for `days_ago` days (as the delivery worker or a resolve left it)."""
    async with intake.uow() as uow:
        await uow.session.execute(
            update(Ticket)
            .where(Ticket.id == uuid.UUID(ticket_id))
            .values(status=status, status_changed_at=datetime.now(UTC) - timedelta(days=days_ago))
        )
        await uow.commit()


async def closed_events(intake: ServiceHarness, ticket_id: str) -> list[dict[str, Any]]:
    async with intake.uow() as uow:
        rows = await uow.session.execute(
            select(OUTBOX.c.payload)
            .where(OUTBOX.c.key == ticket_id, OUTBOX.c.event_type == "helpdesk.ticket.closed.v1")
            .order_by(OUTBOX.c.seq)
        )
    return [r.payload["data"] for r in rows]


async def shown(intake: ServiceHarness, ticket_id: str) -> dict[str, Any]:
    result: dict[str, Any] = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    return result


async def test_an_answer_left_unanswered_for_n_days_closes_the_ticket(idle: ServiceHarness) -> None:
    ticket_id = await new_ticket(idle)
    await assign(idle, ticket_id)
    await backdate(idle, ticket_id, "answered", DAYS + 0.1)

    assert await close_idle(idle.runtime.uow, after_days=DAYS) == 1

    ticket = await shown(idle, ticket_id)
    assert ticket["status"] == "closed"
    assert ticket["closed_at"] is not None
    [event] = await closed_events(idle, ticket_id)
    assert event["reason"] == "auto_no_reply"
    assert event["previous_status"] == "answered"
    assert event["closed_by"] is None
    last = (await idle.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)).json()[-1]
    assert last["kind"] == "status_changed"
    assert last["actor"] == "intake"
    assert last["data"] == {"from": "answered", "to": "closed", "reason": "auto_no_reply", "after_days": DAYS}


async def test_a_resolution_left_alone_for_n_days_closes_the_ticket(idle: ServiceHarness) -> None:
    ticket_id = await new_ticket(idle)
    await assign(idle, ticket_id)
    assert (await idle.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=LEAD)).status_code == 200
    assert await close_idle(idle.runtime.uow, after_days=DAYS) == 0, "just resolved: not due yet"
    await backdate(idle, ticket_id, "resolved", DAYS + 0.1)

    assert await close_idle(idle.runtime.uow, after_days=DAYS) == 1

    [event] = await closed_events(idle, ticket_id)
    assert (event["reason"], event["previous_status"]) == ("auto_no_reply", "resolved")
    # Closing does not cut the satisfaction survey of that resolution short.
    link = (await idle.client.get(f"/v1/tickets/{ticket_id}/survey-link", headers=CHANNEL)).json()
    rated = await idle.client.post(
        f"/v1/tickets/{ticket_id}/satisfaction", json={"token": link["token"], "score": 4}
    )
    assert rated.status_code == 201, rated.text


async def test_recent_reopened_and_working_tickets_stay_open(idle: ServiceHarness) -> None:
    recent, working, reopened, new_answer, replied = [await new_ticket(idle) for _ in range(5)]
    for ticket_id in (recent, working, reopened, new_answer, replied):
        await assign(idle, ticket_id)
    await backdate(idle, recent, "answered", DAYS - 0.5)
    await backdate(idle, working, "in_progress", DAYS + 5)
    await backdate(idle, reopened, "reopened", DAYS + 5)
    await backdate(idle, new_answer, "answered", DAYS + 5)
    await backdate(idle, replied, "answered", DAYS + 5)
    now = datetime.now(UTC)
    async with idle.uow() as uow:
        # A second answer went out yesterday: the customer gets N days from that one.
        message_id = uuid.uuid4()
        uow.session.add(
            Message(
                id=message_id,
                ticket_id=uuid.UUID(new_answer),
                direction="outbound",
                author="agent",
                channel="web",
                body="補充說明",
                created_at=now - timedelta(days=1),
            )
        )
        await uow.session.flush()
        uow.session.add(
            Delivery(
                id=uuid.uuid4(),
                ticket_id=uuid.UUID(new_answer),
                message_id=message_id,
                answer_id=uuid.uuid4(),
                answer_version=2,
                channel="web",
                status="delivered",
                attempts=1,
                next_attempt_at=now - timedelta(days=1),
                delivered_at=now - timedelta(days=1),
            )
        )
        # The customer wrote after the answer (however the ticket kept its status).
        uow.session.add(
            Message(
                id=uuid.uuid4(),
                ticket_id=uuid.UUID(replied),
                direction="inbound",
                author="customer",
                channel="web",
                body="還是不行",
                created_at=now - timedelta(days=DAYS + 1),
            )
        )
        await uow.commit()

    assert await close_idle(idle.runtime.uow, after_days=DAYS) == 0

    for ticket_id, status in (
        (recent, "answered"),
        (working, "in_progress"),
        (reopened, "reopened"),
        (new_answer, "answered"),
        (replied, "answered"),
    ):
        assert (await shown(idle, ticket_id))["status"] == status
        assert await closed_events(idle, ticket_id) == []


async def test_concurrent_and_repeated_passes_close_each_ticket_once(idle: ServiceHarness) -> None:
    due = [await new_ticket(idle) for _ in range(12)]
    for ticket_id in due:
        await backdate(idle, ticket_id, "answered", DAYS + 1)

    counts = list(
        await asyncio.gather(*(close_idle(idle.runtime.uow, after_days=DAYS, batch=5) for _ in range(4)))
    )
    while closed := await close_idle(idle.runtime.uow, after_days=DAYS, batch=5):
        counts.append(closed)

    # Every pass reports exactly what it closed: together, each due ticket once.
    assert sum(counts) == len(due)
    for ticket_id in due:
        assert (await shown(idle, ticket_id))["status"] == "closed"
        assert len(await closed_events(idle, ticket_id)) == 1
        timeline = (await idle.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)).json()
        assert [i["data"].get("to") for i in timeline].count("closed") == 1
    assert await close_idle(idle.runtime.uow, after_days=DAYS) == 0


async def test_each_auto_closed_ticket_starts_a_trace_of_its_own(idle: ServiceHarness) -> None:
    """A pass runs outside any request or event: each ticket it closes is a new trace, its
    `ticket.closed` carrying it in the envelope and as the record's header."""
    due = [await new_ticket(idle) for _ in range(2)]
    for ticket_id in due:
        await backdate(idle, ticket_id, "answered", DAYS + 1)

    assert await close_idle(idle.runtime.uow, after_days=DAYS) == 2

    trace_ids = set()
    for ticket_id in due:
        async with idle.uow() as uow:
            [row] = (
                await uow.session.execute(
                    select(OUTBOX.c.payload, OUTBOX.c.headers).where(
                        OUTBOX.c.key == ticket_id, OUTBOX.c.event_type == "helpdesk.ticket.closed.v1"
                    )
                )
            ).all()
        traceparent = row.payload["traceparent"]
        assert isinstance(traceparent, str) and TRACEPARENT.fullmatch(traceparent), traceparent
        assert row.headers["traceparent"] == traceparent
        trace_ids.add(traceparent.split("-")[1])
    assert len(trace_ids) == 2, "two tickets closed by one pass share a trace"


async def test_zero_days_disables_auto_close(idle: ServiceHarness) -> None:
    ticket_id = await new_ticket(idle)
    await backdate(idle, ticket_id, "answered", 400)

    assert await close_idle(idle.runtime.uow, after_days=0) == 0

    assert (await shown(idle, ticket_id))["status"] == "answered"
    await backdate(idle, ticket_id, "answered", 0)  # not due for the other tests of this module


@pytest.fixture(scope="module")
async def worker(make_service: Any) -> AsyncIterator[ServiceHarness]:
    async with make_service(
        "intake",
        IntakeSettings,
        create_app,
        label="autoclose_worker",
        auto_close_after_days=1,
        auto_close_poll_seconds=0.05,
    ) as harness:
        yield harness


async def test_the_background_worker_closes_due_tickets(worker: ServiceHarness) -> None:
    due, fresh = await new_ticket(worker), await new_ticket(worker)
    await backdate(worker, due, "answered", 1.5)
    await backdate(worker, fresh, "answered", 0.5)

    deadline = asyncio.get_running_loop().time() + 10
    while (await shown(worker, due))["status"] != "closed":
        assert asyncio.get_running_loop().time() < deadline, "the worker did not close the due ticket"
        await asyncio.sleep(0.05)

    assert len(await closed_events(worker, due)) == 1
    assert (await shown(worker, fresh))["status"] == "answered"


async def test_status_changes_restart_the_clock(worker: ServiceHarness) -> None:
    ticket_id = await new_ticket(worker)
    async with worker.uow() as uow:
        created = await uow.session.scalar(
            select(Ticket.status_changed_at).where(Ticket.id == uuid.UUID(ticket_id))
        )
    await assign(worker, ticket_id)
    async with worker.uow() as uow:
        assigned = await uow.session.scalar(
            select(Ticket.status_changed_at).where(Ticket.id == uuid.UUID(ticket_id))
        )
    assert created is not None and assigned is not None
    assert assigned > created
