from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from helpdesk_runtime.testing import ServiceHarness
from intake_service.app import create_app
from intake_service.settings import IntakeSettings


@pytest.fixture(scope="session")
async def intake(make_service) -> AsyncIterator[ServiceHarness]:  # type: ignore[no-untyped-def]
    async with make_service("intake", IntakeSettings, create_app) as harness:
        yield harness
