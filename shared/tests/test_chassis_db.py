"""The engine's connection pool on a real PostgreSQL: idle connections are pinged, busy ones not;
the driver connection under a session's transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_shared.chassis.db import asyncpg_url, create_engine, create_sessionmaker, driver_connection


@pytest.fixture(scope="module")
def url(infra: Infra) -> str:
    return infra.create_database("chassis_db")


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every ping the pool sends, recorded (and still sent)."""
    sent: list[object] = []
    original = AsyncAdapt_asyncpg_connection.ping

    def ping(self: AsyncAdapt_asyncpg_connection) -> None:
        sent.append(self)
        original(self)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", ping)
    return sent


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(url: str, pid: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


Engine = Callable[..., AsyncEngine]


@pytest.fixture
async def engine(url: str) -> AsyncIterator[Engine]:
    """`engine(ping_idle_after=…)`: a pool of one connection to the test database."""
    made: list[AsyncEngine] = []

    def make(*, ping_idle_after: float) -> AsyncEngine:
        made.append(create_engine(url, pool_size=1, max_overflow=0, ping_idle_after=ping_idle_after))
        return made[-1]

    yield make
    for each in made:
        await each.dispose()


async def test_a_connection_given_back_moments_ago_is_handed_out_without_a_ping(
    pings: list[object], engine: Engine
) -> None:
    pool = engine(ping_idle_after=60)
    first = await backend_pid(pool)
    assert [await backend_pid(pool) for _ in range(5)] == [first] * 5
    assert pings == []


async def test_a_connection_that_sat_idle_is_pinged_and_replaced_when_dead(
    url: str, pings: list[object], engine: Engine
) -> None:
    pool = engine(ping_idle_after=0)
    first = await backend_pid(pool)
    assert pings == []  # a fresh connection is not pinged
    await terminate(url, first)

    replaced = await backend_pid(pool)  # the ping finds it dead: a new connection, no error

    assert replaced != first
    assert len(pings) == 1


async def test_within_the_window_a_dead_connection_fails_once_then_is_replaced(
    url: str, pings: list[object], engine: Engine
) -> None:
    pool = engine(ping_idle_after=60)
    first = await backend_pid(pool)
    await terminate(url, first)

    with pytest.raises(DBAPIError):  # what callers answer as "database unavailable"
        await backend_pid(pool)

    assert await backend_pid(pool) != first
    assert pings == []


async def test_the_driver_connection_is_reused_within_a_transaction_and_begins_each_new_one(
    engine: Engine,
) -> None:
    sessions = create_sessionmaker(engine(ping_idle_after=60.0))
    async with sessions() as session:
        driver = await driver_connection(session)
        await driver.execute("CREATE TABLE IF NOT EXISTS driver_cache_probe (n int)")
        assert await driver_connection(session) is driver
        await session.commit()
        # A new transaction: the statements below must be inside it, not committed one by one.
        again = await driver_connection(session)
        await again.execute("INSERT INTO driver_cache_probe VALUES (1)")
        assert again.is_in_transaction()
        await session.rollback()
        after = await driver_connection(session)
        assert after.is_in_transaction()
        assert await after.fetchval("SELECT count(*) FROM driver_cache_probe") == 0  # rolled back
        await session.rollback()


async def test_a_connection_given_back_closed_is_replaced_at_its_next_checkout(
    engine: Engine, pings: list[object]
) -> None:
    # Closed by a statement sent straight to the driver (its error never passed through
    # SQLAlchemy), and given back moments ago: within the window, yet not handed out again.
    pool = engine(ping_idle_after=60.0)
    first = await backend_pid(pool)
    async with pool.connect() as conn:
        await (await conn.get_raw_connection()).driver_connection.close()

    assert await backend_pid(pool) != first
    assert pings == []


async def test_a_statement_is_prepared_again_once_its_lifetime_is_over(url: str) -> None:
    # So that PostgreSQL plans it again with the tables' sizes of then (see STATEMENT_LIFETIME_SECONDS).
    engine = create_engine(url, pool_size=1, max_overflow=0, statement_lifetime=0.5)
    statement = "SELECT count(*) FROM pg_class WHERE relname = ANY($1::text[])"
    prepared = "SELECT prepare_time FROM pg_prepared_statements WHERE statement = $1"
    try:
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.fetchval(statement, ["pg_class"])
            [first] = [row[0] for row in await driver.fetch(prepared, statement)]
            await driver.fetchval(statement, ["pg_class"])  # within its lifetime: the same statement
            assert [row[0] for row in await driver.fetch(prepared, statement)] == [first]
            await asyncio.sleep(0.6)
            await driver.fetchval(statement, ["pg_class"])
            again = [row[0] for row in await driver.fetch(prepared, statement)]
    finally:
        await engine.dispose()
    assert max(again) > first


@pytest.mark.parametrize("mode", ["disable", "prefer"])
async def test_a_libpq_sslmode_in_the_url_is_understood(url: str, mode: str) -> None:
    # Managed PostgreSQL providers hand out URLs ending in ?sslmode=…; asyncpg takes no such
    # argument, so the engine (and the migrations) must not pass it on as one.
    engine = create_engine(f"{url}?sslmode={mode}", pool_size=1, max_overflow=0)
    try:
        assert await backend_pid(engine) > 0
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db/x?sslmode=require", "postgresql+asyncpg://u:p@db/x?ssl=require"),
        ("postgres://u@db/x?sslmode=verify-full", "postgresql+asyncpg://u@db/x?ssl=verify-full"),
        ("postgresql://u@db/x?ssl=require&sslmode=disable", "postgresql+asyncpg://u@db/x?ssl=require"),
        ("postgresql://u@db/x", "postgresql+asyncpg://u@db/x"),
    ],
)
def test_sslmode_becomes_asyncpgs_ssl_argument(given: str, expected: str) -> None:
    assert asyncpg_url(given) == expected


def test_an_unknown_sslmode_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="sslmode"):
        asyncpg_url("postgresql://u@db/x?sslmode=sometimes")
