"""Idempotent Kafka consumer with an inbox table and a dead-letter topic.

For every message the handler runs in a unit of work that first records the
event id in the inbox table; a redelivered event finds its id there and
changes nothing. Offsets are committed only after the handler's transaction
committed. A handler that keeps failing is retried a bounded number of times,
then the message goes to the service's dead-letter topic (through the outbox,
in the same transaction that records the failure in the inbox), carrying the
error, and the partition moves on.

**Concurrency.** Each assigned partition has a worker task of its own that
takes the partition's records up in offset order, so the events of one key (a
ticket's) are applied in the order they were published, while different
partitions are handled side by side (at most ``consumer_concurrency`` at once):
a slow event, a handler's retries or a waiting row lock hold up only their own
partition. A run of a `Batched` type is handed over to its group transaction
(below) and the worker goes on with the records behind it — up to
``_RUNS_IN_FLIGHT`` runs of the partition waiting for their commits — unless
they share a key with a run in flight, which they then wait for; an event of
any other type waits for every run in flight. So one ticket's events keep their
order while different tickets of a partition commit in whatever order their
transactions do (as they would on different partitions), and a partition under
load is not held up by each commit in turn. The poll loop only fetches and hands
records to the workers, pausing a partition whose worker is more than a poll's
worth behind. A committer task commits, per partition, the offset after the
last record before the first run not yet committed, at most every 200 ms under
load (a crash redelivers what the last commit did not cover; the inbox skips
it). On a rebalance the workers finish the records in hand, their offsets
are committed, and the records they had not started are fetched again by
whoever owns the partition next (the inbox makes any overlap harmless).

**Batches.** A handler registered as `Batched` can also take a run of
consecutive events of its type from one partition (up to
``consumer_max_batch``, whatever has arrived) in ONE transaction: one inbox
claim for all of them, one handler call, one commit — what lets a service keep
up with hundreds of events a second instead of paying a transaction and a
dozen statements for each. If that transaction fails for any reason, the run
is handled again one event at a time (with the usual retries and dead
letters), so a bad event in a batch costs its neighbours nothing but time.
A handler whose first statement is a read can take the claim into it
(`Batched.claiming`, the claim as a CTE: `InboxClaim`), so a run's transaction
is one round trip shorter.

**Group commit across partitions.** Runs of the same batched type that are waiting in several
partitions at once are applied together: the first run to arrive starts a transaction, the runs
that arrive meanwhile wait for it and then go together in the next one (up to
``consumer_max_batch`` events each). So a transaction's fixed cost — connection, BEGIN, inbox
claim, the handler's statements, COMMIT — is paid once per group, not once per partition, and
concurrent runs of one type no longer wait on each other's row locks. Each ticket's events stay in
their order (a run is applied whole, after the runs in flight that share a key with it). If a
group's transaction fails, every run in it is handled again one event at a time, as above.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import insert as pg_insert

from helpdesk_shared.chassis.db import INBOX, transient
from helpdesk_shared.chassis.logging import correlated, get_logger, traced
from helpdesk_shared.chassis.metrics import CONSUMER_LAG, EVENTS_CONSUMED
from helpdesk_shared.chassis.settings import ServiceSettings
from helpdesk_shared.chassis.trace_context import continue_trace
from helpdesk_shared.chassis.uow import UnitOfWork, UnitOfWorkFactory
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.registry import EVENT_TYPES, UnknownEventType, parse_event

log = get_logger(__name__)

Handler = Callable[[EventEnvelope[Any], UnitOfWork], Awaitable[None]]
BatchHandler = Callable[[list[EventEnvelope[Any]], UnitOfWork], Awaitable[None]]
ClaimingBatchHandler = Callable[
    [list[EventEnvelope[Any]], UnitOfWork, "InboxClaim"], Awaitable[set[uuid.UUID]]
]

_COMMIT_INTERVAL_SECONDS = 0.2
# Group transactions of one type in flight at once: while one waits on the database, the next
# group is being decided (one at a time leaves the event loop idle during every round trip).
_GROUP_WRITERS = 2
# Runs of a partition handed over to their group transactions and not yet committed, at most: the
# worker goes on with the records that arrived meanwhile instead of waiting for each commit.
_RUNS_IN_FLIGHT = 4

EVENT_BATCH_SIZE = Histogram(
    "helpdesk_event_batch_size",
    "Events of a batched type applied in one transaction",
    ["service", "type"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
EVENT_GROUP_WAIT = Histogram(
    "helpdesk_event_group_wait_seconds",
    "How long a run of a batched type waited for a group transaction to take it",
    ["service", "type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
EVENT_GROUP_SECONDS = Histogram(
    "helpdesk_event_group_seconds",
    "How long a group transaction of a batched type took (its runs' handling and the commit)",
    ["service", "type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
EVENT_AGE = Histogram(
    "helpdesk_event_age_seconds",
    "Age of the oldest record (since its Kafka timestamp) of each batch a partition worker takes up",
    ["service", "topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
EVENT_BATCH_FALLBACKS = Counter(
    "helpdesk_event_batch_fallbacks_total",
    "Batches whose transaction failed and that were applied again one event at a time",
    ["service", "type"],
)

# Built once: an event's inbox claim is then a cached statement with four parameters.
_CLAIM = pg_insert(INBOX).on_conflict_do_nothing().returning(INBOX.c.event_id)


@dataclass(frozen=True, slots=True)
class InboxClaim:
    """The inbox rows of a run of events, inserted by the run's transaction before anything else:
    an event whose row already existed (a redelivery) is a duplicate and is not applied again."""

    consumer: str
    topic: str
    event_ids: list[uuid.UUID]
    """In run order (a copy of an event appears twice; its row is inserted once)."""
    event_types: list[str]

    @staticmethod
    def cte(first_parameter: int) -> str:
        """A data-modifying CTE named ``claimed``, for the caller's own statement: it inserts the
        rows (parameters `parameters`, numbered from ``first_parameter``) and returns the
        ``event_id`` of each row inserted now."""
        p = first_parameter
        return (
            f"claimed AS (INSERT INTO {INBOX.name} (consumer, event_id, event_type, topic) "
            f"SELECT ${p}, e.id, e.type, ${p + 1} "
            f"FROM unnest(${p + 2}::uuid[], ${p + 3}::text[]) AS e(id, type) "
            "ON CONFLICT DO NOTHING RETURNING event_id)"
        )

    @property
    def parameters(self) -> list[Any]:
        return [self.consumer, self.topic, self.event_ids, self.event_types]


_CLAIM_MANY = f"WITH {InboxClaim.cte(1)} SELECT event_id FROM claimed"


# Retries of an event interrupted by a deadlock or an unavailable database wait at most this long.
_MAX_INTERRUPTED_BACKOFF = 5.0


class PoisonMessage(Exception):
    """A message that can never be handled (not JSON, not a valid event)."""


class UnsupportedEventVersion(Exception):
    """An event this consumer handles, at a version it does not handle (yet): a producer was
    deployed first. Dead-lettered rather than skipped, to be replayed once the consumer is."""


class RetryRun(Exception):
    """Raised by a `Batched` handler whose run lost a race that a second attempt, in a new
    transaction, will most likely win (a concurrent transaction took what the run counted on):
    the run is applied once more as a whole before falling back to one event at a time."""


def _event_name(event_type: str) -> str:
    """The type without its version (`helpdesk.ticket.created` of `helpdesk.ticket.created.v2`);
    empty for a type without one."""
    name, dot, version = event_type.rpartition(".v")
    return name if dot and version.isdecimal() and version.isascii() else ""


def _subject_of(raw: Any, record: ConsumerRecord[Any, Any] | None) -> str | None:
    """The key of a dead-lettered message that did not parse (another version, a malformed one):
    its own subject, else the record's key, so that a replay lands in its ticket's partition."""
    subject = raw.get("subject") if isinstance(raw, dict) else None
    if not (isinstance(subject, str) and subject) and record is not None and isinstance(record.key, bytes):
        subject = record.key.decode("utf-8", "replace")
    if not (isinstance(subject, str) and subject):
        return None
    # Whatever the wire held must still fit the outbox's key column (no NUL, valid UTF-8, 200).
    return subject.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")[:200] or None


def correlation_of(envelope: EventEnvelope[Any]) -> str:
    """The correlation id an event is handled under, and the events its handling publishes carry:
    the event's own, else its id (an event without one starts a chain)."""
    return envelope.correlationid or str(envelope.id)


def trace_of(envelope: EventEnvelope[Any]) -> str:
    """A traceparent to handle an event under, and for the events its handling publishes: a child
    of the event's own (a new trace when it has none, or an invalid one). Each call is a new span."""
    return continue_trace(envelope.traceparent)


@dataclass(frozen=True)
class Batched:
    """A handler that can also apply a run of consecutive events of its type in one transaction.

    ``many`` gets the events in partition order, each once (duplicates already dropped by the
    inbox), inside the unit of work that holds their inbox rows; it must leave the unit of work
    committable and behave as ``one`` would have for each event in turn.

    ``claiming``, given instead of ``many``, saves the run a round trip: it gets every event of
    the run and their `InboxClaim`, sends the claim's CTE with its first statement, applies only
    the events claimed now (in order, a copy of an event once) and returns their ids.

    A run is not handled under one correlation id or trace: the handler publishes each event's
    consequences under that event's (`correlation_of`, `trace_of`).
    """

    one: Handler
    many: BatchHandler | None = None
    claiming: ClaimingBatchHandler | None = None

    def __post_init__(self) -> None:
        if (self.many is None) == (self.claiming is None):
            raise TypeError("a Batched handler takes either many or claiming")

    async def __call__(self, envelope: EventEnvelope[Any], uow: UnitOfWork) -> None:
        await self.one(envelope, uow)


@dataclass(frozen=True)
class _Decoded:
    record: ConsumerRecord[Any, Any] | None
    raw: dict[str, Any]
    envelope: EventEnvelope[Any]


class _WaitingRun(NamedTuple):
    run: list[_Decoded]
    applied: asyncio.Future[bool]
    since: float
    """When it was handed over (`time.monotonic`)."""


@dataclass
class _RunGroup:
    """Runs of one batched type (and topic) waiting to be applied together, and their writers."""

    waiting: collections.deque[_WaitingRun] = field(default_factory=collections.deque)
    writers: set[asyncio.Task[None]] = field(default_factory=set)


@dataclass(frozen=True)
class ConsumerTuning:
    """How the consumer polls, parallelises and stays in its group.

    Read from the service's settings when they declare these fields (routing's do, as
    ``ROUTING_CONSUMER_*``), else these defaults.
    """

    concurrency: int = 8
    """Partitions handled at the same time (1: one record at a time, as a single loop would)."""
    max_poll_records: int = 200
    """Records fetched per poll; a partition whose worker is further behind is paused."""
    session_timeout_ms: int = 10_000
    """How long the group waits for a silent member (a SIGKILLed one) before rebalancing its
    partitions; at least the broker's ``group.min.session.timeout.ms`` (6 s by default)."""
    heartbeat_interval_ms: int = 3_000
    """At most a third of the session timeout."""
    max_batch: int = 100
    """Most events of one `Batched` type applied in one transaction."""
    fetch_min_bytes: int = 1
    """The broker answers a fetch once it has this much for the consumer (or the wait is up)."""
    fetch_max_wait_ms: int = 500
    """How long the broker may hold a fetch for ``fetch_min_bytes``: also how often an idle
    consumer asks again."""

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ConsumerTuning:
        defaults = cls()
        tuning = cls(
            concurrency=int(getattr(settings, "consumer_concurrency", defaults.concurrency)),
            max_poll_records=int(getattr(settings, "consumer_max_poll_records", defaults.max_poll_records)),
            session_timeout_ms=int(
                getattr(settings, "consumer_session_timeout_ms", defaults.session_timeout_ms)
            ),
            heartbeat_interval_ms=int(
                getattr(settings, "consumer_heartbeat_interval_ms", defaults.heartbeat_interval_ms)
            ),
            max_batch=int(getattr(settings, "consumer_max_batch", defaults.max_batch)),
            fetch_min_bytes=int(getattr(settings, "consumer_fetch_min_bytes", defaults.fetch_min_bytes)),
            fetch_max_wait_ms=int(
                getattr(settings, "consumer_fetch_max_wait_ms", defaults.fetch_max_wait_ms)
            ),
        )
        positive = (
            tuning.concurrency,
            tuning.max_poll_records,
            tuning.max_batch,
            tuning.fetch_min_bytes,
            tuning.fetch_max_wait_ms,
        )
        if min(positive) < 1:
            raise ValueError(
                "consumer concurrency, max_poll_records, max_batch, fetch_min_bytes and fetch_max_wait_ms "
                "must be at least 1"
            )
        if tuning.heartbeat_interval_ms * 3 > tuning.session_timeout_ms:
            raise ValueError("the consumer heartbeat interval must be at most a third of the session timeout")
        return tuning


@dataclass
class _Partition:
    """One assigned partition: the records fetched and not yet handled, and its worker."""

    tp: TopicPartition
    pending: collections.deque[ConsumerRecord[Any, Any]] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    done: int | None = None
    """The offset after the last record whose transaction committed (what to commit)."""
    committed: int | None = None
    stopping: bool = False
    paused: bool = False
    taking_up: bool = False
    """The worker is handling records it took from ``pending`` (or handing their runs over)."""
    handed_over: collections.deque[_HandedOver] = field(default_factory=collections.deque)
    """What the worker went on from, in offset order: runs waiting for their transaction, and
    records handled meanwhile (their offsets are committable only after the runs before them)."""


@dataclass(frozen=True)
class _HandedOver:
    end: int
    """The offset after its last record."""
    task: asyncio.Task[None] | None = None
    """The run's handling; None for records already handled."""
    keys: frozenset[bytes] | None = None
    """The run's record keys; None when some record has none (it waits for every run before it)."""

    @property
    def in_flight(self) -> bool:
        return self.task is not None and not self.task.done()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, run: _Run) -> None:
        self._run = run

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._run.release(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        return None


class EventConsumer:
    def __init__(
        self,
        *,
        settings: ServiceSettings,
        topics: list[str],
        dead_letter_topic: str,
        handlers: dict[str, Handler],
        uow_factory: UnitOfWorkFactory,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._dlq = dead_letter_topic
        self._handlers = handlers
        self._uow_factory = uow_factory
        self._service = settings.service_name
        self._group = settings.group_id
        self.tuning = ConsumerTuning.from_settings(settings)
        self.assigned = asyncio.Event()
        # Set the first time every assigned partition was handled to its end: work that must not
        # act on a backlog's stale picture (routing's SLA clocks after a restart) waits for it.
        self.caught_up = asyncio.Event()
        self._groups: dict[tuple[str, str], _RunGroup] = {}
        # The handled types by name: another version of one is dead-lettered, not skipped (a
        # producer deployed first would otherwise see its events vanish until this one catches up).
        self._versions: dict[str, list[str]] = {}
        for event_type in sorted(handlers):
            if name := _event_name(event_type):
                self._versions.setdefault(name, []).append(event_type)
        # Made up front, so that skipping another service's event costs a dict lookup; types the
        # registry does not know share one label value, so whatever arrives cannot add series.
        self._ignored = {
            event_type: EVENTS_CONSUMED.labels(self._service, event_type, "ignored")
            for event_type in EVENT_TYPES
            if event_type not in handlers
        }
        self._ignored_unregistered = EVENTS_CONSUMED.labels(self._service, "unknown", "ignored")

    async def run(self) -> None:
        backoff = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._settings.kafka_bootstrap_servers,
                group_id=self._group,
                client_id=f"helpdesk-{self._service}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.tuning.max_poll_records,
                session_timeout_ms=self.tuning.session_timeout_ms,
                heartbeat_interval_ms=self.tuning.heartbeat_interval_ms,
                fetch_min_bytes=self.tuning.fetch_min_bytes,
                fetch_max_wait_ms=self.tuning.fetch_max_wait_ms,
            )
            run = _Run(self, consumer)
            try:
                consumer.subscribe(topics=self._topics, listener=_Rebalance(run))
                await consumer.start()
                backoff = 0.5
                await run.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer_restarting", error=repr(exc), backoff=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                self.assigned.clear()
                with contextlib.suppress(Exception):
                    await run.close()
                await self._stop_group_writers()
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def handle_records(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        """Handle consecutive records of one partition in order, each run to its commit —
        dispatch, dedupe, retry, dead-letter: runs of a `Batched` type together (see the module
        docstring; even a run of one, its path being the lighter one), anything else one by one."""
        for handler, run in self.runs(await self.decode_all(records)):
            await self.handle_run(handler, run)

    async def decode_all(self, records: list[ConsumerRecord[Any, Any]]) -> list[_Decoded]:
        """The records' events this consumer handles (poison ones and other versions of them
        dead-lettered, other types skipped)."""
        return [d for record in records if (d := await self._decode(record)) is not None]

    def runs(self, decoded: list[_Decoded]) -> Iterator[tuple[Handler, list[_Decoded]]]:
        """The events in order, as runs of consecutive events of one `Batched` type (up to
        ``max_batch``) and single events of any other."""
        start = 0
        while start < len(decoded):
            first = decoded[start]
            handler = self._handlers[first.envelope.type]
            end = start + 1
            if isinstance(handler, Batched):
                limit = min(len(decoded), start + self.tuning.max_batch)
                while end < limit and decoded[end].envelope.type == first.envelope.type:
                    end += 1
            yield handler, decoded[start:end]
            start = end

    async def handle_run(self, handler: Handler, run: list[_Decoded]) -> None:
        """One of `runs`, to its commit."""
        if isinstance(handler, Batched):
            await self._handle_batch(handler, run)
        else:
            first = run[0]
            await self.handle_event(first.envelope, topic=_topic(first), raw=first.raw, record=first.record)

    async def _decode(self, record: ConsumerRecord[Any, Any]) -> _Decoded | None:
        """The record's event; None when it is another service's concern (skipped, counted as
        ignored) or was dead-lettered."""
        try:
            raw = orjson.loads(record.value)
        except (orjson.JSONDecodeError, TypeError) as exc:
            await self._dead_letter(record, None, PoisonMessage(f"not JSON: {exc}"))
            return None
        if not isinstance(raw, dict):
            await self._dead_letter(record, raw, PoisonMessage("not a JSON object"))
            return None
        event_type = raw.get("type")
        if not isinstance(event_type, str):  # no service's concern; a list cannot even be looked up
            await self._dead_letter(
                record, raw, PoisonMessage(f"the type is not a string: {event_type!r}"[:500])
            )
            return None
        if event_type not in self._handlers:
            if versions := self._versions.get(_event_name(event_type)):
                await self._dead_letter(
                    record,
                    raw,
                    UnsupportedEventVersion(
                        f"{event_type}: this consumer handles only {', '.join(versions)}; "
                        "replay it once the consumer handles that version"
                    ),
                    event_type=event_type,
                )
            else:  # another service's concern: each reads what it needs from the shared topics
                self._ignored.get(event_type, self._ignored_unregistered).inc()
            return None
        try:
            envelope = parse_event(raw)
        except (ValidationError, UnknownEventType) as exc:
            await self._dead_letter(
                record, raw, PoisonMessage(f"invalid {event_type}: {exc}"), event_type=event_type
            )
            return None
        return _Decoded(record, raw, envelope)

    async def _handle_batch(self, handler: Batched, run: list[_Decoded]) -> None:
        """Apply a run of events in one transaction, together with the runs of the same type
        waiting in other partitions; if that fails, this run one event at a time instead."""
        group = self._groups.setdefault((run[0].envelope.type, _topic(run[0])), _RunGroup())
        applied: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        group.waiting.append(_WaitingRun(run, applied, time.monotonic()))
        if len(group.writers) < _GROUP_WRITERS:
            writer = asyncio.create_task(self._write_group(handler, group), name="consumer-group")
            group.writers.add(writer)  # leaves them itself, as it stops (see `_write_group`)
        if await applied:
            return
        for decoded in run:
            await self.handle_event(
                decoded.envelope, topic=_topic(decoded), raw=decoded.raw, record=decoded.record
            )

    async def _stop_group_writers(self) -> None:
        """The session is over (its workers are stopped): a group transaction still in flight is
        cancelled (rolled back; its records are fetched again by whoever owns the partitions)."""
        writers = [w for g in self._groups.values() for w in g.writers]
        for writer in writers:
            writer.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        self._groups.clear()

    async def _write_group(self, handler: Batched, group: _RunGroup) -> None:
        """Apply the waiting runs, a group per transaction, until none is left."""
        members: list[_WaitingRun] = []
        try:
            while group.waiting:
                members, events = [], 0
                while group.waiting and (
                    not members or events + len(group.waiting[0].run) <= self.tuning.max_batch
                ):
                    members.append(group.waiting.popleft())
                    events += len(members[-1].run)
                started = time.monotonic()
                event_type = members[0].run[0].envelope.type
                waited = EVENT_GROUP_WAIT.labels(self._service, event_type)
                for member in members:
                    waited.observe(started - member.since)
                ok = await self._apply_run(handler, [d for member in members for d in member.run])
                EVENT_GROUP_SECONDS.labels(self._service, event_type).observe(time.monotonic() - started)
                for member in members:
                    if not member.applied.done():  # its worker may have been cancelled meanwhile
                        member.applied.set_result(ok)
        finally:  # cancelled (shutdown): whoever still waits falls back or is cancelled too
            # Out of the writers in the very step that found nothing left to apply. A done-callback
            # would run only after the workers just released: a run one of them handed over
            # meanwhile found every writer slot taken by finished writers, and waited forever. (A
            # writer cancelled before it ever ran is left in a group the session then drops.)
            if (this_writer := asyncio.current_task()) is not None:
                group.writers.discard(this_writer)
            for member in [*members, *group.waiting]:
                if not member.applied.done():
                    member.applied.set_result(False)

    async def _apply_run(self, handler: Batched, run: list[_Decoded]) -> bool:
        """One transaction: the inbox claim of every event, the handler for the fresh ones, the
        commit — once more if the handler says `RetryRun`. False (rolled back, counted as a
        fallback) when it failed."""
        event_type = run[0].envelope.type
        try:
            try:
                fresh = await self._apply_run_once(handler, run)
            except RetryRun as exc:  # lost a race: the next attempt sees the winner's commit
                log.info("event_batch_retried", type=event_type, events=len(run), error=repr(exc))
                fresh = await self._apply_run_once(handler, run)
        except Exception as exc:
            log.warning("event_batch_failed", type=event_type, events=len(run), error=repr(exc))
            EVENT_BATCH_FALLBACKS.labels(self._service, event_type).inc()
            return False
        EVENTS_CONSUMED.labels(self._service, event_type, "processed").inc(len(fresh))
        if duplicates := len(run) - len(fresh):
            EVENTS_CONSUMED.labels(self._service, event_type, "duplicate").inc(duplicates)
        EVENT_BATCH_SIZE.labels(self._service, event_type).observe(len(run))
        return True

    async def _apply_run_once(self, handler: Batched, run: list[_Decoded]) -> list[EventEnvelope[Any]]:
        """The run's transaction; returns the events that were fresh (the others: duplicates)."""
        envelopes = [d.envelope for d in run]
        claim = InboxClaim(
            self._group, _topic(run[0]), [e.id for e in envelopes], [e.type for e in envelopes]
        )
        async with self._uow_factory() as uow:
            if handler.claiming is not None:  # the claim travels with the handler's first statement
                claimed = await handler.claiming(envelopes, uow, claim)
            else:
                driver = await uow.driver_connection()
                claimed = {row[0] for row in await driver.fetch(_CLAIM_MANY, *claim.parameters)}
            fresh: list[EventEnvelope[Any]] = []
            unseen = set(claimed)  # the handler's set is left as it returned it
            for envelope in envelopes:
                if envelope.id in unseen:
                    unseen.discard(envelope.id)  # a copy later in the run is a duplicate
                    fresh.append(envelope)
            if fresh:
                if handler.many is not None:
                    await handler.many(fresh, uow)
                await uow.commit()
        return fresh

    async def handle_event(
        self,
        envelope: EventEnvelope[Any],
        *,
        topic: str,
        raw: dict[str, Any] | None = None,
        record: ConsumerRecord[Any, Any] | None = None,
    ) -> bool:
        """Apply one event exactly once; returns False when it was a duplicate."""
        handler = self._handlers[envelope.type]
        with correlated(correlation_of(envelope)), traced(trace_of(envelope)):
            attempts = self._settings.consumer_max_attempts
            attempt = interrupted = 0
            while True:
                try:
                    return await self._apply(handler, envelope, topic)
                except Exception as exc:
                    # A deadlock or the database away says nothing about the event: tried again
                    # for as long as it takes, never dead-lettered for it (the partition waits, and
                    # its lag shows it). Any other failure counts towards the dead-letter topic.
                    interruption = transient(exc)
                    if interruption:
                        interrupted += 1
                    else:
                        attempt += 1
                    log.warning(
                        "event_handler_interrupted" if interruption else "event_handler_failed",
                        type=envelope.type,
                        event_id=str(envelope.id),
                        attempt=attempt,
                        interrupted=interrupted,
                        error=repr(exc),
                    )
                    if not interruption and attempt >= attempts:
                        await self._dead_letter(
                            record,
                            raw or envelope.model_dump(mode="json"),
                            exc,
                            envelope=envelope,
                            topic=topic,
                        )
                        return True
                    await asyncio.sleep(
                        self._backoff(min(interrupted, 8), cap=_MAX_INTERRUPTED_BACKOFF)
                        if interruption
                        else self._backoff(attempt)
                    )

    def _backoff(self, attempt: int, cap: float | None = None) -> float:
        delay: float = self._settings.consumer_retry_backoff_seconds * 2.0 ** (attempt - 1)
        return delay if cap is None else min(delay, cap)

    async def _apply(self, handler: Handler, envelope: EventEnvelope[Any], topic: str) -> bool:
        async with self._uow_factory() as uow:
            claimed = await uow.session.execute(
                _CLAIM,
                {
                    "consumer": self._group,
                    "event_id": envelope.id,
                    "event_type": envelope.type,
                    "topic": topic,
                },
            )
            if claimed.first() is None:
                EVENTS_CONSUMED.labels(self._service, envelope.type, "duplicate").inc()
                return False
            await handler(envelope, uow)
            await uow.commit()
        EVENTS_CONSUMED.labels(self._service, envelope.type, "processed").inc()
        return True

    async def _dead_letter(
        self,
        record: ConsumerRecord[Any, Any] | None,
        raw: Any,
        error: Exception,
        *,
        envelope: EventEnvelope[Any] | None = None,
        topic: str | None = None,
        event_type: str | None = None,
    ) -> None:
        """Send the message to the dead-letter topic; ``event_type`` names one that did not parse."""
        event_type = envelope.type if envelope is not None else event_type or "unknown"
        original_topic = record.topic if record is not None else (topic or "")
        body = {
            "original": raw if raw is not None else _as_text(record.value if record else b""),
            "error": repr(error)[:4000],
            "consumer": self._group,
            "topic": original_topic,
            "partition": record.partition if record else None,
            "offset": record.offset if record else None,
        }
        async with self._uow_factory() as uow:
            if envelope is not None:
                await uow.session.execute(
                    pg_insert(INBOX)
                    .values(
                        consumer=self._group,
                        event_id=envelope.id,
                        event_type=envelope.type,
                        topic=original_topic,
                        outcome="dead_lettered",
                        error=repr(error)[:4000],
                    )
                    .on_conflict_do_nothing()
                )
            uow.add_outbox_message(
                topic=self._dlq,
                key=envelope.subject if envelope else _subject_of(raw, record),
                event_id=uuid.uuid4(),
                event_type=event_type,
                payload=body,
                headers={
                    "x-error": repr(error)[:500],
                    "x-original-topic": original_topic,
                    "x-consumer": self._group,
                },
            )
            await uow.commit()
        EVENTS_CONSUMED.labels(self._service, event_type, "dead_lettered").inc()
        log.error("event_dead_lettered", topic=original_topic, error=repr(error)[:500])


def _keys(run: list[_Decoded]) -> frozenset[bytes] | None:
    """The keys of a run's records; None when one has none (ordered after everything)."""
    keys = [d.record.key if d.record is not None else None for d in run]
    return None if None in keys else frozenset(k for k in keys if k is not None)


def _end(run: list[_Decoded]) -> int:
    """The offset after a run's last record."""
    last = run[-1].record
    assert last is not None, "runs taken up by a partition worker are records"
    return int(last.offset) + 1


def _topic(decoded: _Decoded) -> str:
    return decoded.record.topic if decoded.record is not None else ""


def _as_text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", errors="replace")


class _Run:
    """One consumer session: the poll loop, a worker per partition and the committer."""

    def __init__(self, owner: EventConsumer, consumer: AIOKafkaConsumer) -> None:
        self._owner = owner
        self._consumer = consumer
        self._tuning = owner.tuning
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._slots = asyncio.Semaphore(self._tuning.concurrency)
        self._to_commit = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._committer: asyncio.Task[None] | None = None

    async def poll(self) -> None:
        consumer = self._consumer
        self._committer = asyncio.create_task(self._commit_loop(), name="consumer-committer")
        while True:
            if self._failure.done():
                self._failure.result()  # a worker or the committer failed: restart the consumer
            batch = await consumer.getmany(timeout_ms=500)
            assignment = consumer.assignment()
            if assignment:
                self._owner.assigned.set()
            for tp, records in batch.items():
                if tp in assignment and records:
                    self._dispatch(tp, records)
            await self._record_lag(assignment)

    def _dispatch(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]) -> None:
        part = self._partitions.get(tp)
        if part is not None and part.stopping:
            return  # being revoked: fetched again from the committed offset by its next owner
        if part is None:
            part = self._partitions[tp] = _Partition(tp)
            part.task = asyncio.create_task(self._work(part), name=f"consumer-{tp.topic}-{tp.partition}")
        part.pending.extend(records)
        part.wake.set()
        if len(part.pending) >= self._tuning.max_poll_records and not part.paused:
            self._consumer.pause(tp)  # resumed by the worker once it has caught up
            part.paused = True

    @contextlib.contextmanager
    def _failure_ends_session(self) -> Iterator[None]:
        """A worker's or the committer's unexpected error ends the session: `poll` re-raises it
        and the consumer restarts (cancellation is the session ending, not a failure)."""
        try:
            yield
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if not self._failure.done():
                self._failure.set_exception(exc)
            raise

    async def _work(self, part: _Partition) -> None:
        with self._failure_ends_session():
            try:
                while not part.stopping:
                    if not part.pending:
                        part.wake.clear()
                        await part.wake.wait()
                        continue
                    async with self._slots:
                        if part.stopping:
                            break
                        # Whatever has arrived, up to a batch: runs of a batched type are handed over
                        # to their group transactions, anything else handled one event at a time.
                        taken = min(len(part.pending), self._tuning.max_batch)
                        records = [part.pending.popleft() for _ in range(taken)]
                        # The oldest record's age as its handling starts: broker, fetch and the wait
                        # behind this partition's previous records (clocks of other hosts permitting).
                        age = time.time() - records[0].timestamp / 1000
                        EVENT_AGE.labels(self._owner._service, part.tp.topic).observe(max(0.0, age))
                        part.taking_up = True
                        try:
                            await self._take_up(part, records)
                        finally:
                            part.taking_up = False
                    if part.paused and len(part.pending) <= self._tuning.max_poll_records // 2:
                        part.paused = False
                        if part.tp in self._consumer.assignment():
                            self._consumer.resume(part.tp)
            except asyncio.CancelledError:
                for handed in part.handed_over:
                    if handed.task is not None:
                        handed.task.cancel()
                raise
            finally:  # the partition's worker ends with the runs it handed over
                await asyncio.gather(
                    *(h.task for h in part.handed_over if h.task is not None), return_exceptions=True
                )
                self._settle(part)

    async def _take_up(self, part: _Partition, records: list[ConsumerRecord[Any, Any]]) -> None:
        """Hand the records' runs of batched types over to their group transactions and handle the
        other events; a run waits for the runs in flight that share a key with it (and for room),
        any other event for every run in flight: each key's events are applied in their order."""
        owner = self._owner
        for handler, run in owner.runs(await owner.decode_all(records)):
            if isinstance(handler, Batched):
                keys = _keys(run)
                await self._wait_for_runs(part, keys)
                task = asyncio.create_task(self._apply_handed_over(handler, run), name="consumer-run")
                part.handed_over.append(_HandedOver(_end(run), task, keys))
                task.add_done_callback(functools.partial(self._settled_run, part))
            else:
                await self._wait_for_runs(part, None, room=False)
                await owner.handle_run(handler, run)
        part.handed_over.append(_HandedOver(records[-1].offset + 1))
        self._settle(part)

    async def _wait_for_runs(
        self, part: _Partition, keys: frozenset[bytes] | None, *, room: bool = True
    ) -> None:
        """Until no run in flight shares a key with ``keys`` (None: until none is in flight) and,
        with ``room``, fewer than `_RUNS_IN_FLIGHT` are."""
        while True:
            flying = [h for h in part.handed_over if h.in_flight]
            blocking = [h for h in flying if keys is None or h.keys is None or h.keys & keys]
            if not blocking and room and len(flying) >= _RUNS_IN_FLIGHT:
                blocking = flying
            if not blocking:
                return
            await asyncio.wait(
                [h.task for h in blocking if h.task is not None], return_when=asyncio.FIRST_COMPLETED
            )

    def _settled_run(self, part: _Partition, _: asyncio.Task[None]) -> None:
        self._settle(part)

    async def _apply_handed_over(self, handler: Batched, run: list[_Decoded]) -> None:
        with self._failure_ends_session():
            await self._owner.handle_run(handler, run)

    def _settle(self, part: _Partition) -> None:
        """Move the partition's committable offset past what is handled, up to the first run still
        in flight (or one that failed: the session ends and its records are fetched again)."""
        moved = False
        while part.handed_over and not part.handed_over[0].in_flight:
            task = part.handed_over[0].task
            if task is not None and (task.cancelled() or task.exception() is not None):
                break
            part.done = part.handed_over.popleft().end
            moved = True
        if moved:
            self._to_commit.set()

    async def _commit_loop(self) -> None:
        with self._failure_ends_session():
            while True:
                await self._to_commit.wait()
                self._to_commit.clear()
                try:
                    await self.commit()
                except KafkaError as exc:  # e.g. a rebalance under way: the next commit carries it
                    log.warning("consumer_commit_failed", error=repr(exc))
                    await asyncio.sleep(0.5)
                    self._to_commit.set()
                # Under load, one commit per interval carries every partition's progress (a commit
                # per event cost a broker round trip each); after a quiet spell the next is immediate.
                await asyncio.sleep(_COMMIT_INTERVAL_SECONDS)

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit the offset after each partition's last committed transaction (if it moved)."""
        async with self._commit_lock:
            assignment = self._consumer.assignment()
            offsets = {
                tp: part.done
                for tp, part in self._partitions.items()
                if part.done is not None
                and part.done != part.committed
                and tp in assignment
                and (only is None or tp in only)
            }
            if not offsets:
                return
            await self._consumer.commit(offsets)
            for tp, offset in offsets.items():
                self._partitions[tp].committed = offset

    async def release(self, revoked: set[TopicPartition]) -> None:
        """Partitions taken away by a rebalance: finish the records in hand, commit, forget the rest."""
        parts = [self._partitions[tp] for tp in revoked if tp in self._partitions]
        await self._stop(parts)
        try:
            await self.commit(revoked)
        except Exception as exc:  # the next owner starts earlier; the inbox skips what was done
            log.warning("consumer_commit_on_revoke_failed", error=repr(exc))
        for part in parts:
            if self._partitions.get(part.tp) is part:
                del self._partitions[part.tp]

    async def _stop(self, parts: list[_Partition], *, cancel: bool = False) -> None:
        for part in parts:
            part.stopping = True
            part.pending.clear()
            part.wake.set()
            if cancel and part.task is not None:
                part.task.cancel()
        # The workers' own failures were reported through `_failure`; only wait for them here.
        await asyncio.gather(*(p.task for p in parts if p.task is not None), return_exceptions=True)

    async def close(self) -> None:
        """Stop everything; keep what was handled (best effort) so that a restart resumes after it."""
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        await self._stop(list(self._partitions.values()), cancel=True)
        if self._failure.done() and not self._failure.cancelled():
            self._failure.exception()  # reported by `poll` (or moot on shutdown): mark it retrieved
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.commit(), timeout=5.0)

    async def _record_lag(self, assignment: set[TopicPartition]) -> None:
        """Records not yet handled: the high watermark minus the next offset to handle."""
        service = self._owner._service
        behind = not assignment
        for tp in assignment:
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                behind = True  # not fetched yet: its end is unknown
                continue
            part = self._partitions.get(tp)
            if part is not None and part.pending:
                position = part.pending[0].offset
            elif part is not None and part.done is not None:
                position = part.done
            else:
                position = await self._consumer.position(tp)
            CONSUMER_LAG.labels(service, tp.topic, str(tp.partition)).set(max(0, highwater - position))
            busy = part is not None and (part.taking_up or any(h.in_flight for h in part.handed_over))
            behind = behind or highwater > position or busy
        if not behind:
            self._owner.caught_up.set()
