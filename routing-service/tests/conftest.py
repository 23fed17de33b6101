from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from helpdesk_runtime.testing import ServiceHarness
from routing_service.app import create_app
from routing_service.settings import RoutingSettings


@pytest.fixture(scope="session")
async def routing(make_service) -> AsyncIterator[ServiceHarness]:  # type: ignore[no-untyped-def]
    # No periodic queue sweep: tests build states mid-race on purpose and drain when they say so
    # (the sweeper's own test runs an instance that sweeps).
    async with make_service("routing", RoutingSettings, create_app, queue_sweep_seconds=3600) as harness:
        yield harness
