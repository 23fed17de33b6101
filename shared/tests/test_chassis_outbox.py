"""Unit of work + transactional outbox + relay, on a real migrated database and the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from helpdesk_runtime.procs import free_port
from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.testing import migrate
from helpdesk_shared.chassis.db import INBOX, OUTBOX, create_engine, create_sessionmaker
from helpdesk_shared.chassis.outbox import _LOCK_AND_SELECT_PENDING, _RELAY_LOCK_KEY, OutboxRelay
from helpdesk_shared.chassis.settings import ServiceSettings
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts import TicketCreated, parse_event

SOURCE = "/helpdesk/chassis-test"
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture(scope="module")
async def db(infra: Infra) -> AsyncIterator[tuple[str, Sessions]]:
    url = infra.create_database("chassis_outbox")
    await migrate(url, "intake_service")
    engine = create_engine(url, pool_size=2, max_overflow=2)
    yield url, create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def sessions(db: tuple[str, Sessions]) -> AsyncIterator[Sessions]:
    """The module's sessionmaker; the outbox holds no unpublished row before and after each test."""
    _, maker = db
    async with maker() as session, session.begin():
        await session.execute(delete(OUTBOX).where(OUTBOX.c.published_at.is_(None)))
    yield maker
    async with maker() as session, session.begin():
        await session.execute(delete(OUTBOX).where(OUTBOX.c.published_at.is_(None)))


def settings_for(url: str, bootstrap: str, **overrides: Any) -> ServiceSettings:
    return ServiceSettings(
        database_url=url,
        kafka_bootstrap_servers=bootstrap,
        service_name="chassis-test",
        environment="test",
        **overrides,
    )


def created(ticket_id: uuid.UUID, number: str) -> TicketCreated:
    return TicketCreated(
        ticket_id=ticket_id,
        number=number,
        channel="web",
        kind="question",
        subject="s",
        description="d",
        priority="normal",
        customer_id=uuid.uuid4(),
        created_at=datetime.now(UTC),
    )


async def commit_one_event(maker: Sessions, topic: str, number: str) -> None:
    """A unit of work that commits one `ticket.created` (ticket number ``number``) to ``topic``."""
    async with UnitOfWork(maker, source=SOURCE, topic=topic) as uow:
        ticket = uuid.uuid4()
        uow.publish(created(ticket, number), subject=str(ticket))
        await uow.commit()


async def outbox_rows(maker: Sessions, topic: str) -> list[Any]:
    async with maker() as session:
        return list(
            (
                await session.execute(select(OUTBOX).where(OUTBOX.c.topic == topic).order_by(OUTBOX.c.seq))
            ).all()
        )


async def test_events_are_stored_only_on_commit(sessions: Sessions, new_topic: Any) -> None:
    topic = new_topic("outbox")
    ticket = uuid.uuid4()
    async with UnitOfWork(sessions, source=SOURCE, topic=topic) as uow:
        first = uow.publish(created(ticket, "HD-1"), subject=str(ticket))
        second = uow.publish(created(ticket, "HD-2"), subject=str(ticket))
        await uow.flush()
        assert await outbox_rows(sessions, topic) == []
        await uow.commit()

    rows = await outbox_rows(sessions, topic)
    assert [r.event_id for r in rows] == [first.id, second.id]
    row = rows[0]
    assert row.key == str(ticket)
    assert row.event_type == "helpdesk.ticket.created.v1"
    assert row.headers["ce_type"] == "helpdesk.ticket.created.v1"
    assert row.headers["ce_id"] == str(first.id)
    assert row.payload == orjson.loads(first.json)
    assert (row.published_at, row.attempts, row.last_error) == (None, 0, None)


async def test_an_exception_inside_the_unit_of_work_stores_no_event(
    sessions: Sessions, new_topic: Any
) -> None:
    topic = new_topic("outbox")
    woken: list[bool] = []
    with pytest.raises(RuntimeError, match="use case failed"):
        async with UnitOfWork(
            sessions, source=SOURCE, topic=topic, on_commit=lambda: woken.append(True)
        ) as uow:
            uow.publish(created(uuid.uuid4(), "HD-3"), subject="x")
            await uow.flush()
            raise RuntimeError("use case failed")
    assert await outbox_rows(sessions, topic) == []
    assert woken == []


async def test_on_commit_fires_only_when_events_were_written(sessions: Sessions, new_topic: Any) -> None:
    topic = new_topic("outbox")
    woken: list[bool] = []
    async with UnitOfWork(sessions, source=SOURCE, topic=topic, on_commit=lambda: woken.append(True)) as uow:
        await uow.commit()
    assert woken == []
    async with UnitOfWork(sessions, source=SOURCE, topic=topic, on_commit=lambda: woken.append(True)) as uow:
        uow.publish(created(uuid.uuid4(), "HD-4"), subject="y")
        await uow.commit()
    assert woken == [True]
    assert len(await outbox_rows(sessions, topic)) == 1


async def test_events_can_travel_in_a_statement_of_the_use_case(sessions: Sessions, new_topic: Any) -> None:
    topic = new_topic("outbox")
    woken: list[bool] = []
    ticket = uuid.uuid4()
    async with UnitOfWork(sessions, source=SOURCE, topic=topic, on_commit=lambda: woken.append(True)) as uow:
        first = uow.publish(created(ticket, "HD-S1"), subject=str(ticket))
        second = uow.publish(created(ticket, "HD-S2"), subject=str(ticket))
        insert = uow.events_insert(first_parameter=3)
        assert insert is not None and uow.events_insert(first_parameter=3) is None  # taken once
        sql, parameters = insert
        driver = await uow.driver_connection()
        # The use case's own statement, its parameters first, the events' after them.
        total = await driver.fetchval(f"WITH stored AS ({sql}) SELECT $1::int + $2::int", 40, 2, *parameters)
        assert total == 42
        await uow.commit()  # nothing left to write, and the relay is still woken
    assert [r.event_id for r in await outbox_rows(sessions, topic)] == [first.id, second.id]
    assert woken == [True]


@pytest.mark.parametrize("retention_hours", [0, 24])
async def test_relay_publishes_cloudevents_in_key_order_and_forgets_or_marks_them(
    db: tuple[str, Sessions],
    sessions: Sessions,
    infra: Infra,
    new_topic: Any,
    read_topic: Any,
    retention_hours: float,
) -> None:
    topic = new_topic("outbox", partitions=3)
    keys = [uuid.uuid4(), uuid.uuid4()]
    published = []
    for batch in range(3):  # three transactions, interleaving two keys
        async with UnitOfWork(sessions, source=SOURCE, topic=topic) as uow:
            for key in keys:
                published.append(uow.publish(created(key, f"HD-{key.hex[:4]}-{batch}"), subject=str(key)))
            await uow.commit()
    relay = OutboxRelay(
        settings_for(db[0], infra.kafka_bootstrap, outbox_retention_hours=retention_hours), sessions
    )
    try:
        assert await relay.publish_pending() == 6
        rows = await outbox_rows(sessions, topic)
        if retention_hours:  # kept for inspection, marked
            assert [r.event_id for r in rows] == [e.id for e in published]
            assert all(r.published_at is not None for r in rows)
        else:  # the default: a published row is deleted
            assert rows == []
        assert await relay.publish_pending() == 0
    finally:
        await relay.stop()

    records = await read_topic(topic, 6)
    assert len(records) == 6
    by_id = {e.id: e for e in published}
    for record in records:
        event = parse_event(record.value)
        sent = by_id[event.id]
        # The very text the service wrote: PostgreSQL keeps it as it came, not re-printed.
        assert record.value == sent.json.encode()
        assert event.specversion == "1.0"
        assert event.source == SOURCE
        assert record.key == event.subject.encode()
        headers = dict(record.headers)
        assert headers["ce_type"] == b"helpdesk.ticket.created.v1"
        assert headers["ce_id"] == str(sent.id).encode()
    for key in keys:
        mine = [r for r in records if r.key == str(key).encode()]
        # The partition any Kafka client picks for the key (murmur2, as the Java client does).
        assert {r.partition for r in mine} == {DefaultPartitioner()(str(key).encode(), [0, 1, 2], [0, 1, 2])}
        numbers = [parse_event(r.value).data.number for r in sorted(mine, key=lambda r: r.offset)]
        assert numbers == [f"HD-{key.hex[:4]}-{batch}" for batch in range(3)]


async def test_a_relay_publishes_nothing_while_another_replica_holds_the_relay_lock(
    db: tuple[str, Sessions], sessions: Sessions, infra: Infra, new_topic: Any
) -> None:
    topic = new_topic("outbox-lock")
    await commit_one_event(sessions, topic, "HD-LOCK")
    relay = OutboxRelay(settings_for(db[0], infra.kafka_bootstrap), sessions)
    try:
        async with sessions() as other, other.begin():  # another replica, mid-pass
            await other.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _RELAY_LOCK_KEY})
            assert await relay.publish_pending() == 0
            assert [r.published_at for r in await outbox_rows(sessions, topic)] == [None]
        assert await relay.publish_pending() == 1  # the lock is free again
    finally:
        await relay.stop()
    assert await outbox_rows(sessions, topic) == []


async def relay_lock_holders(maker: Sessions) -> list[str]:
    """The state (`pg_stat_activity.state`) of each backend holding the relay lock."""
    async with maker() as session:
        states = await session.execute(
            text(
                "SELECT a.state FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.classid = CAST(:high AS oid) AND l.objid = CAST(:low AS oid)"
            ),
            {"high": _RELAY_LOCK_KEY >> 32, "low": _RELAY_LOCK_KEY & 0xFFFFFFFF},
        )
        return list(states.scalars())


async def test_a_pass_holds_the_relay_lock_with_no_transaction_open_and_gives_it_back(
    db: tuple[str, Sessions], sessions: Sessions, infra: Infra, new_topic: Any
) -> None:
    topic = new_topic("outbox-lock-pass")
    await commit_one_event(sessions, topic, "HD-PASS")
    relay = OutboxRelay(settings_for(db[0], infra.kafka_bootstrap), sessions)
    send_all = relay._send_all
    holders_while_sending: list[list[str]] = []

    async def watched_send_all(rows: Any) -> dict[int, Exception]:
        holders_while_sending.append(await relay_lock_holders(sessions))
        return await send_all(rows)

    relay._send_all = watched_send_all  # type: ignore[method-assign]
    try:
        assert await relay.publish_pending() == 1
        assert await relay_lock_holders(sessions) == []  # given back after the mark
        assert await relay.publish_pending() == 0  # nothing pending: given back all the same
        assert await relay_lock_holders(sessions) == []
    finally:
        await relay.stop()
    # Held by the pass while it waited for the broker, but no transaction open meanwhile.
    assert holders_while_sending == [["idle"]]
    assert await outbox_rows(sessions, topic) == []


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


async def test_a_pass_converts_only_the_rows_it_sends_however_long_the_backlog(
    sessions: Sessions, new_topic: Any
) -> None:
    """Catching up after a broker outage: each pass reads and converts its batch's payloads, not the
    whole backlog's. Index scans are off, as when the planner's statistics predate the backlog and
    it sorts the pending rows instead of reading them in index order."""
    topic = new_topic("outbox")
    async with UnitOfWork(sessions, source=SOURCE, topic=topic) as uow:
        for i in range(300):
            ticket = uuid.uuid4()
            uow.publish(created(ticket, f"HD-{i}"), subject=str(ticket))
        await uow.commit()
    engine = sessions.kw["bind"]
    async with engine.connect() as connection:
        driver: Any = (await connection.get_raw_connection()).driver_connection
        await driver.execute("SET enable_indexscan = off")
        try:
            explained = await driver.fetchval(
                "EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) " + _LOCK_AND_SELECT_PENDING, _RELAY_LOCK_KEY, 10, []
            )
        finally:
            await driver.execute("RESET enable_indexscan; SELECT pg_advisory_unlock_all()")
    # (SQLAlchemy's asyncpg connections decode json themselves)
    [plan] = orjson.loads(explained) if isinstance(explained, str) else explained
    converting = [
        node
        for node in plan_nodes(plan["Plan"])
        if any("payload)::text" in output for output in node.get("Output", []))
    ]
    assert converting, "the plan converts the payloads somewhere"
    assert all(node["Actual Rows"] * node["Actual Loops"] <= 10 for node in converting), converting


async def test_relay_against_an_unreachable_broker_keeps_rows_and_records_the_failure(
    db: tuple[str, Sessions], sessions: Sessions, new_topic: Any
) -> None:
    topic = new_topic("outbox")
    async with UnitOfWork(sessions, source=SOURCE, topic=topic) as uow:
        uow.publish(created(uuid.uuid4(), "HD-5"), subject="z")
        await uow.commit()
    relay = OutboxRelay(settings_for(db[0], f"127.0.0.1:{free_port()}"), sessions)
    try:
        with pytest.raises(KafkaError):
            await relay.publish_pending()
    finally:
        await relay.stop()
    [row] = await outbox_rows(sessions, topic)
    assert row.published_at is None
    assert row.attempts == 1
    assert "Kafka" in row.last_error
    assert await relay_lock_holders(sessions) == []  # a failed pass gives the lock back too


async def commit_a_big_row_between_two_events(
    sessions: Sessions, topic: str, *, blob_bytes: int, keys: tuple[str, str, str]
) -> None:
    """`HD-before`, a row with a `blob_bytes` payload, `HD-after` — keyed `keys` — in one commit."""
    before, big, after = keys
    async with UnitOfWork(sessions, source=SOURCE, topic=topic) as uow:
        uow.publish(created(uuid.uuid4(), "HD-before"), subject=before)
        uow.add_outbox_message(
            topic=topic,
            key=big,
            event_id=uuid.uuid4(),
            event_type="test.big",
            payload={"blob": "x" * blob_bytes},
            headers={},
        )
        uow.publish(created(uuid.uuid4(), "HD-after"), subject=after)
        await uow.commit()


async def test_a_row_the_broker_can_never_accept_is_parked_and_does_not_block_the_others(
    db: tuple[str, Sessions], sessions: Sessions, infra: Infra, new_topic: Any, read_topic: Any
) -> None:
    topic = new_topic("outbox")
    await commit_a_big_row_between_two_events(sessions, topic, blob_bytes=1_100_000, keys=("a", "big", "b"))
    relay = OutboxRelay(settings_for(db[0], infra.kafka_bootstrap), sessions)
    try:
        assert await relay.publish_pending() == 3
        [big] = await outbox_rows(sessions, topic)  # the two others were published
        assert big.event_type == "test.big"
        assert big.published_at is None and big.parked_at is not None
        assert big.attempts == 1 and "MessageSizeTooLarge" in big.last_error
        assert await relay.publish_pending() == 0  # parked rows are not retried
        assert await relay.refresh_backlog() == 0
        async with sessions() as session, session.begin():  # what an operator does after a fix
            await session.execute(update(OUTBOX).where(OUTBOX.c.seq == big.seq).values(parked_at=None))
        assert await relay.refresh_backlog() == 1
    finally:
        await relay.stop()
    numbers = [parse_event(r.value).data.number for r in await read_topic(topic, 2)]
    assert numbers == ["HD-before", "HD-after"]


async def topic_taking_at_most(infra: Infra, batch_bytes: int, *, label: str) -> str:
    """A new one-partition topic whose broker refuses record batches over `batch_bytes`."""
    topic = f"t{infra.run_id}.chassis.{label}.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        limit = {"max.message.bytes": str(batch_bytes)}
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=limit)])
    finally:
        await admin.close()
    return topic


async def test_a_batch_the_broker_refuses_is_sent_again_record_by_record_to_park_only_the_culprit(
    db: tuple[str, Sessions], sessions: Sessions, infra: Infra, read_topic: Any
) -> None:
    # The topic takes at most 4 KB per record batch: the pass's one batch (every row has the same
    # key) is refused for the 6 KB row; the relay then finds it by sending the rows one by one.
    topic = await topic_taking_at_most(infra, 4_000, label="outbox-small")
    await commit_a_big_row_between_two_events(sessions, topic, blob_bytes=6_000, keys=("same",) * 3)
    relay = OutboxRelay(settings_for(db[0], infra.kafka_bootstrap), sessions)
    try:
        assert await relay.publish_pending() == 3
    finally:
        await relay.stop()
    [big] = await outbox_rows(sessions, topic)  # the two others were published
    assert big.event_type == "test.big"
    assert big.published_at is None and big.parked_at is not None
    assert "MessageSizeTooLarge" in big.last_error
    numbers = [parse_event(r.value).data.number for r in await read_topic(topic, 2)]
    assert numbers == ["HD-before", "HD-after"]


async def test_after_a_refused_batch_its_partition_s_rows_are_resent_in_order(
    db: tuple[str, Sessions], sessions: Sessions, infra: Infra, read_topic: Any
) -> None:
    # 132 rows of ~4 KB on one partition make two record batches: ~130 rows fill the first
    # (512 KB), the rest make a second of ~10 KB. The topic takes 20 KB per batch: the first is
    # refused, the second would be taken — ahead of the first's rows, had it been sent alongside.
    count = 132
    topic = await topic_taking_at_most(infra, 20_000, label="outbox-two-batches")
    async with UnitOfWork(sessions, source=SOURCE, topic=topic) as uow:
        for n in range(count):
            uow.add_outbox_message(
                topic=topic,
                key="same",
                event_id=uuid.uuid4(),
                event_type="test.medium",
                payload={"n": n, "blob": "x" * 4_000},
                headers={},
            )
        await uow.commit()
    relay = OutboxRelay(settings_for(db[0], infra.kafka_bootstrap), sessions)
    try:
        assert await relay.publish_pending() == count
    finally:
        await relay.stop()
    assert await outbox_rows(sessions, topic) == []
    records = await read_topic(topic, count)
    assert [orjson.loads(r.value)["n"] for r in sorted(records, key=lambda r: r.offset)] == list(range(count))


CONNECTION_LOST = (
    asyncpg.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    ConnectionError,
)


async def test_a_relay_whose_connection_died_fails_one_pass_and_the_next_has_a_new_connection(
    db: tuple[str, Sessions], sessions: Sessions, infra: Infra, new_topic: Any
) -> None:
    topic = new_topic("outbox-dead-connection")
    # One pooled connection, never pinged: only telling the pool can get rid of a dead one.
    engine = create_engine(db[0], pool_size=1, max_overflow=0, ping_idle_after=3600.0)
    relay_sessions = create_sessionmaker(engine)
    relay = OutboxRelay(settings_for(db[0], infra.kafka_bootstrap), relay_sessions)
    try:
        for number in ("HD-DEAD-1", "HD-DEAD-2"):
            await commit_one_event(sessions, topic, number)
            if number == "HD-DEAD-1":
                assert await relay.publish_pending() == 1
                async with relay_sessions() as session:
                    pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                async with sessions() as session:
                    await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # Which one depends on when the driver noticed: on the way out ("connection is closed"),
        # mid-query (connection lost), or reading the server's goodbye (terminated by administrator).
        with pytest.raises(CONNECTION_LOST) as lost:
            await relay.publish_pending()
        if type(lost.value) is asyncpg.InterfaceError:  # its subclasses are misuse (bad arguments…)
            assert "connection is closed" in str(lost.value), lost.value
        assert await relay.publish_pending() == 1  # at once: the dead connection was replaced
    finally:
        await relay.stop()
        await engine.dispose()


async def test_housekeeping_forgets_inbox_rows_older_than_the_retention(
    db: tuple[str, Sessions], sessions: Sessions, infra: Infra
) -> None:
    consumer = f"retention-{uuid.uuid4().hex[:8]}"
    old, recent = uuid.uuid4(), uuid.uuid4()
    async with sessions() as session, session.begin():
        await session.execute(
            insert(INBOX),
            [
                {
                    "consumer": consumer,
                    "event_id": old,
                    "event_type": "t",
                    "topic": "t",
                    "processed_at": datetime.now(UTC) - timedelta(days=15),
                },
                {
                    "consumer": consumer,
                    "event_id": recent,
                    "event_type": "t",
                    "topic": "t",
                    "processed_at": datetime.now(UTC) - timedelta(days=13),
                },
            ],
        )
    relay = OutboxRelay(settings_for(db[0], infra.kafka_bootstrap), sessions)
    await relay._housekeeping()
    async with sessions() as session:
        kept = (
            (await session.execute(select(INBOX.c.event_id).where(INBOX.c.consumer == consumer)))
            .scalars()
            .all()
        )
    assert kept == [recent]


async def test_housekeeping_deletes_published_rows_kept_longer_than_their_retention(
    db: tuple[str, Sessions], sessions: Sessions, infra: Infra, new_topic: Any
) -> None:
    topic = new_topic("outbox-retention")
    for number in ("HD-OLD", "HD-RECENT", "HD-PENDING"):
        await commit_one_event(sessions, topic, number)
    old, recent, pending = await outbox_rows(sessions, topic)
    async with sessions() as session, session.begin():
        for row, age in ((old, timedelta(hours=3)), (recent, timedelta(hours=1))):
            published_at = datetime.now(UTC) - age
            await session.execute(
                update(OUTBOX).where(OUTBOX.c.seq == row.seq).values(published_at=published_at)
            )
    relay = OutboxRelay(settings_for(db[0], infra.kafka_bootstrap, outbox_retention_hours=2), sessions)
    await relay._housekeeping()
    assert [r.seq for r in await outbox_rows(sessions, topic)] == [recent.seq, pending.seq]


@pytest.mark.parametrize("interval", [0.0, 0.05])
async def test_commit_wake_ups_are_paced_only_when_an_interval_is_set(interval: float) -> None:
    settings = ServiceSettings(
        database_url="postgresql://unused/unused", environment="test", outbox_wake_interval_seconds=interval
    )
    relay = OutboxRelay(settings, create_sessionmaker(create_engine("postgresql://unused/unused")))
    wakeup = relay._wakeup
    relay.wake()
    assert wakeup.is_set()  # a quiet system publishes at once
    wakeup.clear()
    relay.wake()
    relay.wake()
    assert wakeup.is_set() is (interval == 0)  # paced: the commits in between wait for one pass
    wakeup.clear()
    await asyncio.sleep(interval * 2)
    assert wakeup.is_set() is (interval > 0)  # … which comes once the interval is up


class WatchedEvent(asyncio.Event):
    """An event that counts its waits: how many began, how many are on now."""

    def __init__(self) -> None:
        super().__init__()
        self.began = 0
        self.waiting = 0

    async def wait(self) -> Literal[True]:
        self.began += 1
        self.waiting += 1
        try:
            return await super().wait()
        finally:
            self.waiting -= 1


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"not in time: {what}"
        await asyncio.sleep(0.01)


async def test_the_delay_from_a_commit_to_the_relay_pass_is_measured(
    db: tuple[str, Sessions], sessions: Sessions, infra: Infra, new_topic: Any
) -> None:
    topic = new_topic("outbox")
    settings = ServiceSettings(
        database_url=db[0],
        kafka_bootstrap_servers=infra.kafka_bootstrap,
        service_name=f"relay-delay-{uuid.uuid4().hex[:6]}",
        environment="test",
        outbox_sweep_seconds=60,  # only a commit's wake-up starts a pass in this test
    )
    relay = OutboxRelay(settings, sessions)

    def delays() -> float:
        return (
            REGISTRY.get_sample_value(
                "helpdesk_outbox_relay_delay_seconds_count", {"service": settings.service_name}
            )
            or 0.0
        )

    relay._wakeup = wakeup = WatchedEvent()
    running = asyncio.create_task(relay.run())
    try:
        await until(lambda: wakeup.waiting > 0, "the relay waits for a wake-up")
        async with UnitOfWork(sessions, source=SOURCE, topic=topic, on_commit=relay.wake) as uow:
            ticket = uuid.uuid4()
            uow.publish(created(ticket, "HD-delay"), subject=str(ticket))
            await uow.commit()
        for _ in range(200):
            if not await outbox_rows(sessions, topic):
                break
            await asyncio.sleep(0.05)
        assert await outbox_rows(sessions, topic) == []
        await until(lambda: wakeup.waiting > 0, "the relay waits again after its pass")
        assert delays() == 1  # one commit, one pass after it
        waits = wakeup.began
        relay.wake()  # a wake-up with nothing new still counts once, and only once
        await until(lambda: wakeup.began > waits, "the relay waits again after the woken pass")
        assert delays() == 2
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await relay.stop()


async def test_a_topic_the_broker_lacks_holds_back_only_its_own_rows(
    db: tuple[str, Sessions], sessions: Sessions, infra: Infra, new_topic: Any, read_topic: Any
) -> None:
    # E.g. a dead-letter topic never created where the broker does not create topics itself: its
    # rows wait (and say why), the other topics' events go out as usual, pass after pass.
    missing = f"t{infra.run_id}.chassis.never-created.{uuid.uuid4().hex[:8]}"
    topic = new_topic("outbox")
    await commit_one_event(sessions, missing, "HD-stranded")
    await commit_one_event(sessions, topic, "HD-first")
    relay = OutboxRelay(settings_for(db[0], infra.kafka_bootstrap), sessions)
    try:
        assert await relay.publish_pending() == 2
        await commit_one_event(sessions, topic, "HD-second")
        assert await relay.publish_pending() == 1  # the stranded row is not even read again yet
        [stranded] = await outbox_rows(sessions, missing)
        assert stranded.published_at is None and stranded.parked_at is None  # kept for when it exists
        assert stranded.attempts == 1 and missing in stranded.last_error
        assert await outbox_rows(sessions, topic) == []
    finally:
        await relay.stop()
    numbers = [parse_event(r.value).data.number for r in await read_topic(topic, 2)]
    assert numbers == ["HD-first", "HD-second"]
