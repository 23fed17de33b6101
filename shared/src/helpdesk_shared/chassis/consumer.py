"""Idempotent Kafka consumer with an inbox table and a dead-letter topic.

For every message the handler runs in a unit of work that first records the
event id in the inbox table; a redelivered event finds its id there and
changes nothing. Offsets are committed only after the handler's transaction
committed. A handler that keeps failing is retried a bounded number of times,
then the message goes to the service's dead-letter topic (through the outbox,
in the same transaction that records the failure in the inbox), carrying the
error, and the partition moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import insert as pg_insert

from helpdesk_shared.chassis.db import INBOX
from helpdesk_shared.chassis.logging import correlation_id_var, get_logger
from helpdesk_shared.chassis.metrics import CONSUMER_LAG, EVENTS_CONSUMED
from helpdesk_shared.chassis.settings import ServiceSettings
from helpdesk_shared.chassis.uow import UnitOfWork, UnitOfWorkFactory
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.registry import UnknownEventType, parse_event

log = get_logger(__name__)

Handler = Callable[[EventEnvelope[Any], UnitOfWork], Awaitable[None]]


class PoisonMessage(Exception):
    """A message that can never be handled (not JSON, not a valid event)."""


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
        self._group = settings.consumer_group or settings.service_name
        self.assigned = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                *self._topics,
                bootstrap_servers=self._settings.kafka_bootstrap_servers,
                group_id=self._group,
                client_id=f"helpdesk-{self._service}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=200,
            )
            try:
                await consumer.start()
                backoff = 0.5
                await self._poll(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer_restarting", error=repr(exc), backoff=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                self.assigned.clear()
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            if consumer.assignment():
                self.assigned.set()
            for tp, records in batch.items():
                for record in records:
                    await self.handle_record(record)
                await consumer.commit({tp: records[-1].offset + 1})
            await self._record_lag(consumer)

    async def _record_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            CONSUMER_LAG.labels(self._service, tp.topic, str(tp.partition)).set(max(0, highwater - position))

    async def handle_record(self, record: ConsumerRecord[Any, Any]) -> None:
        """Handle one Kafka record: dispatch, dedupe, retry, dead-letter."""
        try:
            raw = orjson.loads(record.value)
        except (orjson.JSONDecodeError, TypeError) as exc:
            await self._dead_letter(record, None, PoisonMessage(f"not JSON: {exc}"))
            return
        if not isinstance(raw, dict):
            await self._dead_letter(record, raw, PoisonMessage("not a JSON object"))
            return
        event_type = raw.get("type")
        if event_type not in self._handlers:
            return  # another service's concern
        try:
            envelope = parse_event(raw)
        except (ValidationError, UnknownEventType) as exc:
            await self._dead_letter(record, raw, PoisonMessage(f"invalid {event_type}: {exc}"))
            return
        await self.handle_event(envelope, topic=record.topic, raw=raw, record=record)

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
        token = correlation_id_var.set(envelope.correlationid or str(envelope.id))
        try:
            attempts = self._settings.consumer_max_attempts
            for attempt in range(1, attempts + 1):
                try:
                    return await self._apply(handler, envelope, topic)
                except Exception as exc:
                    log.warning(
                        "event_handler_failed",
                        type=envelope.type,
                        event_id=str(envelope.id),
                        attempt=attempt,
                        error=repr(exc),
                    )
                    if attempt == attempts:
                        await self._dead_letter(
                            record,
                            raw or envelope.model_dump(mode="json"),
                            exc,
                            envelope=envelope,
                            topic=topic,
                        )
                        return True
                    await asyncio.sleep(self._settings.consumer_retry_backoff_seconds * 2 ** (attempt - 1))
            return True
        finally:
            correlation_id_var.reset(token)

    async def _apply(self, handler: Handler, envelope: EventEnvelope[Any], topic: str) -> bool:
        async with self._uow_factory() as uow:
            claimed = await uow.session.execute(
                pg_insert(INBOX)
                .values(consumer=self._group, event_id=envelope.id, event_type=envelope.type, topic=topic)
                .on_conflict_do_nothing()
                .returning(INBOX.c.event_id)
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
    ) -> None:
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
                key=envelope.subject if envelope else None,
                event_id=uuid.uuid4(),
                event_type=envelope.type if envelope else "unknown",
                payload=body,
                headers={
                    "x-error": repr(error)[:500],
                    "x-original-topic": original_topic,
                    "x-consumer": self._group,
                },
            )
            await uow.commit()
        EVENTS_CONSUMED.labels(self._service, envelope.type if envelope else "unknown", "dead_lettered").inc()
        log.error("event_dead_lettered", topic=original_topic, error=repr(error)[:500])


def _as_text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", errors="replace")
