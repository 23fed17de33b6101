"""Alembic support shared by the services' migration environments.

Each service keeps its own revisions in `<service>_service/migrations/`;
its `env.py` is one call to `run_alembic_env(metadata)`. The runtime and
tests migrate with `upgrade_database(url, "<service>_service")`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from alembic import command, context, op
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, pool
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from helpdesk_shared.chassis.db import asyncpg_url


def alembic_config(url: str, package: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", f"{package}:migrations")
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    cfg.set_main_option("sqlalchemy.url", asyncpg_url(url).replace("%", "%%"))
    return cfg


def upgrade_database(url: str, package: str, revision: str = "head") -> None:
    """Apply migrations (blocking; call from a thread when inside an event loop)."""
    command.upgrade(alembic_config(url, package), revision)


def run_alembic_env(target_metadata: MetaData) -> None:
    """Body of every service's migrations/env.py."""
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sqlalchemy.url is not set; migrate through upgrade_database()")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url, target_metadata))


# Key of the session lock every migration run of a database holds (advisory locks are per
# database): replicas starting together (each Kubernetes init container migrates) take turns, and
# the later ones find nothing left to do. Without it they raced to create the same tables, and a
# concurrent index build waited on the other run's transaction while that one waited on its lock.
MIGRATION_LOCK_KEY = 0x4D494752  # "MIGR"
MIGRATION_LOCK_POLL_SECONDS = 0.5


async def _run_online(url: str, target_metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            # On the driver, outside any transaction: held until the connection closes, around
            # Alembic's own transactions (and the autocommit blocks of concurrent index builds).
            # Tried, not waited for: a statement waiting for the lock holds a snapshot, and a
            # concurrent index build of the holder waits for every older snapshot to go.
            driver: Any = (await connection.get_raw_connection()).driver_connection
            lock = "SELECT pg_try_advisory_lock($1)"
            while not await driver.fetchval(lock, MIGRATION_LOCK_KEY):  # noqa: ASYNC110 (another process)
                await asyncio.sleep(MIGRATION_LOCK_POLL_SECONDS)
            await connection.run_sync(_do_run, target_metadata)
    finally:
        await engine.dispose()


def _do_run(connection: Connection, target_metadata: MetaData) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def schema_drift(url: str, target_metadata: MetaData) -> list[Any]:
    """Differences between a migrated database and the models (empty = in sync)."""
    engine = create_async_engine(asyncpg_url(url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), target_metadata
                )
            )
    finally:
        await engine.dispose()


def create_messaging_tables_v1() -> None:
    """Outbox and inbox tables as of revision 1 (frozen DDL: change them in new revisions)."""
    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=True),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("headers", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
    )
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["seq"], postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False, server_default=sa.text("'processed'")),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
    )


def messaging_tables_v2_upgrade() -> None:
    """Revision 2 of the messaging tables: parked outbox rows, an index for inbox retention."""
    op.add_column("outbox", sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"])


def messaging_tables_v2_downgrade() -> None:
    op.drop_index("ix_inbox_processed_at", table_name="inbox")
    op.drop_column("outbox", "parked_at")


def _outbox_json_columns(type_: str) -> None:
    op.execute(
        f"ALTER TABLE outbox ALTER COLUMN payload TYPE {type_} USING payload::{type_}, "
        f"ALTER COLUMN headers DROP DEFAULT, "
        f"ALTER COLUMN headers TYPE {type_} USING headers::{type_}, "
        f"ALTER COLUMN headers SET DEFAULT '{{}}'::{type_}"
    )


def messaging_tables_v3_upgrade() -> None:
    """Revision 3 of the messaging tables: the outbox keeps events as `json` text, not `jsonb`."""
    _outbox_json_columns("json")


def messaging_tables_v3_downgrade() -> None:
    _outbox_json_columns("jsonb")
