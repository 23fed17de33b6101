"""Group commit for new tickets: requests that arrive together are stored in one transaction.

Creating a ticket is the hottest write in the system — every channel posts here. Rather
than a transaction (and half a dozen ORM round trips) per request, concurrent requests
queue here and a writer stores the whole batch with ONE statement: a chain of
data-modifying CTEs that claims the idempotency keys, upserts the customers, numbers and
inserts the tickets, their attachments, complaint case files, timeline entries and outbox
events. One statement is one round trip and one atomic commit; the loopback round trips,
not the SQL, were what a ticket cost. A request is answered only after its batch has
committed, so a 201 still means "stored together with its event". On a quiet system a
batch holds a single ticket, so nothing waits for company.

Rows and events are built in Python by `new_ticket` (as for the email channel's ORM path)
with placeholders for what only the database knows — the ticket number and the id of an
existing customer — which the statement fills in.

A batch that fails is retried one ticket at a time, so one bad request cannot fail the
others that happened to share its transaction.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson
from prometheus_client import Histogram

from helpdesk_shared.chassis.app import ServiceRuntime
from helpdesk_shared.chassis.db import STATEMENT_LIFETIME_SECONDS
from helpdesk_shared.chassis.problems import Conflict, DomainError, InvalidInput
from helpdesk_shared.chassis.uow import event_headers
from helpdesk_shared.contracts.enums import TicketStatus
from helpdesk_shared.contracts.envelope import envelope_json
from helpdesk_shared.contracts.intake import TicketCreated
from intake_service.models import TICKET_NUMBER_SEQ
from intake_service.new_ticket import TicketDraft, created_events, created_timeline_data, ticket_row
from intake_service.schemas import TicketOut

log = logging.getLogger(__name__)

BATCH_SIZE = Histogram(
    "helpdesk_intake_ticket_batch_size",
    "Tickets stored per group-commit transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)

# The key was claimed earlier (or by a twin in the same batch): the caller replays that ticket.
KEY_ALREADY_USED = None


class TicketStoreUnavailable(DomainError):
    status, slug, title = 503, "ticket-store-unavailable", "Tickets cannot be stored right now"


class TicketConflict(Conflict):
    slug, title = "ticket-conflict", "The ticket conflicts with stored data"


# Column → PostgreSQL type of the `tickets` row built by `new_ticket.ticket_row`.
_TICKET_TYPES = {
    "id": "uuid",
    "number": "text",
    "channel": "text",
    "kind": "text",
    "status": "text",
    "priority": "text",
    "urgent_detected": "boolean",
    "subject": "text",
    "description": "text",
    "reference": "text",
    "callback_url": "text",
    "category_hint": "text",
    "tags": "jsonb",  # a JSON array, turned into text[] by the statement
    "customer_id": "uuid",
    "reopen_count": "integer",
    "resolution_count": "integer",
    "search_tokens": "text",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "status_changed_at": "timestamptz",
}
_TICKET_COLUMNS = tuple(_TICKET_TYPES)
_DRAFT_EXTRA = {
    "caller": "text",
    "idem_key": "text",
    "request_hash": "text",
    "customer_external_id": "text",
    "timeline_data": "jsonb",
}
_CUSTOMER_TYPES = {"id": "uuid", "external_id": "text", "name": "text", "email": "text", "phone": "text"}
_ATTACHMENT_TYPES = {
    "id": "uuid",
    "ticket_id": "uuid",
    "name": "text",
    "content_type": "text",
    "size_bytes": "bigint",
    "url": "text",
    "storage_key": "text",
    "created_at": "timestamptz",
}
# An event's payload travels apart from these columns, in a text array (see `_STORE_BATCH`).
_EVENT_TYPES = {
    "event_id": "uuid",
    "ticket_id": "uuid",
    "event_type": "text",
    "headers": "json",
    "number_placeholder": "text",  # set on `ticket.created`: the payload's stand-ins to replace
    "customer_placeholder": "text",
}


def _recordset(types: dict[str, str], param: int, alias: str) -> str:
    """`json_to_recordset($param::json) AS alias(c1 t1, …, ord bigint)`.

    A batch travels as one JSON document per table (rows as objects, `ord` their position),
    not as one array parameter per column: encoding dozens of typed arrays cost the writer
    more CPU than everything else it does, and one JSON text is a single cheap parameter.
    """
    columns = ", ".join(f"{name} {type_}" for name, type_ in types.items())
    return f"json_to_recordset(${param}::json) AS {alias}({columns}, ord bigint)"


_DRAFT_TYPES = {**_TICKET_TYPES, **_DRAFT_EXTRA}
_P_DRAFTS, _P_CUSTOMERS, _P_ATTACHMENTS, _P_EVENTS, _P_PREFIX, _P_TOPIC, _P_PAYLOADS = range(1, 8)

_TICKET_VALUES = {
    **{c: f"n.{c}" for c in _TICKET_COLUMNS},
    # At least six digits, as `new_ticket.ticket_number` writes them (lpad alone would cut a seventh).
    "number": f"${_P_PREFIX} || '-' || lpad(n.number_value::text, "
    "greatest(6, length(n.number_value::text)), '0')",
    "tags": "ARRAY(SELECT jsonb_array_elements_text(n.tags))",
    # An existing customer keeps their id — returned by the upsert when their details changed, else
    # read from the statement's snapshot; a new one gets the id chosen in Python. (A customer
    # first stored by a concurrent batch that committed after this statement's snapshot, with
    # the same details, is in neither: the foreign key fails the batch, retried one by one, and a
    # ticket alone once more.)
    "customer_id": "coalesce((SELECT c.id FROM customer c WHERE c.external_id = n.customer_external_id), "
    "(SELECT k.id FROM customers k WHERE k.external_id = n.customer_external_id), n.customer_id)",
}

# Every CTE runs exactly once, whether or not the final SELECT reads it; all of them see one
# snapshot and pass rows on through RETURNING. Foreign keys are checked at the end of the
# statement, so tickets may point at customers inserted by the same statement.
_STORE_BATCH = f"""
WITH draft AS (
    SELECT * FROM {_recordset(_DRAFT_TYPES, _P_DRAFTS, "d")}
),
claimed AS (
    INSERT INTO idempotency_keys (caller, key, request_hash, ticket_id, created_at)
    SELECT caller, idem_key, request_hash, id, created_at FROM draft
    WHERE idem_key IS NOT NULL
    ORDER BY caller, idem_key  -- one lock order for every batch: no deadlocks between them
    ON CONFLICT DO NOTHING
    RETURNING ticket_id
),
accepted AS (
    SELECT * FROM draft WHERE idem_key IS NULL OR id IN (SELECT ticket_id FROM claimed)
),
customer AS (
    INSERT INTO customers (id, external_id, name, email, phone)
    SELECT c.id, c.external_id, c.name, c.email, c.phone
    FROM {_recordset(_CUSTOMER_TYPES, _P_CUSTOMERS, "c")}
    WHERE c.id IN (SELECT customer_id FROM accepted)
    -- A returning customer with the same details is not upserted at all: the upsert would lock
    -- their row until the batch commits (even to change nothing), holding up any other batch with
    -- a ticket of theirs and waiting for any transaction changing the row. Their tickets take the
    -- id from the snapshot; the foreign key's check then takes only a key-share lock. (A scalar
    -- subquery, probed per customer: written as NOT EXISTS, PostgreSQL spent ~15-20 % more CPU per
    -- ticket in small batches, measured.)
    AND (SELECT (k.name, k.email, k.phone) IS DISTINCT FROM (
            coalesce(c.name, k.name), coalesce(c.email, k.email), coalesce(c.phone, k.phone))
        FROM customers k WHERE k.external_id = c.external_id) IS NOT FALSE
    ORDER BY c.external_id
    ON CONFLICT (external_id) DO UPDATE SET
        name = coalesce(excluded.name, customers.name),
        email = coalesce(excluded.email, customers.email),
        phone = coalesce(excluded.phone, customers.phone)
    -- Reached by new customers and changed details only: a row that has these details by now
    -- (a batch committed after this statement's snapshot stored them) gets no new version.
    WHERE (customers.name, customers.email, customers.phone) IS DISTINCT FROM (
        coalesce(excluded.name, customers.name),
        coalesce(excluded.email, customers.email),
        coalesce(excluded.phone, customers.phone))
    RETURNING id, external_id
),
numbered AS (
    SELECT a.*, nextval('{TICKET_NUMBER_SEQ.name}') AS number_value
    FROM (SELECT * FROM accepted ORDER BY ord) a
),
ticket AS (
    INSERT INTO tickets ({", ".join(_TICKET_COLUMNS)})
    SELECT {", ".join(_TICKET_VALUES[c] for c in _TICKET_COLUMNS)}
    FROM numbered n ORDER BY n.ord
    RETURNING id, number, customer_id
),
attachment AS (
    INSERT INTO attachments ({", ".join(_ATTACHMENT_TYPES)})
    SELECT {", ".join("a." + c for c in _ATTACHMENT_TYPES)}
    FROM {_recordset(_ATTACHMENT_TYPES, _P_ATTACHMENTS, "a")}
    WHERE a.ticket_id IN (SELECT id FROM accepted)
),
complaint AS (
    INSERT INTO complaint_cases (ticket_id, archived, updated_at)
    SELECT id, false, created_at FROM accepted WHERE kind = 'complaint'
),
timeline_entry AS (
    INSERT INTO timeline (ticket_id, kind, occurred_at, actor, data)
    SELECT id, 'created', created_at, caller, timeline_data FROM accepted ORDER BY ord
),
event AS (
    -- The payloads come as a text array beside the events' JSON document, not inside it: nested
    -- in the document, each ~1 KB envelope was lexed twice (as part of the document, then into
    -- jsonb). `ticket.created` carries stand-ins for the ticket's number and customer id,
    -- replaced here as JSON strings before the text is checked as JSON.
    INSERT INTO outbox (event_id, topic, key, event_type, payload, headers)
    SELECT e.event_id, ${_P_TOPIC}, e.ticket_id::text, e.event_type,
        CASE WHEN e.number_placeholder IS NULL THEN p.payload ELSE replace(replace(p.payload,
            to_json(e.number_placeholder)::text, to_json(t.number)::text),
            to_json(e.customer_placeholder)::text, to_json(t.customer_id::text)::text)
        END::json,
        e.headers
    FROM {_recordset(_EVENT_TYPES, _P_EVENTS, "e")}
    JOIN unnest(${_P_PAYLOADS}::text[]) WITH ORDINALITY AS p(payload, position) ON p.position = e.ord + 1
    JOIN ticket t ON t.id = e.ticket_id
    ORDER BY e.ord
)
SELECT id, number, customer_id FROM ticket
"""
# Placeholders in rows and events until the statement knows the real values. The payload's is
# replaced as text, so it is one no customer text can contain by chance (a random token).
_NUMBER_PLACEHOLDER = f"(pending-{secrets.token_hex(10)})"  # within the contract's 32 characters


async def _session_unchanged(_: asyncpg.Connection) -> None:
    """The writer changes no session state, so a returned connection needs no RESET round trip."""


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
            try:
                # Graceful close waits for every connection to be given back; a writer cancelled
                # mid-release would make it wait forever.
                await asyncio.wait_for(pool.close(), 5.0)
            except TimeoutError:
                pool.terminate()

    async def _connect(self, database_url: str) -> asyncpg.Pool:
        delay = 0.5
        while True:
            try:
                return await asyncpg.create_pool(
                    _plain_dsn(database_url),
                    min_size=1,
                    max_size=self._concurrent,
                    reset=_session_unchanged,
                    max_cached_statement_lifetime=STATEMENT_LIFETIME_SECONDS,  # plans follow the tables
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

    async def _write(self, pool: asyncpg.Pool, batch: list[Pending], *, again: bool = False) -> None:
        try:
            async with pool.acquire() as conn:  # one statement: atomic without BEGIN/COMMIT
                results = await self._store(conn, [draft for draft, _ in batch])
        except asyncio.CancelledError:
            # Shutting down mid-statement: stored or not, every waiting request gets an answer
            # (a retry with its Idempotency-Key replays the ticket if it was stored).
            for _, future in batch:
                if not future.done():
                    future.set_exception(TicketStoreUnavailable("The service is shutting down; retry"))
            raise
        except Exception as exc:
            if len(batch) > 1:
                for pending in batch:
                    await self._write(pool, [pending])
                return
            if isinstance(exc, asyncpg.ForeignKeyViolationError) and not again:
                # A new customer another batch stored after this statement's snapshot (see
                # `customer_id` above): a second statement sees them.
                await self._write(pool, batch, again=True)
                return
            future = batch[0][1]
            if not future.done():
                future.set_exception(_failure(exc))
            return
        BATCH_SIZE.observe(len(batch))
        if any(result is not KEY_ALREADY_USED for result in results.values()):
            self._on_commit()  # wakes the relay (paced by INTAKE_OUTBOX_WAKE_INTERVAL_SECONDS)
        for draft, future in batch:
            if not future.done():  # the client may have gone away
                future.set_result(results[draft.id])

    async def _store(
        self, conn: asyncpg.Connection, drafts: Sequence[TicketDraft]
    ) -> dict[uuid.UUID, TicketOut | None]:
        customers, customer_ids = _customers(drafts)
        rows = []
        for ord_, d in enumerate(drafts):
            row = ticket_row(d, number=_NUMBER_PLACEHOLDER, customer_id=customer_ids[d.id])
            row.update(
                caller=d.caller,
                idem_key=d.idempotency_key,
                request_hash=d.fingerprint,
                customer_external_id=d.body.customer.external_id,
                timeline_data=created_timeline_data(d),
                ord=ord_,
            )
            rows.append(row)
        attachments = [
            {
                "id": uuid.uuid4(),
                "ticket_id": d.id,
                "name": a.name,
                "content_type": a.content_type,
                "size_bytes": a.size_bytes,
                "url": a.url,
                "storage_key": a.storage_key,
                "created_at": d.created_at,
                "ord": 0,
            }
            for d in drafts
            for a in d.body.attachments
        ]
        events, payloads = self._events(drafts, customer_ids)
        stored = await conn.fetch(
            _STORE_BATCH,
            _json(rows),
            _json(customers),
            _json(attachments),
            _json(events),
            self._number_prefix,
            self._topic,
            payloads,
        )
        results: dict[uuid.UUID, TicketOut | None] = dict.fromkeys((d.id for d in drafts), KEY_ALREADY_USED)
        by_id = {d.id: d for d in drafts}
        for record in stored:
            draft = by_id[record["id"]]
            results[draft.id] = _ticket_out(draft, record["number"], record["customer_id"])
        return results

    def _events(
        self, drafts: Sequence[TicketDraft], customer_ids: dict[uuid.UUID, uuid.UUID]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The drafts' events as outbox columns, and their payloads (in the same order)."""
        out: list[dict[str, Any]] = []
        payloads: list[str] = []
        for draft in drafts:
            customer_id = customer_ids[draft.id]
            for payload in created_events(draft, number=_NUMBER_PLACEHOLDER, customer_id=customer_id):
                # The envelope as its JSON text, as `UnitOfWork.publish` stores an event.
                event = envelope_json(
                    payload,
                    source=self._source,
                    subject=str(draft.id),
                    correlationid=draft.correlation_id,
                    traceparent=draft.traceparent,
                )
                created = isinstance(payload, TicketCreated)
                out.append(
                    {
                        "event_id": event.id,
                        "ticket_id": draft.id,
                        "event_type": event.type,
                        "headers": event_headers(
                            event.type, event.id, draft.correlation_id, draft.traceparent
                        ),
                        # The ticket's number and customer id are filled in by the statement.
                        "number_placeholder": _NUMBER_PLACEHOLDER if created else None,
                        "customer_placeholder": str(customer_id) if created else None,
                        "ord": len(out),
                    }
                )
                payloads.append(event.json)
        return out, payloads


def _json(rows: list[dict[str, Any]]) -> str:
    return orjson.dumps(rows).decode()


def _ticket_out(draft: TicketDraft, number: str, customer_id: uuid.UUID) -> TicketOut:
    """The response for a ticket just stored (validating a dict is pydantic's fastest way in)."""
    body = draft.body
    return TicketOut.model_validate(
        {
            "id": draft.id,
            "number": number,
            "status": TicketStatus.NEW,
            "assignee_id": None,
            "team_id": None,
            "customer_id": customer_id,
            "channel": body.channel,
            "kind": body.kind,
            "priority": body.priority,
            "urgent_detected": draft.urgent_detected,
            "subject": body.subject,
            "reference": body.reference,
            "category_hint": body.category_hint,
            "tags": list(body.tags),
            "reopen_count": 0,
            "resolution_count": 0,
            "resolved_at": None,
            "closed_at": None,
            "created_at": draft.created_at,
            "updated_at": draft.created_at,
        }
    )


def _customers(
    drafts: Sequence[TicketDraft],
) -> tuple[list[dict[str, Any]], dict[uuid.UUID, uuid.UUID]]:
    """One row per external id (later tickets' details win, as one upsert after another would);
    customers without an external id are always new. Returns the rows and each draft's
    customer id — a placeholder for an external id the database may already know."""
    merged: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    ids: dict[uuid.UUID, uuid.UUID] = {}
    for draft in drafts:
        c = draft.body.customer
        if c.external_id is None:
            ids[draft.id] = uuid.uuid4()
            rows.append(
                {"id": ids[draft.id], "external_id": None, "name": c.name, "email": c.email, "phone": c.phone}
            )
            continue
        known = merged.setdefault(c.external_id, {"id": uuid.uuid4(), "external_id": c.external_id})
        known.update({k: v for k, v in (("name", c.name), ("email", c.email), ("phone", c.phone)) if v})
        ids[draft.id] = known["id"]
    rows += merged.values()
    for ord_, row in enumerate(rows):
        row["ord"] = ord_
    return rows, ids
