"""Each service's migrations build exactly the schema its models declare, and unwind cleanly."""

from __future__ import annotations

import asyncio
import importlib
import sys

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


async def test_replicas_migrating_one_database_at_once_take_turns(infra: Infra) -> None:
    # Every replica's init container runs the migrations on a first install: without turns, the
    # slower one failed on tables the other had just created (and was restarted).
    url = infra.create_database("migrations_at_once")
    metadata = importlib.import_module("intake_service.models").metadata
    code = (
        "import sys; from helpdesk_shared.chassis.migrations import upgrade_database as u; "
        "u(sys.argv[1], sys.argv[2])"
    )

    async def replica() -> tuple[int | None, bytes]:  # a process each, as replicas are
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, url, "intake_service", stderr=asyncio.subprocess.PIPE
        )
        _, errors = await asyncio.wait_for(process.communicate(), timeout=120)
        return process.returncode, errors

    results = await asyncio.gather(*(replica() for _ in range(3)))
    assert [code for code, _ in results] == [0, 0, 0], [errors.decode()[-2000:] for _, errors in results]
    assert await schema_drift(url, metadata) == []
