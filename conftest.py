"""Fixtures shared by every test folder: real services on real infrastructure.

`infra` (the helpdesk_infra plugin) starts or connects to PostgreSQL and
Kafka; here every in-process service gets its own topic prefix so that
services and sessions sharing one cluster never see each other's events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI

from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.testing import ServiceHarness, migrate, run_service
from helpdesk_shared.chassis.settings import ServiceSettings
from helpdesk_shared.contracts.topics import ALL_TOPICS

MakeService = Callable[..., AbstractAsyncContextManager[ServiceHarness]]


def ensure_prefixed_topics(infra: Infra, prefix: str) -> str:
    infra.ensure_topics({prefix + name: partitions for name, partitions in ALL_TOPICS.items()})
    return prefix


@pytest.fixture(scope="session")
def make_service(infra: Infra) -> MakeService:
    """Start one service in-process on its own freshly migrated database.

    Each service gets topics of its own, so that in-process services of one
    session never consume each other's test events.
    """

    @asynccontextmanager
    async def make(
        name: str,
        settings_cls: type[ServiceSettings],
        create_app: Callable[[Any], FastAPI],
        label: str = "",
        **overrides: Any,
    ) -> AsyncIterator[ServiceHarness]:
        """`label` gives the instance a database and topics of its own; `overrides` go to its settings."""
        url = infra.create_database(f"unit_{name}{label}")
        topic_prefix = ensure_prefixed_topics(infra, f"t{infra.run_id}{name}{label}.")
        await migrate(url, f"{name}_service")
        # The tests read the events a service wrote from its outbox, so published rows are kept
        # (the inspection mode ops may turn on; the chassis's and the e2e tests run the default,
        # which deletes a row once published).
        overrides = {"outbox_retention_hours": 24, **overrides}
        settings = settings_cls(
            database_url=url,
            kafka_bootstrap_servers=infra.kafka_bootstrap,
            topic_prefix=topic_prefix,
            consumer_group=f"{name}{label}-unit-{infra.run_id}",
            environment="test",
            consumer_retry_backoff_seconds=0.05,
            **overrides,
        )
        async with run_service(create_app, settings) as harness:
            yield harness

    return make
