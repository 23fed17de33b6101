"""The group-commit ticket writer: batches behave like one transaction per ticket would."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import asyncpg
import orjson
from sqlalchemy import func, select
from sqlalchemy import text as sa_text

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.chassis.problems import InvalidInput
from helpdesk_shared.chassis.trace_context import parse_traceparent
from helpdesk_shared.contracts import parse_event
from intake_service.models import ComplaintCase, Customer, Ticket, TimelineEntry
from intake_service.new_ticket import TicketDraft
from intake_service.schemas import TicketCreate
from intake_service.ticket_writer import TicketConflict, TicketStoreUnavailable, TicketWriter, _failure

CHANNEL = auth_headers("channel", sub="writer-test")


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "channel": "app",
        "kind": "question",
        "subject": "保費扣款失敗",
        "description": "這個月的保費沒有扣款成功，要怎麼補繳？",
        "customer": {"external_id": f"w-{uuid.uuid4()}"},
    }
    data.update(overrides)
    return data


def writer_of(intake: ServiceHarness) -> TicketWriter:
    writer: TicketWriter = intake.app.state.ticket_writer
    return writer


async def test_a_burst_of_posts_stores_every_ticket_with_its_rows_and_event(intake: ServiceHarness) -> None:
    external_id = f"burst-{uuid.uuid4()}"
    bodies = [
        body(
            subject=f"保費扣款失敗 {i}",
            kind="complaint" if i % 10 == 0 else "question",
            customer={"external_id": external_id, **({"name": f"客戶{i}"} if i == 39 else {})},
            attachments=[
                {"name": "a.pdf", "content_type": "application/pdf", "size_bytes": 10, "url": "https://x/a"}
            ]
            if i % 4 == 0
            else [],
        )
        for i in range(40)
    ]
    responses = await asyncio.gather(
        *(intake.client.post("/v1/tickets", json=b, headers=CHANNEL) for b in bodies)
    )
    assert [r.status_code for r in responses] == [201] * 40
    ids = [uuid.UUID(r.json()["id"]) for r in responses]
    numbers = {r.json()["number"] for r in responses}
    assert len(set(ids)) == len(numbers) == 40
    async with intake.uow() as uow:
        s = uow.session
        customers = (
            (await s.execute(select(Customer).where(Customer.external_id == external_id))).scalars().all()
        )
        assert len(customers) == 1 and customers[0].name == "客戶39"
        tickets = (await s.execute(select(Ticket).where(Ticket.id.in_(ids)))).scalars().all()
        assert {t.customer_id for t in tickets} == {customers[0].id}
        assert all(t.search_tokens for t in tickets)
        created = await s.scalar(
            select(func.count()).select_from(TimelineEntry).where(TimelineEntry.ticket_id.in_(ids))
        )
        cases = await s.scalar(
            select(func.count()).select_from(ComplaintCase).where(ComplaintCase.ticket_id.in_(ids))
        )
        events = (
            await s.execute(
                select(OUTBOX.c.event_type, OUTBOX.c.key).where(OUTBOX.c.key.in_([str(i) for i in ids]))
            )
        ).all()
    assert created == 40 and cases == 4
    assert sorted(e.event_type for e in events).count("helpdesk.ticket.created.v1") == 40
    assert [e.event_type for e in events].count("helpdesk.complaint.updated.v1") == 4
    attachments = await intake.client.get(f"/v1/tickets/{ids[0]}/attachments", headers=auth_headers("lead"))
    assert [a["name"] for a in attachments.json()] == ["a.pdf"]


_CUSTOMER_ROW = sa_text("SELECT id, name, email, xmin::text AS version FROM customers WHERE external_id = :x")


async def customer_row(intake: ServiceHarness, external_id: str) -> Any:
    """The customer's id, details and row version (`xmin` changes with every rewrite)."""
    async with intake.uow() as uow:
        return (
            await uow.session.execute(
                _CUSTOMER_ROW,
                {"x": external_id},
            )
        ).one()


async def test_a_returning_customer_keeps_their_row_unless_their_details_changed(
    intake: ServiceHarness,
) -> None:
    external_id = f"returning-{uuid.uuid4()}"
    customer = {"external_id": external_id, "name": "陳小姐", "email": "chen@example.com"}
    first = await intake.client.post("/v1/tickets", json=body(customer=customer), headers=CHANNEL)
    before = await customer_row(intake, external_id)

    same = await intake.client.post("/v1/tickets", json=body(customer=customer), headers=CHANNEL)
    unchanged = await customer_row(intake, external_id)
    assert unchanged == before  # not even rewritten with the same values
    moved = {**customer, "email": "chen@example.org"}
    changed = await intake.client.post("/v1/tickets", json=body(customer=moved), headers=CHANNEL)
    after = await customer_row(intake, external_id)

    assert [r.status_code for r in (first, same, changed)] == [201] * 3
    assert {r.json()["customer_id"] for r in (first, same, changed)} == {str(before.id)}
    assert (after.id, after.name, after.email) == (before.id, "陳小姐", "chen@example.org")
    assert after.version != before.version


async def test_a_returning_customers_ticket_is_not_held_up_by_a_change_to_their_row_in_progress(
    intake: ServiceHarness,
) -> None:
    """Only customers whose details change are locked by a batch: a ticket of a returning customer
    is stored while another transaction (an erasure, an edit) is changing their row."""
    external_id = f"busy-{uuid.uuid4()}"
    customer = {"external_id": external_id, "name": "王先生"}
    first = await intake.client.post("/v1/tickets", json=body(customer=customer), headers=CHANNEL)
    assert first.status_code == 201
    async with intake.uow() as uow:  # never committed: rolled back on the way out
        await uow.session.execute(
            sa_text("UPDATE customers SET phone = '+886 912 345 678' WHERE external_id = :x"),
            {"x": external_id},
        )
        again = await asyncio.wait_for(
            intake.client.post("/v1/tickets", json=body(customer=customer), headers=CHANNEL), 10.0
        )
    assert again.status_code == 201
    assert again.json()["customer_id"] == first.json()["customer_id"]


async def test_created_events_carry_the_stored_number_and_customer_id(intake: ServiceHarness) -> None:
    """The statement fills in what only the database knows: the number, and the id of a customer
    it already had (the writer's stand-in for them is another id) — also in a batch of several."""
    customer = {"external_id": f"event-{uuid.uuid4()}", "name": "王先生"}
    first = await intake.client.post("/v1/tickets", json=body(customer=customer), headers=CHANNEL)
    subjects = ["(pending)", '"(pending)" 保費', "保費扣款失敗", "number", "客戶編號"]
    batch = await asyncio.gather(
        *(
            intake.client.post("/v1/tickets", json=body(subject=s, customer=customer), headers=CHANNEL)
            for s in subjects
        )
    )
    responses = [first, *batch]
    tickets = {r.json()["id"]: r.json() for r in responses}
    async with intake.uow() as uow:
        rows = (
            await uow.session.execute(
                select(OUTBOX.c.key, OUTBOX.c.payload).where(
                    OUTBOX.c.key.in_(list(tickets)), OUTBOX.c.event_type == "helpdesk.ticket.created.v1"
                )
            )
        ).all()
    assert len(rows) == len(tickets) == 6
    customer_id = first.json()["customer_id"]
    for key, payload in rows:
        data = payload["data"]
        assert data["number"] == tickets[key]["number"]
        assert data["customer_id"] == tickets[key]["customer_id"] == customer_id
        assert data["subject"] == tickets[key]["subject"]
    assert {payload["data"]["subject"] for _, payload in rows} == set(subjects)


async def test_a_new_tickets_event_carries_the_requests_correlation_id(intake: ServiceHarness) -> None:
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    by_request = await intake.client.post(
        "/v1/tickets", json=body(), headers={**CHANNEL, "X-Request-ID": request_id}
    )
    by_caller = await intake.client.post(
        "/v1/tickets", json=body(), headers={**CHANNEL, "X-Request-ID": "r", "X-Correlation-ID": "portal-42"}
    )
    for response, correlation_id in ((by_request, request_id), (by_caller, "portal-42")):
        ticket_id = response.json()["id"]
        async with intake.uow() as uow:
            stored = (
                await uow.session.execute(
                    select(OUTBOX.c.event_id, OUTBOX.c.headers, OUTBOX.c.payload).where(
                        OUTBOX.c.key == ticket_id
                    )
                )
            ).one()
        event = parse_event(orjson.dumps(stored.payload))
        assert (event.id, event.subject, event.correlationid) == (stored.event_id, ticket_id, correlation_id)
        assert event.traceparent is not None and parse_traceparent(event.traceparent) is not None
        assert stored.headers == {
            "ce_type": event.type,
            "ce_id": str(event.id),
            "correlationid": correlation_id,
            "traceparent": event.traceparent,
        }


async def test_a_new_tickets_events_continue_the_trace_of_the_request_that_posted_it(
    intake: ServiceHarness,
) -> None:
    """Each ticket of a batch carries its own request's trace: through the lane and the route."""
    callers = [(uuid.uuid4().hex, uuid.uuid4().hex[:16]) for _ in range(6)]
    generic = {"content-type": "application/vnd.helpdesk+json"}  # not the lane's: the declared route
    responses = await asyncio.gather(
        *(
            intake.client.post(
                "/v1/tickets",
                content=orjson.dumps(body(kind="complaint" if n % 2 else "question")),
                headers={
                    **CHANNEL,
                    **(generic if n % 3 == 0 else {"content-type": "application/json"}),
                    "traceparent": f"00-{trace_id}-{parent_id}-01",
                },
            )
            for n, (trace_id, parent_id) in enumerate(callers)
        )
    )
    for response, (trace_id, parent_id) in zip(responses, callers, strict=True):
        assert response.status_code == 201, response.text
        async with intake.uow() as uow:
            rows = (
                await uow.session.execute(
                    select(OUTBOX.c.event_type, OUTBOX.c.headers, OUTBOX.c.payload).where(
                        OUTBOX.c.key == response.json()["id"]
                    )
                )
            ).all()
        assert "helpdesk.ticket.created.v1" in {row.event_type for row in rows}
        traceparents = {t for row in rows for t in (row.payload["traceparent"], row.headers["traceparent"])}
        assert len(traceparents) == 1, rows  # one request: all its events under one parent-id
        continued = parse_traceparent(traceparents.pop())
        assert continued is not None
        assert (continued.trace_id, continued.flags) == (trace_id, "01")
        assert continued.parent_id != parent_id


async def test_one_ticket_that_cannot_be_stored_does_not_fail_its_batch(intake: ServiceHarness) -> None:
    existing = (await intake.client.post("/v1/tickets", json=body(), headers=CHANNEL)).json()
    writer = writer_of(intake)
    good = [TicketDraft(body=TicketCreate.model_validate(body()), caller="writer-test") for _ in range(5)]
    clash = TicketDraft(body=TicketCreate.model_validate(body()), caller="writer-test")
    clash.id = uuid.UUID(existing["id"])  # the primary key is taken: this one alone must fail
    results = await asyncio.gather(*(writer.submit(d) for d in [*good, clash]), return_exceptions=True)
    assert isinstance(results[-1], TicketConflict)
    stored = results[:-1]
    assert all(t is not None and not isinstance(t, BaseException) for t in stored)
    async with intake.uow() as uow:
        count = await uow.session.scalar(
            select(func.count()).select_from(Ticket).where(Ticket.id.in_([d.id for d in good]))
        )
    assert count == 5


async def test_twins_in_one_batch_make_one_ticket_and_replay_it(intake: ServiceHarness) -> None:
    headers = {**CHANNEL, "Idempotency-Key": f"twin-{uuid.uuid4()}"}
    data = body()
    responses = await asyncio.gather(
        *(intake.client.post("/v1/tickets", json=data, headers=headers) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 7


def test_database_failures_become_problems_not_500s() -> None:
    assert isinstance(_failure(asyncpg.UniqueViolationError("dup")), TicketConflict)
    assert isinstance(_failure(asyncpg.StringDataRightTruncationError("long")), InvalidInput)
    assert isinstance(_failure(ConnectionRefusedError()), TicketStoreUnavailable)
    assert isinstance(_failure(asyncpg.CannotConnectNowError("starting")), TicketStoreUnavailable)
    unexpected = RuntimeError("bug")
    assert _failure(unexpected) is unexpected


async def test_requests_in_a_batch_cut_off_by_shutdown_get_a_503_not_silence() -> None:
    class StuckPool:
        @contextlib.asynccontextmanager
        async def acquire(self) -> Any:
            await asyncio.Event().wait()  # the statement is in flight when the service stops
            yield None

    writer = TicketWriter(number_prefix="HD")
    loop = asyncio.get_running_loop()
    batch = [(object(), loop.create_future()) for _ in range(3)]
    task = asyncio.create_task(writer._write(StuckPool(), batch))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    for _, future in batch:
        assert isinstance(future.exception(), TicketStoreUnavailable)


async def test_numbers_past_six_digits_keep_every_digit(intake: ServiceHarness) -> None:
    # lpad() cuts a longer string down: ticket 1,000,000 was numbered HD-100000 like ticket 100,000
    # before it, and from then on every ticket the API took was a conflict.
    async with intake.uow() as uow:
        before = await uow.session.scalar(sa_text("SELECT last_value FROM ticket_number_seq"))
        await uow.session.execute(sa_text("SELECT setval('ticket_number_seq', 999999)"))
        await uow.commit()
    try:
        numbers = []
        for _ in range(2):
            response = await intake.client.post("/v1/tickets", json=body(), headers=CHANNEL)
            assert response.status_code == 201, response.text
            numbers.append(response.json()["number"])
        assert numbers == ["HD-1000000", "HD-1000001"]
    finally:
        async with intake.uow() as uow:  # the module's other tests expect six-digit numbers
            await uow.session.execute(sa_text("SELECT setval('ticket_number_seq', :v)"), {"v": before})
            await uow.commit()


async def test_a_lone_ticket_that_lost_the_new_customer_race_is_stored_on_a_second_try(
    intake: ServiceHarness, monkeypatch: Any
) -> None:
    # Two batches with the same new customer: the one whose snapshot predates the other's commit
    # finds the customer neither new nor known, and its foreign key fails. A batch of several
    # is retried ticket by ticket; a batch of one was answered 409 at once.
    writer = writer_of(intake)
    store = writer._store
    failures = []

    async def loses_the_race_once(conn: Any, drafts: Any) -> Any:
        if not failures:
            failures.append(drafts)
            raise asyncpg.ForeignKeyViolationError('insert or update on table "tickets" violates foreign key')
        return await store(conn, drafts)

    monkeypatch.setattr(writer, "_store", loses_the_race_once)
    draft = TicketDraft(body=TicketCreate.model_validate(body()), caller="writer-test")
    stored = await writer.submit(draft)
    assert stored is not None and stored.id == draft.id
    assert len(failures) == 1
