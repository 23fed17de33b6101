"""Async SQLAlchemy plumbing and the messaging tables every service owns.

Each service declares its own `MetaData` (via `service_metadata()`), so the
outbox and inbox tables are created inside each service's database next to
that service's state: they must commit in the same transaction.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    exc,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, UUID
from sqlalchemy.exc import InterfaceError as DBAPIInterfaceError
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_metadata() -> MetaData:
    """A fresh MetaData with the naming convention and the outbox/inbox tables."""
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    define_messaging_tables(metadata)
    return metadata


def define_messaging_tables(metadata: MetaData) -> tuple[Table, Table]:
    outbox = Table(
        "outbox",
        metadata,
        # `seq` orders publication: rows committed together keep their order.
        Column("seq", BigInteger, Identity(always=False), primary_key=True),
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=True),
        Column("event_type", String(200), nullable=False),
        # `json`, not `jsonb`: the relay publishes the text exactly as the service wrote it, so
        # PostgreSQL only checks it is JSON — no binary form built on insert and printed back on
        # read (~12 µs of its CPU per event, measured with a 1 KB envelope: ~21 vs ~34 µs per
        # event stored, read by the relay and deleted).
        Column("payload", JSON, nullable=False),
        Column("headers", JSON, nullable=False, server_default=text("'{}'::json")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text, nullable=True),
        # Set when the broker can never accept the row; the relay skips it from then on.
        Column("parked_at", DateTime(timezone=True), nullable=True),
        Index("ix_outbox_unpublished", "seq", postgresql_where=text("published_at IS NULL")),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", UUID(as_uuid=True), primary_key=True),
        Column("event_type", String(200), nullable=False),
        Column("topic", String(200), nullable=False),
        Column("outcome", String(20), nullable=False, server_default=text("'processed'")),
        Column("error", Text, nullable=True),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index("ix_inbox_processed_at", "processed_at"),  # retention sweeps
    )
    return outbox, inbox


SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


def asyncpg_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (what operators paste) for the asyncpg driver.

    libpq's ``sslmode`` (in most managed databases' URLs) becomes asyncpg's ``ssl``, which takes
    the same modes: SQLAlchemy hands the query's parameters to ``asyncpg.connect`` as arguments,
    and it has no ``sslmode`` one."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+asyncpg://" + url[len(prefix) :]
            break
    else:
        raise ValueError(f"Not a PostgreSQL URL: {url.split('@')[-1]}")
    base, question, query = url.partition("?")
    if not question:
        return url
    params = parse_qsl(query, keep_blank_values=True)
    names = [name for name, _ in params]
    if "sslmode" not in names:
        return url
    mode = dict(params)["sslmode"]
    if mode not in SSL_MODES:
        raise ValueError(
            f"Unknown sslmode {mode!r} in the database URL (one of {', '.join(sorted(SSL_MODES))})"
        )
    if "ssl" in names:  # asyncpg's own parameter wins
        params = [(name, value) for name, value in params if name != "sslmode"]
    else:
        params = [("ssl" if name == "sslmode" else name, value) for name, value in params]
    return f"{base}?{urlencode(params)}"


PING_IDLE_AFTER_SECONDS = 1.0
"""A pooled connection given back longer ago than this is pinged before it is handed out again."""


STATEMENT_LIFETIME_SECONDS = 20.0
"""How long a connection keeps a statement prepared by the driver (asyncpg's statement cache; the
hot paths' plain SQL goes through it). PostgreSQL keeps a generic plan for a prepared statement
after a few runs, made with the table sizes of that moment: prepared while a table is nearly empty
(a fresh database, tables that grow fast), a plan that scans it grows costlier with every row,
until autovacuum's ANALYZE happens to replan it — routing's first read of a run went from 0.3 to
8.5 ms over a one-minute benchmark from an empty database. Prepared again every 20 s, plans follow
the tables (a few hundred microseconds per statement and connection each time)."""


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 20,
    ping_idle_after: float = PING_IDLE_AFTER_SECONDS,
    statement_lifetime: float = STATEMENT_LIFETIME_SECONDS,
) -> AsyncEngine:
    engine = create_async_engine(
        asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # JSON and JSONB in and out through orjson: several times faster.
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        connect_args={"max_cached_statement_lifetime": statement_lifetime},
    )
    ping_idle_connections(engine, ping_idle_after)
    return engine


def ping_idle_connections(engine: AsyncEngine, idle_after: float) -> None:
    """Ping a pooled connection on checkout only when it sat idle for `idle_after` seconds.

    SQLAlchemy's `pool_pre_ping` pings on every checkout: one extra round trip per transaction,
    a tenth of a busy consumer's statements. A connection given back moments ago was working
    moments ago (the policy of HikariCP's alive-bypass window); one that sat idle — across a
    database restart, a failover, a firewall's idle timeout — is checked, and a dead one is
    replaced transparently (the pool retries the checkout on `DisconnectionError`). A connection
    that dies within the window fails its next statement, which the callers already handle as
    "database unavailable" (503 / consumer retry), and the pool then replaces it: SQLAlchemy
    invalidates a connection whose statement failed that way, and one given back closed is
    invalidated here — the error of a statement sent straight to the driver never passed
    through SQLAlchemy.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _given_back(dbapi_connection: Any, record: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver.is_closed():
            record.invalidate()  # reconnected at its next checkout
            return
        record.info["given_back_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        given_back = record.info.get("given_back_at")
        if given_back is None or time.monotonic() - given_back < idle_after:
            return  # fresh from connect, or in use moments ago
        try:
            dbapi_connection.ping()
        except Exception as error:
            raise exc.DisconnectionError("pooled connection failed its ping") from error


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


# Query-side handles on the messaging tables. Every service database has the
# same two tables (created by its own migrations), so one definition serves all.
OUTBOX, INBOX = define_messaging_tables(MetaData(naming_convention=NAMING_CONVENTION))


# session.info key: (the session's transaction, its asyncpg connection) as last handed out.
_DRIVER_OF_TRANSACTION = "helpdesk.driver_of_transaction"


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's transaction, for hot paths whose statements
    are plain SQL (prepared once per connection, no ORM or compilation cost).

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement *it* executes;
    statements sent straight to the driver before that would run outside any transaction (each
    committed on its own, never rolled back). So the transaction is begun here first.
    """
    transaction = session.sync_session.get_transaction()
    cached = session.info.get(_DRIVER_OF_TRANSACTION)
    if transaction is not None and cached is not None and cached[0] is transaction and transaction.is_active:
        # The same transaction as last time: the same connection, BEGIN already sent. Asking
        # SQLAlchemy again costs ~50 µs (its session state machine through a greenlet), and a
        # routing run asks for it half a dozen times.
        return cached[1]
    connection = await session.connection()
    adapted: Any = (await connection.get_raw_connection()).dbapi_connection
    start = getattr(adapted, "_start_transaction", None)
    mutex = getattr(adapted, "_execute_mutex", None)
    if start is not None and mutex is not None and hasattr(adapted, "_transaction"):
        async with mutex:
            if adapted._transaction is None:
                await start()
    else:  # another SQLAlchemy version: let it begin the transaction the documented way
        await connection.exec_driver_sql("SELECT 1")
    session.info[_DRIVER_OF_TRANSACTION] = (session.sync_session.get_transaction(), adapted.driver_connection)
    return adapted.driver_connection


# ---- which database errors say nothing about the request or event ------------------------------

RETRYABLE_SQLSTATES = {"40001": "serialization failure", "40P01": "deadlock detected"}
"""A concurrent transaction got in the way: the same work, tried again, can succeed."""


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, raised by asyncpg or wrapped by SQLAlchemy."""
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None), exc):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def database_unavailable(exc: BaseException) -> bool:
    """The database could not be reached or went away (not: it refused a value)."""
    state = sqlstate(exc) or ""
    if state.startswith("22"):  # a value refused, even by the driver before sending it
        return False
    return (
        isinstance(exc, OperationalError | DBAPIInterfaceError | ConnectionError)
        or state.startswith("08")  # connection exception
        or state.startswith("57P")  # the server shutting down or starting up
    )


def transient(exc: BaseException) -> bool:
    """Worth trying again as it is: a concurrent transaction got in the way, or the database is
    unavailable for now."""
    return sqlstate(exc) in RETRYABLE_SQLSTATES or database_unavailable(exc)
