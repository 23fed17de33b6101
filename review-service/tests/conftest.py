from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from helpdesk_runtime.testing import ServiceHarness
from review_service.app import create_app
from review_service.settings import ReviewSettings


@pytest.fixture(scope="session")
async def review(make_service) -> AsyncIterator[ServiceHarness]:  # type: ignore[no-untyped-def]
    async with make_service("review", ReviewSettings, create_app) as harness:
        yield harness
