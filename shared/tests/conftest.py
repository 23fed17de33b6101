"""Fixtures for the chassis tests: unique topics and a reader of real Kafka topics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from helpdesk_runtime.pytest_plugin import Infra

NewTopic = Callable[..., str]
ReadTopic = Callable[..., Awaitable[list[ConsumerRecord[bytes, bytes]]]]


@pytest.fixture(scope="session")
def new_topic(infra: Infra) -> NewTopic:
    """Create a topic unique to this session and call: `new_topic("label", partitions=1)`."""

    def make(label: str, partitions: int = 1) -> str:
        name = f"t{infra.run_id}.chassis.{label}.{uuid.uuid4().hex[:8]}"
        infra.ensure_topics({name: partitions})
        return name

    return make


@pytest.fixture(scope="session")
def read_topic(infra: Infra) -> ReadTopic:
    """Read `count` records from the start of every partition of `topic` (no consumer group).

    Keeps reading `settle` seconds after the count is reached, so that extra
    (unexpected) records are returned too.
    """

    async def read(
        topic: str,
        count: int,
        *,
        timeout: float = 15.0,  # noqa: ASYNC109
        settle: float = 0.3,
    ) -> list[ConsumerRecord[bytes, bytes]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=infra.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        records: list[ConsumerRecord[bytes, bytes]] = []
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout
            settled_at: float | None = None
            while time.monotonic() < deadline:
                batch: dict[Any, list[ConsumerRecord[bytes, bytes]]] = await consumer.getmany(timeout_ms=100)
                for part in batch.values():
                    records.extend(part)
                if len(records) >= count:
                    settled_at = settled_at or time.monotonic() + settle
                    if time.monotonic() >= settled_at:
                        break
        finally:
            await consumer.stop()
        return records

    return read
