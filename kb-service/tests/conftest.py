from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from helpdesk_runtime.testing import ServiceHarness
from kb_service.app import create_app
from kb_service.settings import KbSettings


@pytest.fixture(scope="session")
async def kb(make_service) -> AsyncIterator[ServiceHarness]:  # type: ignore[no-untyped-def]
    async with make_service("kb", KbSettings, create_app) as harness:
        yield harness
