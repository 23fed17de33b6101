"""Kafka topic administration with aiokafka: readiness and explicit topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class KafkaNotReadyError(RuntimeError):
    """The broker did not answer a metadata request in time."""


async def wait_kafka_ready(bootstrap: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Wait until ``bootstrap`` answers a metadata request (list topics)."""
    await _with_admin(bootstrap, timeout, lambda admin: admin.list_topics())


async def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    *,
    timeout: float = 30.0,  # noqa: ASYNC109
    replication_factor: int = 1,
) -> None:
    """Create the missing ``topics`` (name → partitions) with ``replication_factor`` copies of each
    partition, and wait for their leaders.

    Existing topics are left alone (a warning is logged if their partition count differs). Retries
    until the broker answers, up to ``timeout`` seconds.
    """

    async def create(admin: Any) -> None:
        from aiokafka.admin import NewTopic
        from aiokafka.errors import TopicAlreadyExistsError, for_code

        described = {t["topic"]: t for t in await admin.describe_topics(list(topics))}
        missing = [name for name in topics if described.get(name, {}).get("error_code", 3) != 0]
        for name, info in described.items():
            if name not in missing and len(info["partitions"]) != topics[name]:
                have = len(info["partitions"])
                log.warning("topic %s has %d partitions, wanted %d", name, have, topics[name])
        if missing:
            new = [NewTopic(name, topics[name], replication_factor) for name in missing]
            response = await admin.create_topics(new, timeout_ms=int(timeout * 1000))
            for entry in response.topic_errors:
                name, code = entry[0], entry[1]
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise for_code(code)(f"could not create topic {name}: {entry[2:]}")
        await _wait_leaders(admin, list(topics), timeout)

    await _with_admin(bootstrap, timeout, create)


async def _wait_leaders(admin: Any, names: list[str], within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        described = await admin.describe_topics(names)
        pending = [
            t["topic"]
            for t in described
            if t["error_code"] != 0 or not t["partitions"] or any(p["leader"] < 0 for p in t["partitions"])
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise KafkaNotReadyError(f"topics without a leader after {within:.0f}s: {pending}")
        await asyncio.sleep(0.1)


async def _with_admin(bootstrap: str, within: float, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``action(admin)`` with a fresh admin client, retrying retriable/connection errors until timeout."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + within
    last: BaseException | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            return await action(admin)
        except (TimeoutError, KafkaError, OSError) as exc:
            if isinstance(exc, KafkaError) and not exc.retriable and not _is_connection_error(exc):
                raise
            last = exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        await asyncio.sleep(0.25)
    raise KafkaNotReadyError(f"Kafka at {bootstrap} did not answer within {within:.0f}s: {last!r}")


def _is_connection_error(exc: BaseException) -> bool:
    from aiokafka.errors import KafkaConnectionError, NodeNotReadyError

    return isinstance(exc, KafkaConnectionError | NodeNotReadyError)
