"""Unit of work: one session, one transaction, events committed with state.

Use cases open a unit of work, change state through repositories (which only
flush), `publish` events, then `commit()`. The events become outbox rows in
the same transaction, so either both the state change and its events are
stored or neither is. After the commit the outbox relay is woken so that the
events reach Kafka within milliseconds instead of waiting for the next sweep.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from helpdesk_shared.chassis.db import OUTBOX, driver_connection
from helpdesk_shared.chassis.logging import correlation_id_var, traceparent_var
from helpdesk_shared.contracts.envelope import EventPayload, NewEvent, envelope_json


class UnitOfWork:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        source: str,
        topic: str,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._source = source
        self._topic = topic
        self._on_commit = on_commit
        self._pending: list[dict[str, Any]] = []
        self._wrote_events = False
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("UnitOfWork used outside its 'async with' block")
        return self._session

    async def __aenter__(self) -> UnitOfWork:
        self._session = self._sessionmaker()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session, self._session = self.session, None
        self._pending.clear()
        self._wrote_events = False
        try:
            await session.rollback()  # no-op after a commit; undoes anything left uncommitted
        finally:
            await session.close()

    def publish(
        self,
        payload: EventPayload,
        *,
        subject: str,
        correlationid: str | None = None,
        traceparent: str | None = None,
    ) -> NewEvent:
        """Queue an event for this service's topic; it is stored on `commit()`. It carries
        ``correlationid`` and ``traceparent``, by default those the unit of work runs under (the
        request's, or the event's being handled)."""
        correlationid = correlationid or correlation_id_var.get()
        traceparent = traceparent or traceparent_var.get()
        event = envelope_json(
            payload,
            source=self._source,
            subject=subject,
            correlationid=correlationid,
            traceparent=traceparent,
        )
        self._queue(
            self._topic,
            subject,
            event.id,
            event.type,
            event.json,
            event_headers(event.type, event.id, correlationid, traceparent),
        )
        return event

    def add_outbox_message(
        self,
        *,
        topic: str,
        key: str | None,
        event_id: uuid.UUID,
        event_type: str,
        payload: dict[str, Any],
        headers: dict[str, str],
    ) -> None:
        """Queue a message that is not one of this service's events (a dead letter, say) for ``topic``."""
        # Serialized now (orjson: datetimes, UUIDs), stored as this very JSON text.
        self._queue(topic, key, event_id, event_type, orjson.dumps(payload, default=str).decode(), headers)

    def _queue(
        self,
        topic: str,
        key: str | None,
        event_id: uuid.UUID,
        event_type: str,
        payload_json: str,
        headers: dict[str, str],
    ) -> None:
        """A row for the outbox: stored by one statement at commit, its JSON text the very text the
        relay publishes."""
        self._pending.append(
            {
                "event_id": event_id,
                "topic": topic,
                "key": key,
                "event_type": event_type,
                "payload": payload_json,
                "headers": orjson.dumps(headers).decode(),
            }
        )

    async def flush(self) -> None:
        await self.session.flush()

    async def driver_connection(self) -> Any:
        """The asyncpg connection under this unit of work's transaction (begun if need be), for
        hot paths whose statements are plain SQL: no ORM or statement-compilation cost."""
        return await driver_connection(self.session)

    async def write_events(self) -> None:
        """Store the events published so far now rather than at `commit()` (still in this
        transaction): lets a use case keep its last statements — e.g. a contended row update —
        right before the commit."""
        if (insert := self.events_insert(first_parameter=1)) is not None:
            sql, parameters = insert
            driver = await self.driver_connection()
            await driver.execute(sql, *parameters)

    def events_insert(self, *, first_parameter: int) -> tuple[str, list[list[Any]]] | None:
        """The events published so far as an INSERT for the caller's own statement (a
        data-modifying CTE of it, say), its parameters numbered from ``first_parameter``:
        ``(sql, parameters)``, or None when nothing is pending. They count as written — the
        caller must run the statement in this transaction (one round trip for both).

        The rows keep their publication order (`seq` follows it)."""
        if not self._pending:
            return None
        rows, self._pending = self._pending, []
        self._wrote_events = True
        placeholders = [f"${first_parameter + n}" for n in range(len(_EVENT_COLUMNS))]
        return _INSERT_EVENTS.format(*placeholders), [[row[c] for row in rows] for c in _EVENT_COLUMNS]

    async def commit(self) -> None:
        await self.write_events()
        had_events, self._wrote_events = self._wrote_events, False
        await self.session.commit()
        if had_events and self._on_commit is not None:
            self._on_commit()


UnitOfWorkFactory = Callable[[], UnitOfWork]

_EVENT_COLUMNS = ("event_id", "topic", "key", "event_type", "payload", "headers")
# One statement for all of a transaction's events, in publication order (`seq` follows it).
# Its six parameters' placeholders are filled in by `events_insert`.
_INSERT_EVENTS = (
    f"INSERT INTO {OUTBOX.name} (event_id, topic, key, event_type, payload, headers) "
    "SELECT e.event_id, e.topic, e.key, e.event_type, CAST(e.payload AS json), CAST(e.headers AS json) "
    "FROM unnest({}::uuid[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[]) WITH ORDINALITY "
    "AS e(event_id, topic, key, event_type, payload, headers, position) ORDER BY e.position"
)


def event_headers(
    event_type: str, event_id: uuid.UUID, correlationid: str | None, traceparent: str | None = None
) -> dict[str, str]:
    """The Kafka headers of an event: CloudEvents type and id, the correlation id, and the W3C
    `traceparent` when there is one (for whatever reads the records without parsing them)."""
    headers = {"ce_type": event_type, "ce_id": str(event_id), "correlationid": correlationid or ""}
    if traceparent is not None:
        headers["traceparent"] = traceparent
    return headers
