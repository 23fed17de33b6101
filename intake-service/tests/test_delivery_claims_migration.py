"""Revision 0013 on a database that already holds the duplicates the old handler made: one
delivery per answer version is kept (the delivered one, else a pending one), then the unique
index holds; an interrupted index build is built again."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_shared.chassis.migrations import upgrade_database

INSERT = (
    "INSERT INTO deliveries (id, ticket_id, message_id, answer_id, answer_version, channel, status,"
    " attempts, next_attempt_at, delivered_at, created_at)"
    " VALUES ($1, $2, $3, $4, $5, 'app', $6, 1, $7, $8, $7)"
)


async def _insert(
    connection: asyncpg.Connection, answer: uuid.UUID, version: int, status: str, minutes_ago: int
) -> uuid.UUID:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    delivery_id = uuid.uuid4()
    await connection.execute(
        INSERT,
        delivery_id,
        uuid.uuid4(),
        uuid.uuid4(),
        answer,
        version,
        status,
        at,
        at if status == "delivered" else None,
    )
    return delivery_id


async def test_duplicates_stored_before_are_reduced_to_one_per_answer_version(infra: Infra) -> None:
    url = infra.create_database("delivery_claims_duplicates")
    await asyncio.to_thread(upgrade_database, url, "intake_service", "0012")
    connection = await asyncpg.connect(url)
    try:
        # Only the deliveries matter here: their tickets and messages are not made.
        await connection.execute("SET session_replication_role = replica")
        twice_delivered, pending_and_failed, failed_twice, alone = (uuid.uuid4() for _ in range(4))
        await _insert(connection, twice_delivered, 1, "delivered", 30)
        latest_delivered = await _insert(connection, twice_delivered, 1, "delivered", 10)
        await _insert(connection, twice_delivered, 1, "pending", 5)
        pending = await _insert(connection, pending_and_failed, 1, "pending", 5)
        await _insert(connection, pending_and_failed, 1, "failed", 50)
        oldest_failed = await _insert(connection, failed_twice, 2, "failed", 50)
        await _insert(connection, failed_twice, 2, "failed", 5)
        kept_v1 = await _insert(connection, alone, 1, "pending", 1)
        kept_v2 = await _insert(connection, alone, 2, "pending", 1)

        await asyncio.to_thread(upgrade_database, url, "intake_service", "0013")

        left = {row["id"] for row in await connection.fetch("SELECT id FROM deliveries")}
        assert left == {latest_delivered, pending, oldest_failed, kept_v1, kept_v2}
        with pytest.raises(asyncpg.UniqueViolationError):
            await _insert(connection, alone, 2, "pending", 0)
    finally:
        await connection.close()


async def test_an_interrupted_unique_index_build_is_built_again(infra: Infra) -> None:
    url = infra.create_database("delivery_claims_interrupted")
    await asyncio.to_thread(upgrade_database, url, "intake_service", "0012")
    connection = await asyncpg.connect(url)
    try:
        # What a failed concurrent build leaves: the index, invalid, and the columns (committed).
        await connection.execute("ALTER TABLE deliveries ADD COLUMN claim_token uuid")
        await connection.execute(
            "CREATE UNIQUE INDEX uq_deliveries_answer_version ON deliveries (answer_id, answer_version)"
        )
        await connection.execute(
            "UPDATE pg_index SET indisvalid = false"
            " WHERE indexrelid = 'uq_deliveries_answer_version'::regclass"
        )
        await asyncio.to_thread(upgrade_database, url, "intake_service", "0013")
        valid = await connection.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'uq_deliveries_answer_version'::regclass"
        )
    finally:
        await connection.close()
    assert valid is True
