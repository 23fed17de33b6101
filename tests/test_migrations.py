"""Each service's migrations build exactly the schema its models declare, and unwind cleanly."""

from __future__ import annotations

import asyncio
import importlib

import pytest
from alembic import command

from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.stack import SERVICES
from helpdesk_shared.chassis.migrations import alembic_config, schema_drift, upgrade_database


@pytest.mark.parametrize("service", [s.name for s in SERVICES])
async def test_migrations_match_models_and_downgrade(infra: Infra, service: str) -> None:
    package = f"{service}_service"
    url = infra.create_database(f"migrations_{service}")
    metadata = importlib.import_module(f"{package}.models").metadata

    await asyncio.to_thread(upgrade_database, url, package)
    assert await schema_drift(url, metadata) == []

    await asyncio.to_thread(command.downgrade, alembic_config(url, package), "base")
    assert len(await schema_drift(url, metadata)) >= len(metadata.tables)
    await asyncio.to_thread(upgrade_database, url, package)
    assert await schema_drift(url, metadata) == []
