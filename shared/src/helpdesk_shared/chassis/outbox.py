"""Outbox relay: publishes committed outbox rows to Kafka, at least once.

Rows are marked published only after the broker acknowledged them
(idempotent producer, acks=all). The relay is woken right after a commit
that wrote events and otherwise sweeps periodically, so events written while
the broker was down go out as soon as it is back. A transaction-scoped
advisory lock keeps a single relay active per database, which keeps the
per-key order of events even with several service replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.chassis.logging import get_logger
from helpdesk_shared.chassis.metrics import OUTBOX_BACKLOG, OUTBOX_ERRORS, OUTBOX_PUBLISHED
from helpdesk_shared.chassis.settings import ServiceSettings

log = get_logger(__name__)

# pg advisory lock key: "outbox" in ASCII, the same in every service database.
_RELAY_LOCK_KEY = 0x6F7574626F78
_CLEANUP_EVERY_SECONDS = 300.0


def new_producer(settings: ServiceSettings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"helpdesk-{settings.service_name}",
        "enable_idempotence": True,  # forces acks="all"
        "linger_ms": 2,
        "request_timeout_ms": 10_000,
        "retry_backoff_ms": 200,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


class OutboxRelay:
    def __init__(self, settings: ServiceSettings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._service = settings.service_name
        self._wakeup = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._last_cleanup = 0.0
        self._last_backlog_refresh = 0.0
        self._producer_lock = asyncio.Lock()

    @property
    def producer(self) -> AIOKafkaProducer | None:
        return self._producer

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        backoff = self._settings.outbox_sweep_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=backoff)
            self._wakeup.clear()
            try:
                while await self.publish_pending() >= self._settings.outbox_batch_size:
                    pass
                backoff = self._settings.outbox_sweep_seconds
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                OUTBOX_ERRORS.labels(self._service).inc()
                log.warning("outbox_relay_failed", error=repr(exc))
                await self._reset_producer()
                backoff = min(max(backoff * 2, 0.5), 10.0)
            try:
                await self._housekeeping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox_housekeeping_failed", error=repr(exc))

    async def stop(self) -> None:
        await self._reset_producer()

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many rows were acknowledged."""
        seqs: list[int] = []
        try:
            async with self._sessionmaker() as session, session.begin():
                if not await session.scalar(select(func.pg_try_advisory_xact_lock(_RELAY_LOCK_KEY))):
                    return 0  # another replica is relaying for this database
                rows = (
                    await session.execute(
                        select(OUTBOX.c.seq, OUTBOX.c.topic, OUTBOX.c.key, OUTBOX.c.payload, OUTBOX.c.headers)
                        .where(OUTBOX.c.published_at.is_(None))
                        .order_by(OUTBOX.c.seq)
                        .limit(self._settings.outbox_batch_size)
                    )
                ).all()
                if not rows:
                    return 0
                seqs = [r.seq for r in rows]
                await asyncio.wait_for(self._send_all(rows), self._settings.outbox_publish_timeout_seconds)
                await session.execute(
                    update(OUTBOX).where(OUTBOX.c.seq.in_(seqs)).values(published_at=func.now())
                )
        except Exception as exc:
            if seqs:
                await self._record_failure(seqs, exc)
            raise
        OUTBOX_PUBLISHED.labels(self._service).inc(len(seqs))
        return len(seqs)

    async def _send_all(self, rows: Sequence[Any]) -> None:
        producer = await self._ensure_producer()
        # Enqueue in order (the idempotent producer keeps per-partition order), then await every ack.
        acks = [
            await producer.send(
                row.topic,
                value=orjson.dumps(row.payload),
                key=row.key.encode() if row.key else None,
                headers=[(k, v.encode()) for k, v in row.headers.items()],
            )
            for row in rows
        ]
        await asyncio.gather(*acks)

    async def _record_failure(self, seqs: list[int], exc: Exception) -> None:
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                update(OUTBOX)
                .where(OUTBOX.c.seq.in_(seqs))
                .values(attempts=OUTBOX.c.attempts + 1, last_error=repr(exc)[:2000])
            )

    async def refresh_backlog(self) -> int:
        """Count unpublished rows and export the gauge (also called on every /metrics scrape)."""
        async with self._sessionmaker() as session:
            count = int(
                await session.scalar(
                    select(func.count()).select_from(OUTBOX).where(OUTBOX.c.published_at.is_(None))
                )
                or 0
            )
        OUTBOX_BACKLOG.labels(self._service).set(count)
        return count

    async def _housekeeping(self) -> None:
        # Wakes come with every commit; counting the backlog each time would double the
        # relay's database work under load, so the gauge is refreshed on the sweep period
        # (and on every /metrics scrape).
        now = time.monotonic()
        if now - self._last_backlog_refresh >= self._settings.outbox_sweep_seconds:
            self._last_backlog_refresh = now
            await self.refresh_backlog()
        if now - self._last_cleanup < _CLEANUP_EVERY_SECONDS:
            return
        self._last_cleanup = now
        cutoff = func.now() - timedelta(hours=self._settings.outbox_retention_hours)
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                delete(OUTBOX).where(OUTBOX.c.published_at.is_not(None), OUTBOX.c.published_at < cutoff)
            )

    async def check_kafka(self) -> None:
        """Raise unless the broker answers a metadata request."""
        producer = await self._ensure_producer()
        await producer.client.fetch_all_metadata()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                producer = new_producer(self._settings)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def _reset_producer(self) -> None:
        # A fresh producer after a failure also resets idempotence sequence state.
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
