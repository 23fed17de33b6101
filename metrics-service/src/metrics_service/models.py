"""Metrics' read models, built only from events (rebuildable by replaying Kafka)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from helpdesk_shared.chassis.db import service_metadata


class Base(DeclarativeBase):
    metadata = service_metadata()


class TicketFact(Base):
    """One row per ticket; columns fill in as the ticket's events arrive, in any order."""

    __tablename__ = "ticket_facts"

    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    channel: Mapped[str | None] = mapped_column(String(20))
    kind: Mapped[str | None] = mapped_column(String(30))
    priority: Mapped[str | None] = mapped_column(String(10))
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Time of the `ticket.assigned` applied last (transfers leave it alone)."""
    agent_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    """The agent credited with the ticket: who holds it after its newest assignment or transfer."""
    agent_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When ``agent_id`` got the ticket: an assignment or transfer older than this, arriving late,
    does not take the credit back."""


metadata = Base.metadata
