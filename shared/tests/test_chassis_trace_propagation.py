"""`traceparent` carried from a request or a consumed event to the events published meanwhile —
through a service app, its outbox relay and the consumer, on the real database and broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, FastAPI
from sqlalchemy import select

from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.testing import migrate, run_service
from helpdesk_shared.chassis.app import Runtime, ServiceDefinition, create_service_app
from helpdesk_shared.chassis.consumer import EventConsumer
from helpdesk_shared.chassis.db import OUTBOX, create_engine, create_sessionmaker
from helpdesk_shared.chassis.logging import traceparent_var
from helpdesk_shared.chassis.settings import ServiceSettings
from helpdesk_shared.chassis.trace_context import TraceParent, parse_traceparent
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts import EventEnvelope, TicketCreated, parse_event

SERVICE = "chassis-trace"
CREATED = TicketCreated.cloudevent_type()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
CALLER = f"00-{TRACE_ID}-{PARENT_ID}-01"
INVALID = f"00-{TRACE_ID.upper()}-{PARENT_ID}-01"

router = APIRouter(prefix="/trace")


def ticket_created() -> TicketCreated:
    return TicketCreated(
        ticket_id=uuid.uuid4(),
        number="HD-000001",
        channel="web",
        kind="question",
        subject="s",
        description="d",
        priority="normal",
        customer_id=uuid.uuid4(),
        created_at=datetime.now(UTC),
    )


@router.post("/events")
async def publish_event(runtime: Runtime, topic: str) -> dict[str, str | None]:
    """Publish an event to ``topic`` as a use case would; answer its id and the request's trace."""
    async with UnitOfWork(
        runtime.sessionmaker, source=runtime.settings.source, topic=topic, on_commit=runtime.relay.wake
    ) as uow:
        event = uow.publish(ticket_created(), subject=str(uuid.uuid4()))
        await uow.commit()
    return {"event_id": str(event.id), "traceparent": traceparent_var.get()}


def parsed(traceparent: str | None) -> TraceParent:
    assert traceparent is not None and traceparent.startswith("00-") and len(traceparent) == len(CALLER)
    parent = parse_traceparent(traceparent)
    assert parent is not None, traceparent
    return parent


async def test_an_event_published_during_a_request_continues_the_callers_trace_or_starts_one(
    infra: Infra, new_topic: Any, read_topic: Any
) -> None:
    url = infra.create_database("chassis_trace_http")
    await migrate(url, "intake_service")
    settings = ServiceSettings(
        database_url=url,
        kafka_bootstrap_servers=infra.kafka_bootstrap,
        service_name=SERVICE,
        environment="test",
    )
    topic = new_topic("traced-http")

    def create_app(s: ServiceSettings) -> FastAPI:
        return create_service_app(ServiceDefinition(name=SERVICE, settings=s, routers=[router]))

    async with run_service(create_app, settings) as harness:

        async def post(headers: list[tuple[str, str]]) -> dict[str, str]:
            response = await harness.client.post("/trace/events", params={"topic": topic}, headers=headers)
            assert response.status_code == 200, response.text
            answer: dict[str, str] = response.json()
            return answer

        continued = await post([("traceparent", CALLER)])
        first_of_two = await post([("traceparent", CALLER), ("traceparent", f"00-{'a' * 32}-{'b' * 16}-01")])
        started = [await post([]), await post([]), await post([("traceparent", INVALID)])]
        assert traceparent_var.get() is None  # not left behind
        records = await read_topic(topic, 5)

    on_kafka: dict[str, str | None] = {}
    for record in records:
        envelope = parse_event(record.value)
        headers = dict(record.headers)
        assert headers["traceparent"].decode() == envelope.traceparent
        on_kafka[str(envelope.id)] = envelope.traceparent
    answers = [continued, first_of_two, *started]
    assert len(on_kafka) == 5
    assert [on_kafka[a["event_id"]] for a in answers] == [a["traceparent"] for a in answers]

    for answer in (continued, first_of_two):
        child = parsed(answer["traceparent"])
        assert (child.trace_id, child.flags) == (TRACE_ID, "01")
        assert child.parent_id != PARENT_ID
    assert parsed(continued["traceparent"]).parent_id != parsed(first_of_two["traceparent"]).parent_id
    new_traces = [parsed(answer["traceparent"]) for answer in started]
    assert all(t.flags == "01" for t in new_traces)
    assert len({t.trace_id for t in new_traces} | {TRACE_ID}) == 4


async def test_events_a_handler_publishes_continue_the_trace_of_the_event_it_handles(
    infra: Infra, new_topic: Any
) -> None:
    url = infra.create_database("chassis_trace_consumer")
    await migrate(url, "intake_service")
    engine = create_engine(url, pool_size=2, max_overflow=2)
    sessions = create_sessionmaker(engine)
    topic = new_topic("traced-in")
    settings = ServiceSettings(
        database_url=url,
        kafka_bootstrap_servers=infra.kafka_bootstrap,
        service_name=SERVICE,
        environment="test",
        consumer_group=f"trace-{infra.run_id}-{uuid.uuid4().hex[:8]}",
    )
    handled_under: dict[uuid.UUID, str | None] = {}

    async def on_created(envelope: EventEnvelope[Any], uow: UnitOfWork) -> None:
        handled_under[envelope.id] = traceparent_var.get()
        uow.publish(ticket_created(), subject=str(envelope.id))

    consumer = EventConsumer(
        settings=settings,
        topics=[topic],
        dead_letter_topic=new_topic("traced-dlq"),
        handlers={CREATED: on_created},
        uow_factory=lambda: UnitOfWork(sessions, source=settings.source, topic=f"{topic}.out"),
    )
    traced_event, untraced, invalid = (
        EventEnvelope.wrap(ticket_created(), source="/helpdesk/test", traceparent=traceparent)
        for traceparent in (CALLER, None, INVALID)
    )
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, linger_ms=0)
    await producer.start()
    task = asyncio.create_task(consumer.run())
    try:
        for event in (traced_event, untraced, invalid):
            await producer.send_and_wait(topic, event.to_json_bytes(), key=str(event.subject).encode())
        deadline = time.monotonic() + 30
        while len(published := await published_by_key(sessions, f"{topic}.out")) < 3:
            assert time.monotonic() < deadline, "the events were not handled in time"
            await asyncio.sleep(0.05)
        # Handled directly too: the trace is the event's only while it is handled.
        direct = EventEnvelope.wrap(ticket_created(), source="/helpdesk/test", traceparent=CALLER)
        assert await consumer.handle_event(direct, topic=topic)
        assert traceparent_var.get() is None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await producer.stop()
        await engine.dispose()

    for event in (traced_event, untraced, invalid):
        row = published[str(event.id)]
        assert row["envelope"]["traceparent"] == row["headers"]["traceparent"] == handled_under[event.id]
    continued = parsed(handled_under[traced_event.id])
    assert (continued.trace_id, continued.flags) == (TRACE_ID, "01")
    assert continued.parent_id != PARENT_ID
    started = [parsed(handled_under[e.id]) for e in (untraced, invalid)]
    assert len({t.trace_id for t in started} | {TRACE_ID}) == 3
    assert parsed(handled_under[direct.id]).trace_id == TRACE_ID


async def published_by_key(sessions: Any, topic: str) -> dict[str, dict[str, Any]]:
    """The outbox rows of ``topic`` by key (the id of the event whose handling published them)."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(OUTBOX.c.key, OUTBOX.c.payload, OUTBOX.c.headers).where(OUTBOX.c.topic == topic)
            )
        ).all()
    return {row.key: {"envelope": row.payload, "headers": row.headers} for row in rows}
