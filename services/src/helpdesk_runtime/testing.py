"""Test support: a service app in-process over ASGI on a real migrated database.

Per-service tests use `run_service(...)`; e2e tests use `Stack` with real
processes. Both talk to the real PostgreSQL and Kafka of the `infra` fixture.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka import ConsumerRecord
from fastapi import FastAPI

from helpdesk_shared.chassis.app import ServiceRuntime
from helpdesk_shared.chassis.auth import mint_token
from helpdesk_shared.chassis.migrations import upgrade_database
from helpdesk_shared.chassis.settings import DEV_JWT_SECRET, ServiceSettings
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.envelope import EventEnvelope


def auth_headers(*roles: str, sub: str | None = None, secret: str = DEV_JWT_SECRET) -> dict[str, str]:
    token = mint_token(secret=secret, subject=sub or str(uuid.uuid4()), roles=roles)
    return {"Authorization": f"Bearer {token}"}


def partition_records(events: list[EventEnvelope[Any]], topic: str) -> list[ConsumerRecord[Any, Any]]:
    """The events as one partition's consecutive Kafka records (for `EventConsumer.handle_records`)."""
    return [
        ConsumerRecord(
            topic=topic,
            partition=0,
            offset=n,
            timestamp=0,
            timestamp_type=0,
            key=e.subject.encode() if e.subject else None,
            value=e.to_json_bytes(),
            checksum=None,
            serialized_key_size=0,
            serialized_value_size=0,
            headers=(),
        )
        for n, e in enumerate(events)
    ]


async def consume_from(harness: ServiceHarness, topic: str, *events: EventEnvelope[Any]) -> None:
    """The events as they come off `topic` into the service's consumer: a type it has no handler
    for is skipped there, as in production."""
    consumer = harness.runtime.consumer
    assert consumer is not None
    await consumer.handle_records(partition_records(list(events), topic))


async def migrate(url: str, package: str) -> None:
    await asyncio.to_thread(upgrade_database, url, package)


@dataclass
class ServiceHarness:
    app: FastAPI
    client: httpx.AsyncClient
    settings: ServiceSettings

    @property
    def runtime(self) -> ServiceRuntime:
        runtime: ServiceRuntime = self.app.state.runtime
        return runtime

    def uow(self) -> UnitOfWork:
        return self.runtime.uow()


@asynccontextmanager
async def run_service(
    create_app: Callable[[Any], FastAPI], settings: ServiceSettings
) -> AsyncIterator[ServiceHarness]:
    """Start the app's lifespan (relay, consumer) and an httpx client bound to it.

    Without the start-up `gc.freeze`: this process hosts one app after another, and what each
    test leaves behind must stay collectable."""
    settings = settings.model_copy(update={"gc_freeze": False})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield ServiceHarness(app=app, client=client, settings=settings)
