"""Idempotent consumer: inbox dedupe, retries, dead-letter topic, offsets — real database and broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.testing import migrate
from helpdesk_shared.chassis import consumer as consumer_module
from helpdesk_shared.chassis.consumer import Batched, ConsumerTuning, EventConsumer, InboxClaim, RetryRun
from helpdesk_shared.chassis.db import INBOX, OUTBOX, create_engine, create_sessionmaker
from helpdesk_shared.chassis.outbox import OutboxRelay
from helpdesk_shared.chassis.settings import ServiceSettings
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts import AnswerPublished, EventEnvelope, TicketClosed, TicketCreated

CREATED = "helpdesk.ticket.created.v1"
CLOSED = TicketClosed.cloudevent_type()
PUBLISHED = AnswerPublished.cloudevent_type()
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture(scope="module")
async def sessions(infra: Infra) -> AsyncIterator[Sessions]:
    url = infra.create_database("chassis_consumer")
    await migrate(url, "intake_service")
    engine = create_engine(url, pool_size=4, max_overflow=4)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS chassis_effects (id bigserial PRIMARY KEY,"
                " consumer text NOT NULL, event_id uuid NOT NULL, number text NOT NULL)"
            )
        )
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture(scope="module")
async def producer(infra: Infra) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, linger_ms=0)
    await producer.start()
    yield producer
    await producer.stop()


@dataclass
class Rig:
    settings: ServiceSettings
    consumer: EventConsumer
    topic: str
    dlq: str
    calls: list[str] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)
    """The runs a `Batched` handler was given (numbers), when the rig has one."""

    @property
    def group(self) -> str:
        assert self.settings.consumer_group
        return self.settings.consumer_group


Hook = Callable[[EventEnvelope[Any]], Awaitable[None]]


def make_rig(
    infra: Infra,
    sessions: Sessions,
    topic: str,
    dlq: str,
    *,
    group: str | None = None,
    before_commit: Hook | None = None,
    batched: bool = False,
    claiming: bool = False,
    closed_too: bool = False,
    published_too: bool = False,
    **overrides: Any,
) -> Rig:
    settings = ServiceSettings(
        database_url="postgresql://unused/unused",
        kafka_bootstrap_servers=infra.kafka_bootstrap,
        service_name=f"chassis-{uuid.uuid4().hex[:8]}",
        environment="test",
        consumer_group=group or f"chassis-{infra.run_id}-{uuid.uuid4().hex[:8]}",
        consumer_max_attempts=3,
        consumer_retry_backoff_seconds=0.01,
        **overrides,
    )
    calls: list[str] = []

    async def on_created(envelope: EventEnvelope[Any], uow: UnitOfWork) -> None:
        calls.append(envelope.data.number)
        if envelope.data.subject == "boom":
            raise RuntimeError(f"handler exploded on {envelope.data.number}")
        await uow.session.execute(
            text("INSERT INTO chassis_effects (consumer, event_id, number) VALUES (:c, :e, :n)"),
            {"c": settings.consumer_group, "e": envelope.id, "n": envelope.data.number},
        )
        if before_commit is not None:
            await before_commit(envelope)

    batches: list[list[str]] = []

    async def on_many(envelopes: list[EventEnvelope[Any]], uow: UnitOfWork) -> None:
        batches.append([e.data.number for e in envelopes])
        for envelope in envelopes:  # effects first: a failure must take them back too
            await uow.session.execute(
                text("INSERT INTO chassis_effects (consumer, event_id, number) VALUES (:c, :e, :n)"),
                {"c": settings.consumer_group, "e": envelope.id, "n": envelope.data.number},
            )
        if before_commit is not None:
            for envelope in envelopes:
                await before_commit(envelope)
        if any(e.data.subject == "boom" for e in envelopes):
            raise RuntimeError("the run exploded")
        if any(e.data.subject == "race" for e in envelopes) and len(batches) == 1:
            raise RetryRun("lost a race the first time")

    async def on_claiming(
        envelopes: list[EventEnvelope[Any]], uow: UnitOfWork, claim: InboxClaim
    ) -> set[uuid.UUID]:
        # The claim sent with the handler's own first statement, as routing's new tickets do.
        driver = await uow.driver_connection()
        rows = await driver.fetch(f"WITH {InboxClaim.cte(1)} SELECT event_id FROM claimed", *claim.parameters)
        claimed = {row[0] for row in rows}
        first_copies: dict[uuid.UUID, EventEnvelope[Any]] = {}
        for envelope in envelopes:
            if envelope.id in claimed:
                first_copies.setdefault(envelope.id, envelope)
        fresh = list(first_copies.values())
        await on_many(fresh, uow)
        return claimed

    async def on_closed(envelope: EventEnvelope[Any], uow: UnitOfWork) -> None:
        calls.append(f"closed {envelope.subject}")
        await uow.session.execute(
            text("INSERT INTO chassis_effects (consumer, event_id, number) VALUES (:c, :e, :n)"),
            {"c": settings.consumer_group, "e": envelope.id, "n": f"closed {envelope.subject}"},
        )

    async def on_published(envelope: EventEnvelope[Any], uow: UnitOfWork) -> None:
        calls.append(f"published {envelope.subject}")

    handlers: dict[str, Any] = {CREATED: on_created}
    if batched:
        handlers[CREATED] = (
            Batched(one=on_created, claiming=on_claiming)
            if claiming
            else Batched(one=on_created, many=on_many)
        )
    if closed_too:
        handlers[CLOSED] = on_closed
    if published_too:
        handlers[PUBLISHED] = on_published
    consumer = EventConsumer(
        settings=settings,
        topics=[topic],
        dead_letter_topic=dlq,
        handlers=handlers,
        uow_factory=lambda: UnitOfWork(sessions, source=settings.source, topic=f"{topic}.unused"),
    )
    return Rig(settings, consumer, topic, dlq, calls, batches)


@asynccontextmanager
async def running(consumer: EventConsumer) -> AsyncIterator[None]:
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def created(number: str, subject: str = "fine", *, ticket: uuid.UUID | None = None) -> EventEnvelope[Any]:
    ticket = ticket or uuid.uuid4()
    payload = TicketCreated(
        ticket_id=ticket,
        number=number,
        channel="web",
        kind="question",
        subject=subject,
        description="d",
        priority="normal",
        customer_id=uuid.uuid4(),
        created_at=datetime.now(UTC),
    )
    return EventEnvelope.wrap(payload, source="/helpdesk/test", subject=str(ticket))


async def send(producer: AIOKafkaProducer, topic: str, value: bytes, key: str | None = None) -> None:
    await producer.send_and_wait(topic, value=value, key=key.encode() if key else None)


async def effects(sessions: Sessions, group: str) -> list[str]:
    async with sessions() as session:
        result = await session.execute(
            text("SELECT number FROM chassis_effects WHERE consumer = :c ORDER BY id"), {"c": group}
        )
        return [row.number for row in result]


async def inbox(sessions: Sessions, group: str) -> dict[uuid.UUID, Any]:
    async with sessions() as session:
        rows = (await session.execute(select(INBOX).where(INBOX.c.consumer == group))).all()
    return {row.event_id: row for row in rows}


async def dlq_rows(sessions: Sessions, dlq: str) -> list[Any]:
    async with sessions() as session:
        return list(
            (await session.execute(select(OUTBOX).where(OUTBOX.c.topic == dlq).order_by(OUTBOX.c.seq))).all()
        )


def consumed(rig: Rig, outcome: str, event_type: str = CREATED) -> float:
    value = REGISTRY.get_sample_value(
        "helpdesk_events_consumed_total",
        {"service": rig.settings.service_name, "type": event_type, "outcome": outcome},
    )
    return value or 0.0


async def test_a_redelivered_event_is_applied_exactly_once(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any
) -> None:
    rig = make_rig(infra, sessions, new_topic("consume", partitions=2), new_topic("dlq"))
    first, second = created("A-1"), created("A-2")
    async with running(rig.consumer):
        for event in (first, first, second):
            await send(producer, rig.topic, event.to_json_bytes(), event.subject)

        async def settled() -> bool:
            return len(await effects(sessions, rig.group)) == 2 and consumed(rig, "duplicate") == 1

        await eventually(settled)

    assert sorted(await effects(sessions, rig.group)) == ["A-1", "A-2"]
    assert sorted(rig.calls) == ["A-1", "A-2"]
    seen = await inbox(sessions, rig.group)
    assert set(seen) == {first.id, second.id}
    assert {row.outcome for row in seen.values()} == {"processed"}
    assert consumed(rig, "processed") == 2


async def test_a_failing_handler_is_retried_then_dead_lettered_and_the_partition_moves_on(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any, read_topic: Any
) -> None:
    rig = make_rig(infra, sessions, new_topic("consume"), new_topic("dlq"))
    bad, good = created("B-bad", subject="boom"), created("B-good")
    async with running(rig.consumer):
        await send(producer, rig.topic, bad.to_json_bytes(), bad.subject)
        await send(producer, rig.topic, good.to_json_bytes(), good.subject)

        async def good_applied() -> bool:
            return await effects(sessions, rig.group) == ["B-good"]

        await eventually(good_applied)

    assert rig.calls == ["B-bad"] * rig.settings.consumer_max_attempts + ["B-good"]
    seen = await inbox(sessions, rig.group)
    assert seen[bad.id].outcome == "dead_lettered"
    assert "handler exploded on B-bad" in seen[bad.id].error
    assert seen[good.id].outcome == "processed"

    [row] = await dlq_rows(sessions, rig.dlq)
    relay = OutboxRelay(rig.settings, sessions)
    try:
        assert await relay.publish_pending() >= 1
    finally:
        await relay.stop()
    [record] = await read_topic(rig.dlq, 1)
    body = orjson.loads(record.value)
    assert body == row.payload
    assert body["original"] == orjson.loads(bad.to_json_bytes())
    assert "RuntimeError('handler exploded on B-bad')" in body["error"]
    assert (body["consumer"], body["topic"], body["partition"], body["offset"]) == (
        rig.group,
        rig.topic,
        0,
        0,
    )
    assert record.key == bad.subject.encode()
    headers = dict(record.headers)
    assert b"handler exploded" in headers["x-error"]
    assert headers["x-original-topic"] == rig.topic.encode()


async def test_poison_messages_are_dead_lettered_and_unhandled_types_ignored(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any, read_topic: Any
) -> None:
    rig = make_rig(infra, sessions, new_topic("consume"), new_topic("dlq"))
    invalid = orjson.loads(created("C-invalid").to_json_bytes())
    invalid["data"]["ticket_id"] = "not-a-uuid"
    closed = EventEnvelope.wrap(
        TicketClosed(
            ticket_id=uuid.uuid4(), reason="manual", previous_status="resolved", closed_at=datetime.now(UTC)
        ),
        source="/helpdesk/test",
    )
    unknown = {**orjson.loads(created("C-unknown").to_json_bytes()), "type": "helpdesk.nothing.v9"}
    # A type no service can have (unhashable: looking it up raised, and the session restarted
    # on the same record for ever).
    listed = {**orjson.loads(created("C-listed").to_json_bytes()), "type": ["helpdesk.ticket.created.v1"]}
    sentinel = created("C-sentinel")
    async with running(rig.consumer):
        await send(producer, rig.topic, b"\xff{not json")
        await send(producer, rig.topic, orjson.dumps(invalid))
        await send(producer, rig.topic, closed.to_json_bytes(), closed.subject)
        await send(producer, rig.topic, orjson.dumps(unknown))
        await send(producer, rig.topic, orjson.dumps(listed))
        await send(producer, rig.topic, sentinel.to_json_bytes(), sentinel.subject)

        async def sentinel_applied() -> bool:
            return await effects(sessions, rig.group) == ["C-sentinel"]

        await eventually(sentinel_applied)

    assert rig.calls == ["C-sentinel"]
    assert set(await inbox(sessions, rig.group)) == {sentinel.id}
    not_json, bad_data, bad_type = await dlq_rows(sessions, rig.dlq)
    assert bad_type.payload["original"] == listed
    assert "type" in bad_type.payload["error"]
    assert not_json.payload["original"] == "\ufffd{not json"
    assert "not JSON" in not_json.payload["error"]
    assert bad_data.payload["original"] == invalid
    assert f"invalid {CREATED}" in bad_data.payload["error"]
    assert "ticket_id" in bad_data.payload["error"]

    relay = OutboxRelay(rig.settings, sessions)
    try:
        await relay.publish_pending()
    finally:
        await relay.stop()
    records = await read_topic(rig.dlq, 3)
    assert [orjson.loads(r.value)["offset"] for r in records] == [0, 1, 4]


async def test_an_event_without_an_id_or_reviewed_by_its_author_is_dead_lettered_not_applied(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any
) -> None:
    rig = make_rig(infra, sessions, new_topic("consume"), new_topic("dlq"), published_too=True)
    # Given an id of its own on each delivery, a redelivered event would be applied twice.
    no_id = orjson.loads(created("D-no-id").to_json_bytes())
    del no_id["id"]
    author = uuid.uuid4()
    answer = AnswerPublished(
        ticket_id=uuid.uuid4(),
        answer_id=uuid.uuid4(),
        answer_version=1,
        author_id=author,
        reviewer_id=uuid.uuid4(),
        body="您好",
        published_at=datetime.now(UTC),
    )
    self_reviewed = orjson.loads(EventEnvelope.wrap(answer, source="/helpdesk/test").to_json_bytes())
    self_reviewed["data"]["reviewer_id"] = str(author)
    sentinel = created("D-sentinel")
    async with running(rig.consumer):
        await send(producer, rig.topic, orjson.dumps(no_id))
        await send(producer, rig.topic, orjson.dumps(no_id))
        await send(producer, rig.topic, orjson.dumps(self_reviewed))
        await send(producer, rig.topic, sentinel.to_json_bytes(), sentinel.subject)

        async def sentinel_applied() -> bool:
            return await effects(sessions, rig.group) == ["D-sentinel"]

        await eventually(sentinel_applied)

    assert rig.calls == ["D-sentinel"]
    assert set(await inbox(sessions, rig.group)) == {sentinel.id}
    first, again, reviewed = await dlq_rows(sessions, rig.dlq)
    for row in (first, again):
        assert row.payload["original"] == no_id
        assert f"invalid {CREATED}" in row.payload["error"] and "id" in row.payload["error"]
    assert reviewed.payload["original"] == self_reviewed
    assert f"invalid {PUBLISHED}" in reviewed.payload["error"] and "author" in reviewed.payload["error"]
    assert [r.payload["offset"] for r in (first, again, reviewed)] == [0, 1, 2]


async def test_another_version_of_a_handled_event_is_dead_lettered_other_types_counted_and_skipped(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any
) -> None:
    rig = make_rig(infra, sessions, new_topic("consume"), new_topic("dlq"))
    # A producer deployed before this consumer: its tickets must wait in the dead-letter topic
    # for the upgrade, not vanish.
    newer = {**orjson.loads(created("E-v2").to_json_bytes()), "type": "helpdesk.ticket.created.v2"}
    closed = EventEnvelope.wrap(
        TicketClosed(
            ticket_id=uuid.uuid4(), reason="manual", previous_status="resolved", closed_at=datetime.now(UTC)
        ),
        source="/helpdesk/test",
    )
    stranger = {**orjson.loads(created("E-stranger").to_json_bytes()), "type": "helpdesk.nothing.v9"}
    unversioned = {
        **orjson.loads(created("E-unversioned").to_json_bytes()),
        "type": "helpdesk.ticket.created",
    }
    sentinel = created("E-sentinel")
    async with running(rig.consumer):
        await send(producer, rig.topic, orjson.dumps(newer))
        await send(producer, rig.topic, closed.to_json_bytes(), closed.subject)
        await send(producer, rig.topic, orjson.dumps(stranger))
        await send(producer, rig.topic, orjson.dumps(unversioned))
        await send(producer, rig.topic, sentinel.to_json_bytes(), sentinel.subject)

        async def sentinel_applied() -> bool:
            return await effects(sessions, rig.group) == ["E-sentinel"]

        await eventually(sentinel_applied)

    assert rig.calls == ["E-sentinel"]
    assert set(await inbox(sessions, rig.group)) == {sentinel.id}
    [row] = await dlq_rows(sessions, rig.dlq)
    assert row.payload["original"] == newer
    assert row.key == newer["subject"]  # replayed later, it lands in its ticket's partition again
    assert (row.payload["topic"], row.payload["offset"]) == (rig.topic, 0)
    assert "helpdesk.ticket.created.v2" in row.payload["error"] and CREATED in row.payload["error"]
    assert consumed(rig, "dead_lettered", "helpdesk.ticket.created.v2") == 1
    assert consumed(rig, "ignored", CLOSED) == 1
    assert consumed(rig, "ignored", "unknown") == 2  # unregistered types, one label for them all
    assert consumed(rig, "processed") == 1


async def test_a_new_consumer_in_the_group_resumes_after_the_committed_offsets(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any
) -> None:
    topic, dlq = new_topic("consume"), new_topic("dlq")
    first = make_rig(infra, sessions, topic, dlq)
    async with running(first.consumer):
        for number in ("D-1", "D-2"):
            event = created(number)
            await send(producer, topic, event.to_json_bytes(), event.subject)

        async def committed() -> bool:
            return (await committed_offsets(infra, first.group, topic)).get(0) == 2

        await eventually(committed)
    assert await effects(sessions, first.group) == ["D-1", "D-2"]

    second = make_rig(infra, sessions, topic, dlq, group=first.group)
    later = created("D-3")
    async with running(second.consumer):
        await send(producer, topic, later.to_json_bytes(), later.subject)

        async def later_applied() -> bool:
            return len(await effects(sessions, first.group)) == 3

        await eventually(later_applied)

    assert await effects(sessions, first.group) == ["D-1", "D-2", "D-3"]
    assert len(await inbox(sessions, first.group)) == 3
    assert second.calls == ["D-3"]
    assert consumed(second, "duplicate") == 0
    assert (await committed_offsets(infra, first.group, topic)).get(0) == 3


# ---- concurrency: partitions side by side, each in order, offsets after the transaction -------


async def send_to(producer: AIOKafkaProducer, topic: str, partition: int, event: EventEnvelope[Any]) -> None:
    await producer.send_and_wait(
        topic, value=event.to_json_bytes(), key=event.subject.encode(), partition=partition
    )


async def committed_offsets(infra: Infra, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def test_partitions_are_handled_side_by_side_and_offsets_follow_the_commits(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any
) -> None:
    """A handler stuck on partition 0 holds up neither partition 1 nor its offsets, and partition 0's
    offset is committed only once its transaction has committed."""
    release = asyncio.Event()

    async def stall_on_partition_0(envelope: EventEnvelope[Any]) -> None:
        if envelope.data.number == "E-stuck":
            await release.wait()

    topic = new_topic("consume", partitions=2)
    rig = make_rig(infra, sessions, topic, new_topic("dlq"), before_commit=stall_on_partition_0)
    async with running(rig.consumer):
        await send_to(producer, topic, 0, created("E-stuck"))
        await send_to(producer, topic, 1, created("E-free-1"))
        await send_to(producer, topic, 1, created("E-free-2"))

        async def partition_1_done_and_committed() -> bool:
            return (
                await effects(sessions, rig.group) == ["E-free-1", "E-free-2"]
                and (await committed_offsets(infra, rig.group, topic)).get(1) == 2
            )

        await eventually(partition_1_done_and_committed)
        assert "E-stuck" in rig.calls  # it was being handled all along
        assert 0 not in await committed_offsets(infra, rig.group, topic)
        release.set()

        async def partition_0_committed() -> bool:
            return (await committed_offsets(infra, rig.group, topic)).get(0) == 1

        await eventually(partition_0_committed)
    assert sorted(await effects(sessions, rig.group)) == ["E-free-1", "E-free-2", "E-stuck"]


async def test_each_partition_keeps_its_order_while_partitions_interleave(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any
) -> None:
    async def yield_a_little(envelope: EventEnvelope[Any]) -> None:
        await asyncio.sleep(0.002 if envelope.data.number.startswith("P0") else 0.0)

    topic = new_topic("consume", partitions=3)
    rig = make_rig(infra, sessions, topic, new_topic("dlq"), before_commit=yield_a_little)
    sent = {p: [f"P{p}-{n:02d}" for n in range(15)] for p in range(3)}
    for n in range(15):
        for p in range(3):
            await send_to(producer, topic, p, created(sent[p][n]))
    async with running(rig.consumer):

        async def all_applied() -> bool:
            return len(await effects(sessions, rig.group)) == 45

        await eventually(all_applied)
    applied = await effects(sessions, rig.group)
    for p in range(3):
        assert [n for n in applied if n.startswith(f"P{p}-")] == sent[p]
    assert sorted(rig.calls) == sorted(applied)  # each handled once


class TunedSettings(ServiceSettings):
    """What a service declares to tune the consumer (routing's settings do, as ROUTING_CONSUMER_*)."""

    consumer_concurrency: int = 8
    consumer_max_poll_records: int = 200
    consumer_session_timeout_ms: int = 10_000
    consumer_heartbeat_interval_ms: int = 3_000
    consumer_fetch_min_bytes: int = 1
    consumer_fetch_max_wait_ms: int = 500


def test_a_batched_handler_applies_runs_one_way() -> None:
    async def one(envelope: EventEnvelope[Any], uow: UnitOfWork) -> None: ...

    async def many(envelopes: list[EventEnvelope[Any]], uow: UnitOfWork) -> None: ...

    async def claiming(
        envelopes: list[EventEnvelope[Any]], uow: UnitOfWork, claim: InboxClaim
    ) -> set[uuid.UUID]:
        return set()

    for neither_or_both in ({}, {"many": many, "claiming": claiming}):
        with pytest.raises(TypeError, match="either many or claiming"):
            Batched(one=one, **neither_or_both)  # type: ignore[arg-type]
    assert Batched(one=one, many=many).claiming is None
    assert Batched(one=one, claiming=claiming).many is None


def test_the_tuning_is_read_from_the_settings_that_declare_it() -> None:
    plain = ServiceSettings(database_url="postgresql://unused/unused")
    assert ConsumerTuning.from_settings(plain) == ConsumerTuning()
    tuned = TunedSettings(
        database_url="postgresql://unused/unused",
        consumer_concurrency=2,
        consumer_max_poll_records=50,
        consumer_session_timeout_ms=6_000,
        consumer_heartbeat_interval_ms=2_000,
        consumer_fetch_min_bytes=65_536,
        consumer_fetch_max_wait_ms=10,
    )
    assert ConsumerTuning.from_settings(tuned) == ConsumerTuning(
        2, 50, 6_000, 2_000, fetch_min_bytes=65_536, fetch_max_wait_ms=10
    )
    with pytest.raises(ValueError, match="at least 1"):  # a fetch wait of 0 would poll without pause
        ConsumerTuning.from_settings(
            TunedSettings(database_url="postgresql://unused/unused", consumer_fetch_max_wait_ms=0)
        )
    with pytest.raises(ValueError, match="third of the session timeout"):
        ConsumerTuning.from_settings(
            TunedSettings(database_url="postgresql://unused/unused", consumer_heartbeat_interval_ms=4_000)
        )


async def test_a_member_joining_mid_stream_takes_partitions_without_losing_or_reordering_events(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any
) -> None:
    """A rebalance while events flow: the first member finishes what it holds and commits it, the
    second resumes from there; every event is applied once, each partition in order."""

    async def slow(envelope: EventEnvelope[Any]) -> None:
        await asyncio.sleep(0.03)

    topic, dlq = new_topic("consume", partitions=4), new_topic("dlq")
    first = make_rig(infra, sessions, topic, dlq, before_commit=slow)
    second = make_rig(infra, sessions, topic, dlq, group=first.group, before_commit=slow)
    sent = {p: [f"R{p}-{n:03d}" for n in range(60)] for p in range(4)}

    async def publish(start: int, stop: int) -> None:
        for n in range(start, stop):
            for p in range(4):
                await send_to(producer, topic, p, created(sent[p][n]))

    async with running(first.consumer):
        await first.consumer.assigned.wait()
        await publish(0, 40)  # over a second of work per partition: the rebalance finds it busy
        async with running(second.consumer):
            await asyncio.wait_for(second.consumer.assigned.wait(), timeout=30)
            await publish(40, 60)

            async def all_applied() -> bool:
                return len(await effects(sessions, first.group)) == 240

            await eventually(all_applied, timeout=60)
    assert second.calls, "the second member never got a partition"
    applied = await effects(sessions, first.group)
    for p in range(4):
        assert [n for n in applied if n.startswith(f"R{p}-")] == sent[p]
    assert sorted(first.calls + second.calls) == sorted(applied)  # nothing handled twice


def batch_fallbacks(rig: Rig) -> float:
    value = REGISTRY.get_sample_value(
        "helpdesk_event_batch_fallbacks_total", {"service": rig.settings.service_name, "type": CREATED}
    )
    return value or 0.0


@pytest.mark.parametrize("claiming", [False, True], ids=["claimed-first", "claimed-by-the-handler"])
async def test_a_batched_handler_gets_runs_in_order_once_each_in_one_transaction(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any, claiming: bool
) -> None:
    rig = make_rig(infra, sessions, new_topic("consume"), new_topic("dlq"), batched=True, claiming=claiming)
    events = [created(f"R-{n:02}") for n in range(30)]
    # Everything is waiting before the consumer starts, with one event delivered twice.
    for event in [*events[:10], events[3], *events[10:]]:
        await send(producer, rig.topic, event.to_json_bytes(), event.subject)
    async with running(rig.consumer):

        async def settled() -> bool:
            return len(await effects(sessions, rig.group)) == 30

        await eventually(settled)

    numbers = [e.data.number for e in events]
    assert await effects(sessions, rig.group) == numbers  # partition order, each once
    assert [n for run in rig.batches for n in run] == numbers
    assert max(len(run) for run in rig.batches) > 1  # whole runs, not one event at a time
    assert rig.calls == []  # the one-event handler was never needed
    assert set(await inbox(sessions, rig.group)) == {e.id for e in events}
    assert consumed(rig, "processed") == 30
    assert consumed(rig, "duplicate") == 1
    # Where a run's time goes: its wait for a group transaction, the transaction, its age.
    labels = {"service": rig.settings.service_name, "type": CREATED}
    groups = REGISTRY.get_sample_value("helpdesk_event_group_seconds_count", labels) or 0
    waits = REGISTRY.get_sample_value("helpdesk_event_group_wait_seconds_count", labels) or 0
    assert groups >= len(rig.batches) and waits >= groups  # every run waited, one or more per group
    assert (REGISTRY.get_sample_value("helpdesk_event_group_seconds_sum", labels) or 0) > 0
    ages = {"service": rig.settings.service_name, "topic": rig.topic}
    assert (REGISTRY.get_sample_value("helpdesk_event_age_seconds_count", ages) or 0) >= 1
    # Sent before the consumer started: the oldest record is older than no time at all.
    assert (REGISTRY.get_sample_value("helpdesk_event_age_seconds_sum", ages) or 0) > 0


async def test_a_failing_run_is_rolled_back_and_applied_again_one_event_at_a_time(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any
) -> None:
    rig = make_rig(infra, sessions, new_topic("consume"), new_topic("dlq"), batched=True)
    before, bad, after = created("F-1"), created("F-bad", subject="boom"), created("F-2")
    for event in (before, bad, after):
        await send(producer, rig.topic, event.to_json_bytes(), event.subject)
    async with running(rig.consumer):

        async def settled() -> bool:
            seen = await inbox(sessions, rig.group)
            return len(seen) == 3

        await eventually(settled)

    # The run's effects were rolled back; one by one, the good events are applied once and the
    # bad one is retried, then dead-lettered, as it would have been without batches.
    assert await effects(sessions, rig.group) == ["F-1", "F-2"]
    assert rig.calls == ["F-1"] + ["F-bad"] * rig.settings.consumer_max_attempts + ["F-2"]
    assert rig.batches[0] == ["F-1", "F-bad", "F-2"]
    seen = await inbox(sessions, rig.group)
    assert seen[bad.id].outcome == "dead_lettered"
    assert seen[before.id].outcome == seen[after.id].outcome == "processed"
    assert batch_fallbacks(rig) == 1


def record(
    topic: str, partition: int, offset: int, event: EventEnvelope[Any]
) -> ConsumerRecord[bytes, bytes]:
    value = event.to_json_bytes()
    return ConsumerRecord(topic, partition, offset, 0, 0, None, value, None, 0, len(value), [])


async def test_runs_waiting_in_several_partitions_are_applied_in_one_transaction(
    infra: Infra, sessions: Sessions, new_topic: Any
) -> None:
    rig = make_rig(infra, sessions, new_topic("consume", partitions=3), new_topic("dlq"), batched=True)
    runs = [[created(f"P{p}-{n}") for n in range(4)] for p in range(3)]

    # Three partitions' workers hand over their runs at the same time.
    await asyncio.gather(
        *(
            rig.consumer.handle_records([record(rig.topic, p, n, e) for n, e in enumerate(run)])
            for p, run in enumerate(runs)
        )
    )

    assert len(rig.batches) == 1  # one transaction for all three runs
    assert sorted(rig.batches[0]) == sorted(e.data.number for run in runs for e in run)
    for run in runs:  # each partition's events in its order
        numbers = [e.data.number for e in run]
        assert [n for n in rig.batches[0] if n in numbers] == numbers
    assert sorted(await effects(sessions, rig.group)) == sorted(rig.batches[0])
    assert consumed(rig, "processed") == 12


async def test_a_group_that_fails_falls_back_one_event_at_a_time_in_each_partition(
    infra: Infra, sessions: Sessions, new_topic: Any
) -> None:
    rig = make_rig(infra, sessions, new_topic("consume", partitions=2), new_topic("dlq"), batched=True)
    first = [created("A-1"), created("A-bad", subject="boom"), created("A-2")]
    second = [created("B-1"), created("B-2")]

    await asyncio.gather(
        rig.consumer.handle_records([record(rig.topic, 0, n, e) for n, e in enumerate(first)]),
        rig.consumer.handle_records([record(rig.topic, 1, n, e) for n, e in enumerate(second)]),
    )

    assert rig.batches == [["A-1", "A-bad", "A-2", "B-1", "B-2"]]  # the group, rolled back
    # Then each partition on its own, one event at a time: the bad event dead-lettered, the rest once.
    assert sorted(await effects(sessions, rig.group)) == ["A-1", "A-2", "B-1", "B-2"]
    assert [n for n in rig.calls if n.startswith("A")] == ["A-1"] + ["A-bad"] * 3 + ["A-2"]
    assert [n for n in rig.calls if n.startswith("B")] == ["B-1", "B-2"]
    assert (await inbox(sessions, rig.group))[first[1].id].outcome == "dead_lettered"
    assert batch_fallbacks(rig) == 1


async def test_a_run_that_lost_a_race_is_applied_once_more_as_a_run(
    infra: Infra, sessions: Sessions, new_topic: Any
) -> None:
    rig = make_rig(infra, sessions, new_topic("consume"), new_topic("dlq"), batched=True)
    events = [created("X-1"), created("X-race", subject="race"), created("X-2")]

    await rig.consumer.handle_records([record(rig.topic, 0, n, e) for n, e in enumerate(events)])

    assert rig.batches == [["X-1", "X-race", "X-2"]] * 2  # rolled back, then again as a run
    assert await effects(sessions, rig.group) == ["X-1", "X-race", "X-2"]  # once each
    assert rig.calls == []  # never one by one
    assert batch_fallbacks(rig) == 0


async def test_a_run_handed_over_as_the_last_writer_finishes_is_still_applied(
    infra: Infra, sessions: Sessions, new_topic: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A writer that found nothing more to apply has finished, but its task leaves the group's
    # writers only when its done-callback runs — after the worker it just released has handed
    # over its next run. With every writer slot taken by finished writers, nobody applied that
    # run and the partition stalled for good. One writer slot makes it happen every time.
    monkeypatch.setattr(consumer_module, "_GROUP_WRITERS", 1)
    rig = make_rig(infra, sessions, new_topic("consume"), new_topic("dlq"), batched=True)
    first, second = [created("R-1"), created("R-2")], [created("R-3")]

    await rig.consumer.handle_records([record(rig.topic, 0, n, e) for n, e in enumerate(first)])
    async with asyncio.timeout(10):  # not wait_for: a task of its own would let the callback run first
        await rig.consumer.handle_records([record(rig.topic, 0, 2, second[0])])

    assert rig.batches == [["R-1", "R-2"], ["R-3"]]
    assert await effects(sessions, rig.group) == ["R-1", "R-2", "R-3"]


def closed(ticket: uuid.UUID) -> EventEnvelope[Any]:
    payload = TicketClosed(
        ticket_id=ticket, reason="manual", previous_status="resolved", closed_at=datetime.now(UTC)
    )
    return EventEnvelope.wrap(payload, source="/helpdesk/test", subject=str(ticket))


@dataclass
class Stall:
    """A `before_commit` hook holding the transaction of the event numbered ``number`` until released."""

    number: str
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, envelope: EventEnvelope[Any]) -> None:
        if envelope.data.number == self.number:
            self.reached.set()
            await self.release.wait()


async def test_a_partition_goes_on_with_other_tickets_while_a_run_waits_for_its_commit(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any
) -> None:
    stall = Stall("K-stuck")
    rig = make_rig(infra, sessions, new_topic("consume"), new_topic("dlq"), batched=True, before_commit=stall)
    async with running(rig.consumer):
        await send_to(producer, rig.topic, 0, created("K-stuck"))
        await asyncio.wait_for(stall.reached.wait(), 15)
        await send_to(producer, rig.topic, 0, created("K-other"))

        async def other_applied() -> bool:
            return await effects(sessions, rig.group) == ["K-other"]

        await eventually(other_applied)  # while K-stuck's transaction is still open
        # The committed offset stops before the run still in flight: a crash now redelivers it.
        assert 0 not in await committed_offsets(infra, rig.group, rig.topic)
        stall.release.set()

        async def both_committed() -> bool:
            return (await committed_offsets(infra, rig.group, rig.topic)).get(0) == 2

        await eventually(both_committed)
    assert sorted(await effects(sessions, rig.group)) == ["K-other", "K-stuck"]


@dataclass
class Holding:
    """How many workers of one partition are held back right now by runs in flight."""

    now: int = 0


def watch_waits_for_runs(monkeypatch: pytest.MonkeyPatch, *, partition: int) -> Holding:
    """Count the workers of ``partition`` inside `_Run._wait_for_runs`. A call that need not wait
    returns without yielding to the loop, so another task sees the count above 0 only while a
    worker is suspended there, waiting for a run in flight."""
    holding = Holding()
    wait_for_runs = consumer_module._Run._wait_for_runs

    async def watched(self: Any, part: Any, keys: Any, *, room: bool = True) -> None:
        mine = int(part.tp.partition == partition)
        holding.now += mine
        try:
            await wait_for_runs(self, part, keys, room=room)
        finally:
            holding.now -= mine

    monkeypatch.setattr(consumer_module._Run, "_wait_for_runs", watched)
    return holding


@pytest.mark.parametrize(
    "waiting", ["the same ticket's run", "another type's event", "another ticket's run, no room left"]
)
async def test_what_must_keep_its_order_or_finds_no_room_waits_for_the_run_in_flight(
    infra: Infra,
    sessions: Sessions,
    producer: AIOKafkaProducer,
    new_topic: Any,
    monkeypatch: pytest.MonkeyPatch,
    waiting: str,
) -> None:
    """Per key, the events are applied in their order: a run with a ticket of a run in flight waits
    for its commit; an event of a type that is not batched waits for every run in flight. And with
    every run slot of the partition in flight, even another ticket's run waits for one to commit."""
    if waiting == "another ticket's run, no room left":
        monkeypatch.setattr(consumer_module, "_RUNS_IN_FLIGHT", 1)
    stall = Stall("K-stuck")
    rig = make_rig(
        infra,
        sessions,
        new_topic("consume", partitions=2),
        new_topic("dlq"),
        batched=True,
        closed_too=True,
        before_commit=stall,
    )
    ticket, other = uuid.uuid4(), uuid.uuid4()
    follower, applied_as = {
        "the same ticket's run": (created("K-same", ticket=ticket), "K-same"),  # a redelivery, say
        "another type's event": (closed(other), f"closed {other}"),
        "another ticket's run, no room left": (created("K-other", ticket=other), "K-other"),
    }[waiting]
    held = watch_waits_for_runs(monkeypatch, partition=0)
    async with running(rig.consumer):
        await send_to(producer, rig.topic, 0, created("K-stuck", ticket=ticket))
        await asyncio.wait_for(stall.reached.wait(), 15)
        await send_to(producer, rig.topic, 0, follower)
        await send_to(producer, rig.topic, 1, created("K-sentinel"))  # sent last, on a free partition

        async def sentinel_applied() -> bool:
            return await effects(sessions, rig.group) == ["K-sentinel"]

        await eventually(sentinel_applied)

        async def follower_held() -> bool:  # taken up by partition 0's worker, waiting for K-stuck's run
            return held.now > 0

        await eventually(follower_held)
        assert await effects(sessions, rig.group) == ["K-sentinel"]
        stall.release.set()

        async def all_applied() -> bool:
            return len(await effects(sessions, rig.group)) == 3

        await eventually(all_applied)
    assert sorted(await effects(sessions, rig.group)) == sorted(["K-sentinel", "K-stuck", applied_as])


async def test_caught_up_is_set_once_the_backlog_is_handled(
    infra: Infra,
    sessions: Sessions,
    producer: AIOKafkaProducer,
    new_topic: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reached, release = asyncio.Event(), asyncio.Event()

    async def held(envelope: EventEnvelope[Any]) -> None:
        if envelope.data.number == "L-last":
            reached.set()
            await release.wait()

    lag_checks = 0  # passes of the poll loop's lag check (which sets caught_up), completed
    record_lag = consumer_module._Run._record_lag

    async def counted(self: Any, assignment: Any) -> None:
        nonlocal lag_checks
        await record_lag(self, assignment)
        lag_checks += 1

    monkeypatch.setattr(consumer_module._Run, "_record_lag", counted)

    rig = make_rig(infra, sessions, new_topic("consume"), new_topic("dlq"), before_commit=held)
    topic = rig.topic
    for n in range(5):
        event = created(f"L-{n}")
        await send(producer, topic, event.to_json_bytes(), event.subject)
    last = created("L-last")
    await send(producer, topic, last.to_json_bytes(), last.subject)
    async with running(rig.consumer):

        async def five_applied() -> bool:
            return len(await effects(sessions, rig.group)) == 5

        await eventually(five_applied)
        await asyncio.wait_for(reached.wait(), 15)  # the last record's transaction is being held
        checks_then = lag_checks

        async def lag_checked_since() -> bool:  # a whole check that began while it was held
            return lag_checks >= checks_then + 2

        await eventually(lag_checked_since)
        assert not rig.consumer.caught_up.is_set()  # the last record is still being handled
        release.set()
        await asyncio.wait_for(rig.consumer.caught_up.wait(), timeout=15)


@pytest.mark.parametrize(
    "interruption",
    [
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        OperationalError("COMMIT", {}, ConnectionError("the database went away")),
    ],
    ids=["deadlock", "connection-lost"],
)
async def test_an_interrupted_handler_is_retried_until_it_succeeds_never_dead_lettered(
    infra: Infra, sessions: Sessions, producer: AIOKafkaProducer, new_topic: Any, interruption: Exception
) -> None:
    # A short outage or a deadlock says nothing about the event: dead-lettering it after the
    # handler's few attempts would lose a ticket for good when the database comes back a bit late.
    interruptions = 5  # more than the rig's consumer_max_attempts (3)

    async def interrupted(envelope: EventEnvelope[Any]) -> None:
        nonlocal interruptions
        if interruptions:
            interruptions -= 1
            raise interruption

    rig = make_rig(infra, sessions, new_topic("consume"), new_topic("dlq"), before_commit=interrupted)
    event = created("I-1")
    async with running(rig.consumer):
        await send(producer, rig.topic, event.to_json_bytes(), event.subject)

        async def applied() -> bool:
            return await effects(sessions, rig.group) == ["I-1"]

        await eventually(applied)

    assert rig.calls == ["I-1"] * 6
    assert await dlq_rows(sessions, rig.dlq) == []
    assert (await inbox(sessions, rig.group))[event.id].outcome == "processed"
