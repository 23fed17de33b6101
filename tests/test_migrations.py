"""Each service's migrations build exactly the schema its models declare, and unwind cleanly."""

from __future__ import annotations

import asyncio
import importlib

import asyncpg
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


async def test_an_index_build_interrupted_halfway_is_built_again(infra: Infra) -> None:
    # A concurrent index build that fails (a lost connection, a deploy cut short) leaves an invalid
    # index behind under its name; the migration did not finish, so it runs again on the next start.
    url = infra.create_database("migrations_interrupted_index")
    await asyncio.to_thread(upgrade_database, url, "intake_service", "0009")
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CREATE INDEX ix_tickets_customer_id ON tickets (customer_id)")
        await connection.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_tickets_customer_id'::regclass"
        )
        await asyncio.to_thread(upgrade_database, url, "intake_service", "0010")
        valid = await connection.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_tickets_customer_id'::regclass"
        )
    finally:
        await connection.close()
    assert valid is True
