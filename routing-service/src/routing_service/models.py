"""Routing's tables: teams, agents with capacity, assignments and the queue."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, func
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from helpdesk_shared.chassis.db import service_metadata


class Base(DeclarativeBase):
    metadata = service_metadata()


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    lead_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (Index("ix_agents_created_at_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    team_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("teams.id"), index=True)
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(30)))
    domains: Mapped[list[str]] = mapped_column(ARRAY(String(100)))
    languages: Mapped[list[str]] = mapped_column(ARRAY(String(35)))
    max_concurrent: Mapped[int] = mapped_column(Integer)
    active_tickets: Mapped[int] = mapped_column(Integer, default=0)
    presence: Mapped[str] = mapped_column(String(20))
    last_assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Assignment(Base):
    """The current owner of a ticket (one row per ticket)."""

    __tablename__ = "assignments"

    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id"), index=True)
    reason: Mapped[str] = mapped_column(String(200))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class QueueEntry(Base):
    """A ticket nobody could take yet; drained by priority, then age."""

    __tablename__ = "queue"

    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    priority_rank: Mapped[int] = mapped_column(Integer)
    priority: Mapped[str] = mapped_column(String(10))
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


metadata = Base.metadata
