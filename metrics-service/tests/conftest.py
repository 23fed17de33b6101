from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from helpdesk_runtime.testing import ServiceHarness
from metrics_service.app import create_app
from metrics_service.settings import MetricsSettings


@pytest.fixture(scope="session")
async def metrics(make_service) -> AsyncIterator[ServiceHarness]:  # type: ignore[no-untyped-def]
    async with make_service("metrics", MetricsSettings, create_app) as harness:
        yield harness
