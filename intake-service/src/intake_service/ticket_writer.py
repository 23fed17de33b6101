"""Group commit for new tickets: requests that arrive together are stored in one transaction.

Creating a ticket is the hottest write in the system — every channel posts here. Rather
than a transaction (and half a dozen ORM round trips) per request, concurrent requests
queue here and a writer stores the whole batch with one statement per table: idempotency
claims, customers, ticket numbers, tickets, attachments, complaint case files, timeline
and the outbox — then commits once. A request is answered only after its batch has
committed, so a 201 still means "stored together with its event". On a quiet system a
batch holds a single ticket, so nothing waits for company.

A batch that fails is retried one ticket at a time, so one bad request cannot fail the
others that happened to share its transaction.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson

from helpdesk_shared.chassis.app import ServiceRuntime
from helpdesk_shared.chassis.problems import Conflict, DomainError, InvalidInput
from helpdesk_shared.chassis.uow import outbox_message
from helpdesk_shared.contracts.enums import TicketKind
from helpdesk_shared.contracts.envelope import EventEnvelope
from intake_service.models import TICKET_NUMBER_SEQ
from intake_service.new_ticket import (
    TicketDraft,
    created_events,
    created_timeline_data,
    ticket_number,
    ticket_row,
)
from intake_service.schemas import TicketOut

log = logging.getLogger(__name__)

# The key was claimed earlier (or by a twin in the same batch): the caller replays that ticket.
KEY_ALREADY_USED = None


class TicketStoreUnavailable(DomainError):
    status, slug, title = 503, "ticket-store-unavailable", "Tickets cannot be stored right now"


class TicketConflict(Conflict):
    slug, title = "ticket-conflict", "The ticket conflicts with stored data"


_CLAIM_KEYS = """
INSERT INTO idempotency_keys (caller, key, request_hash, ticket_id, created_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING ticket_id
"""
# Customers without an external id are always new (NULL never conflicts); known ones are
# refreshed with whatever contact details this ticket brings, as the ORM path does.
_UPSERT_CUSTOMERS = """
INSERT INTO customers (id, external_id, name, email, phone)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
ON CONFLICT (external_id) DO UPDATE SET
    name = coalesce(excluded.name, customers.name),
    email = coalesce(excluded.email, customers.email),
    phone = coalesce(excluded.phone, customers.phone)
RETURNING id, external_id
"""
_NEXT_NUMBERS = f"SELECT nextval('{TICKET_NUMBER_SEQ.name}') FROM generate_series(1, $1)"
_TICKET_COLUMNS = (
    "id",
    "number",
    "channel",
    "kind",
    "status",
    "priority",
    "urgent_detected",
    "subject",
    "description",
    "reference",
    "callback_url",
    "category_hint",
    "tags",
    "customer_id",
    "reopen_count",
    "resolution_count",
    "search_tokens",
    "created_at",
    "updated_at",
    "status_changed_at",
)
_INSERT_TICKET = (
    f"INSERT INTO tickets ({', '.join(_TICKET_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(_TICKET_COLUMNS) + 1))})"
)
_INSERT_ATTACHMENT = (
    "INSERT INTO attachments (id, ticket_id, name, content_type, size_bytes, url, storage_key, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
_INSERT_CASE = "INSERT INTO complaint_cases (ticket_id, archived, updated_at) VALUES ($1, false, $2)"
_INSERT_TIMELINE = (
    "INSERT INTO timeline (ticket_id, kind, occurred_at, actor, data) VALUES ($1, 'created', $2, $3, $4)"
)
_INSERT_OUTBOX = (
    "INSERT INTO outbox (event_id, topic, key, event_type, payload, headers) VALUES ($1, $2, $3, $4, $5, $6)"
)


def _plain_dsn(database_url: str) -> str:
    """asyncpg takes libpq URLs; the services are configured with SQLAlchemy's."""
    scheme, sep, rest = database_url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else database_url


def _failure(exc: Exception) -> Exception:
    """What a caller sees when its ticket could not be stored on its own."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return TicketConflict(f"The ticket could not be stored: {exc.__class__.__name__}")
    if isinstance(exc, asyncpg.DataError):
        return InvalidInput(f"The ticket could not be stored: {exc.__class__.__name__}")
    if isinstance(exc, OSError | TimeoutError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        return TicketStoreUnavailable(
            "The ticket database is unreachable; retry with the same Idempotency-Key"
        )
    if isinstance(exc, asyncpg.CannotConnectNowError | asyncpg.TooManyConnectionsError):
        return TicketStoreUnavailable("The ticket database is busy; retry with the same Idempotency-Key")
    return exc


Pending = tuple[TicketDraft, "asyncio.Future[TicketOut | None]"]


class TicketWriter:
    """Stores ticket drafts in batches; `submit` answers once the draft's batch has committed.

    `run` is the service's background task: it opens a small asyncpg pool (one connection per
    concurrent batch) and writes until cancelled.
    """

    def __init__(self, *, number_prefix: str, max_batch: int = 128, concurrent_batches: int = 2) -> None:
        self._number_prefix = number_prefix
        self._source = ""
        self._topic = ""
        self._max_batch = max_batch
        self._concurrent = concurrent_batches
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._on_commit: Callable[[], None] = lambda: None

    async def submit(self, draft: TicketDraft) -> TicketOut | None:
        """The stored ticket, or None when the draft's Idempotency-Key was already used."""
        future: asyncio.Future[TicketOut | None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((draft, future))
        return await future

    async def run(self, runtime: ServiceRuntime) -> None:
        """Background task of the service: write batches until cancelled."""
        self._source, self._topic, self._on_commit = (
            runtime.settings.source,
            runtime.topic,
            runtime.relay.wake,
        )
        await self._run(runtime.settings.database_url)

    async def _run(self, database_url: str) -> None:
        pool = await self._connect(database_url)
        try:
            await asyncio.gather(*(self._write_forever(pool) for _ in range(self._concurrent)))
        finally:
            self._fail_waiting(TicketStoreUnavailable("The service is shutting down; retry"))
            await pool.close()

    async def _connect(self, database_url: str) -> asyncpg.Pool:
        delay = 0.5
        while True:
            try:
                return await asyncpg.create_pool(
                    _plain_dsn(database_url), min_size=1, max_size=self._concurrent
                )
            except (OSError, asyncpg.PostgresError) as exc:
                # Requests wait in the queue meanwhile; /readyz reports the database down.
                log.warning("ticket writer cannot connect yet", extra={"error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _fail_waiting(self, exc: Exception) -> None:
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(exc)

    async def _write_forever(self, pool: asyncpg.Pool) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(pool, batch)

    async def _write(self, pool: asyncpg.Pool, batch: list[Pending]) -> None:
        try:
            async with pool.acquire() as conn, conn.transaction():
                results = await self._store(conn, [draft for draft, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                for pending in batch:
                    await self._write(pool, [pending])
                return
            future = batch[0][1]
            if not future.done():
                future.set_exception(_failure(exc))
            return
        if any(result is not KEY_ALREADY_USED for result in results.values()):
            self._on_commit()
        for draft, future in batch:
            if not future.done():  # the client may have gone away
                future.set_result(results[draft.id])

    async def _store(
        self, conn: asyncpg.Connection, drafts: Sequence[TicketDraft]
    ) -> dict[uuid.UUID, TicketOut | None]:
        accepted = await self._claim_keys(conn, drafts)
        results: dict[uuid.UUID, TicketOut | None] = dict.fromkeys((d.id for d in drafts), KEY_ALREADY_USED)
        if not accepted:
            return results
        customer_ids = await self._upsert_customers(conn, accepted)
        numbers = [
            ticket_number(self._number_prefix, value)
            for (value,) in await conn.fetch(_NEXT_NUMBERS, len(accepted))
        ]
        rows = [
            ticket_row(draft, number=number, customer_id=customer_ids[draft.id])
            for draft, number in zip(accepted, numbers, strict=True)
        ]
        await conn.executemany(_INSERT_TICKET, [[row[c] for c in _TICKET_COLUMNS] for row in rows])
        await self._insert_details(conn, accepted)
        await conn.executemany(_INSERT_OUTBOX, self._outbox_rows(accepted, rows))
        for row in rows:
            results[row["id"]] = TicketOut(
                **row, assignee_id=None, team_id=None, resolved_at=None, closed_at=None
            )
        return results

    async def _claim_keys(self, conn: asyncpg.Connection, drafts: Sequence[TicketDraft]) -> list[TicketDraft]:
        """The drafts that may be created: no key, or the first to claim theirs (race-free)."""
        # Sorted so that concurrent batches lock keys (and customers, below) in one order: no deadlocks.
        keyed = sorted(
            (d for d in drafts if d.idempotency_key is not None), key=lambda d: (d.caller, d.idempotency_key)
        )
        if not keyed:
            return list(drafts)
        claimed = {
            row["ticket_id"]
            for row in await conn.fetch(
                _CLAIM_KEYS,
                [d.caller for d in keyed],
                [d.idempotency_key for d in keyed],
                [d.fingerprint for d in keyed],
                [d.id for d in keyed],
                [d.created_at for d in keyed],
            )
        }
        return [d for d in drafts if d.idempotency_key is None or d.id in claimed]

    async def _upsert_customers(
        self, conn: asyncpg.Connection, drafts: Sequence[TicketDraft]
    ) -> dict[uuid.UUID, uuid.UUID]:
        """Customer id per draft. One row per external id: later tickets' details win."""
        merged: dict[str, dict[str, Any]] = {}
        anonymous: dict[uuid.UUID, dict[str, Any]] = {}
        for draft in drafts:
            c = draft.body.customer
            details = {"name": c.name, "email": c.email, "phone": c.phone}
            if c.external_id is None:
                anonymous[draft.id] = {"id": uuid.uuid4(), "external_id": None, **details}
                continue
            known = merged.setdefault(c.external_id, {"id": uuid.uuid4(), "external_id": c.external_id})
            known.update({k: v for k, v in details.items() if v is not None})
        customers = [*(merged[k] for k in sorted(merged)), *anonymous.values()]
        returned = await conn.fetch(
            _UPSERT_CUSTOMERS,
            *(
                [c.get(column) for c in customers]
                for column in ("id", "external_id", "name", "email", "phone")
            ),
        )
        by_external_id = {row["external_id"]: row["id"] for row in returned if row["external_id"] is not None}
        return {
            draft.id: anonymous[draft.id]["id"]
            if draft.id in anonymous
            else by_external_id[draft.body.customer.external_id]
            for draft in drafts
        }

    async def _insert_details(self, conn: asyncpg.Connection, drafts: Sequence[TicketDraft]) -> None:
        attachments = [
            (uuid.uuid4(), d.id, a.name, a.content_type, a.size_bytes, a.url, a.storage_key, d.created_at)
            for d in drafts
            for a in d.body.attachments
        ]
        if attachments:
            await conn.executemany(_INSERT_ATTACHMENT, attachments)
        cases = [(d.id, d.created_at) for d in drafts if d.body.kind == TicketKind.COMPLAINT]
        if cases:
            await conn.executemany(_INSERT_CASE, cases)
        await conn.executemany(
            _INSERT_TIMELINE,
            [(d.id, d.created_at, d.caller, orjson.dumps(created_timeline_data(d)).decode()) for d in drafts],
        )

    def _outbox_rows(
        self, drafts: Sequence[TicketDraft], rows: Sequence[dict[str, Any]]
    ) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for draft, row in zip(drafts, rows, strict=True):
            for payload in created_events(draft, number=row["number"], customer_id=row["customer_id"]):
                envelope = EventEnvelope.wrap(
                    payload, source=self._source, subject=str(draft.id), correlationid=draft.correlation_id
                )
                message = outbox_message(envelope, topic=self._topic)
                out.append(
                    (
                        message["event_id"],
                        message["topic"],
                        message["key"],
                        message["event_type"],
                        orjson.dumps(message["payload"]).decode(),
                        orjson.dumps(message["headers"]).decode(),
                    )
                )
        return out
