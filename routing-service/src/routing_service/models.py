"""Routing's tables: teams, agents with capacity, assignments, the queue, and the classifier's data."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
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
    __table_args__ = (
        Index("ix_agents_created_at_id", "created_at", "id"),
        CheckConstraint("deactivated_at IS NULL OR presence = 'offline'", name="deactivated_offline"),
    )

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
    skill_levels: Mapped[dict[str, int]] = mapped_column(JSONB, server_default=sql_text("'{}'::jsonb"))
    """Domain → level 1–5 for the domains given a level; a held domain without one is at level 3."""
    profile: Mapped[str] = mapped_column(
        Text, Computed("agent_profile(domains, skill_levels, languages)", persisted=True)
    )
    """``[domains, skill_levels, languages]`` as JSON text, kept by PostgreSQL (migration 0009): what
    the routing of new tickets reads for every available specialist in every run."""
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """Working schedule {"time_zone", "weekly_hours"}: shown to people; routing acts on presence."""
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When the agent was removed (``DELETE /v1/agents/{id}``; migration 0013). The row stays for
    the history that names it (assignments, transfers, collaborators); a deactivated agent is
    offline for good (the check constraint), in no team, and takes, holds and helps on nothing."""


class Assignment(Base):
    """The current owner of a ticket (one row per ticket).

    The row holds a slot of its agent (counted in `Agent.active_tickets`) until the ticket's answer
    is delivered (``slot_released_at``): the ticket then waits for the customer, and stays its
    agent's — for a reopening, the workload view and the resolution — without counting against
    their capacity.
    """

    __tablename__ = "assignments"

    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id"), index=True)
    reason: Mapped[str] = mapped_column(String(200))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    domain: Mapped[str | None] = mapped_column(String(100))
    language: Mapped[str | None] = mapped_column(String(35))
    touched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When the assignee (or one of the ticket's collaborators) first submitted an answer; untouched
    tickets go back to the queue when their assignee goes offline."""
    slot_released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When an answer was delivered and the agent's slot given back (None: the ticket holds one).
    Whatever later ends the assignment (resolution, close, transfer, reopening) gives back nothing
    then; a reopening that gives the ticket to someone takes a slot of theirs again."""


class QueueEntry(Base):
    """A ticket nobody could take yet; drained by priority, then age (``waiting_since``)."""

    __tablename__ = "queue"

    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    priority_rank: Mapped[int] = mapped_column(Integer)
    priority: Mapped[str] = mapped_column(String(10))
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """When routing put it in the queue (this time)."""
    domain: Mapped[str | None] = mapped_column(String(100))
    language: Mapped[str | None] = mapped_column(String(35))
    waiting_since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """Its age in the queue: when the customer's wait began — the ticket's creation, or its last
    reopening — whenever routing got round to it and however often it was handed back."""
    difficult: Mapped[bool] = mapped_column(Boolean, server_default=sql_text("false"), default=False)
    lead_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    """For a difficult ticket, the team lead it waits for (while that lead is online)."""


class RoutedTicket(Base):
    """What routing learnt about a ticket when it first routed it.

    The row marks the ticket as routed (a replayed `ticket.created` is ignored) and keeps what
    later decisions need (a reopened ticket, one handed back to the queue): the classified domain
    and language, the priority, the difficulty and when the customer's wait began. ``text`` is the
    classification text — customers' own words, which may hold personal data — kept only until
    the ticket is resolved (it then becomes a training example) or closed, and never logged.
    """

    __tablename__ = "routed_tickets"

    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    domain: Mapped[str | None] = mapped_column(String(100))
    language: Mapped[str | None] = mapped_column(String(35))
    text: Mapped[str | None] = mapped_column(Text)
    routed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    priority: Mapped[str | None] = mapped_column(String(10))
    """The priority routing gave it (urgent when classified so); SLA escalations raise the one on
    its clocks, which wins when there are clocks."""
    difficult: Mapped[bool] = mapped_column(Boolean, server_default=sql_text("false"), default=False)
    """Difficult (疑難問題) as classified, or since it was reopened `reopen_limit` times."""
    waiting_since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """When the customer's current wait began: creation, then each reopening."""


class TrainingExample(Base):
    """A labelled question the classifier learns from (bulk import or a resolved ticket).

    Uniqueness is on a SHA-256 of the text (with the domain) rather than the text itself:
    a B-tree entry is limited to about 2.7 kB, which a long Chinese question exceeds.
    ``ticket_id`` names the resolved ticket the text came from, so that the customer's erasure
    finds it (imported examples have none, nor do those stored before it was kept).
    """

    __tablename__ = "training_examples"
    __table_args__ = (
        UniqueConstraint("text_hash", "domain"),
        CheckConstraint("source IN ('import', 'resolved_ticket')", name="source"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    domain: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(20))
    ticket_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ClassifierModel(Base):
    """A trained classifier version; exactly one (or none) is active and used by every replica."""

    __tablename__ = "classifier_models"
    __table_args__ = (
        Index("uq_classifier_models_active", "active", unique=True, postgresql_where=sql_text("active")),
    )

    version: Mapped[int] = mapped_column(Integer, Identity(always=False), primary_key=True)
    format: Mapped[str] = mapped_column(String(50))
    trained_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    trained_by: Mapped[str | None] = mapped_column(String(100))
    n_examples: Mapped[int] = mapped_column(Integer)
    cv_accuracy: Mapped[float | None] = mapped_column(Float)
    classes: Mapped[list[str]] = mapped_column(ARRAY(String(100)))
    blob: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RoutingRule(Base):
    """A lead-editable keyword/regex rule, evaluated before the model (highest priority first)."""

    __tablename__ = "routing_rules"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    pattern: Mapped[str] = mapped_column(String(500))
    is_regex: Mapped[bool] = mapped_column(Boolean)
    domain: Mapped[str | None] = mapped_column(String(100))
    category: Mapped[str | None] = mapped_column(String(200))
    urgent: Mapped[bool] = mapped_column(Boolean)
    enabled: Mapped[bool] = mapped_column(Boolean)
    priority: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --- SLA: business calendars, policies and the per-ticket clocks (see sla.py, sla_timers.py) ----------


class Calendar(Base):
    """A business calendar (domain/business_time.py); ``weekly_hours`` is {"0": [["09:00", "12:00"], …]}
    keyed by weekday (0 = Monday) with local "HH:MM" times, an end of "00:00" meaning midnight."""

    __tablename__ = "business_calendars"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    time_zone: Mapped[str] = mapped_column(String(64))
    weekly_hours: Mapped[dict[str, list[list[str]]]] = mapped_column(JSONB)
    holidays: Mapped[list[date]] = mapped_column(ARRAY(Date))
    workdays: Mapped[list[date]] = mapped_column(ARRAY(Date))
    holiday_source: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SlaPolicy(Base):
    """Targets for the tickets whose kind/priority/difficulty/channel match (``None`` = any)."""

    __tablename__ = "sla_policies"
    __table_args__ = (
        CheckConstraint("warning_share > 0 AND warning_share < 1", name="warning_share"),
        CheckConstraint("first_response_minutes > 0 AND resolution_working_days > 0", name="targets"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str | None] = mapped_column(String(20))
    priority: Mapped[str | None] = mapped_column(String(10))
    difficult: Mapped[bool | None] = mapped_column(Boolean)
    channel: Mapped[str | None] = mapped_column(String(20))
    precedence: Mapped[int] = mapped_column(Integer)
    first_response_minutes: Mapped[int] = mapped_column(Integer)
    resolution_working_days: Mapped[int] = mapped_column(Integer)
    warning_share: Mapped[float] = mapped_column(Float)
    pause_when_waiting_on_customer: Mapped[bool] = mapped_column(Boolean)
    calendar_id: Mapped[str] = mapped_column(ForeignKey("business_calendars.id"))
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SlaTimer(Base):
    """One SLA clock of a ticket. The partial indexes hold exactly the clocks still to fire."""

    __tablename__ = "sla_timers"
    __table_args__ = (
        CheckConstraint("target IN ('first_response', 'resolution')", name="target"),
        Index(
            "ix_sla_timers_warn_due",
            "warn_at",
            postgresql_where=sql_text(
                "warned_at IS NULL AND breached_at IS NULL AND stopped_at IS NULL AND paused_at IS NULL"
            ),
        ),
        Index(
            "ix_sla_timers_breach_due",
            "due_at",
            postgresql_where=sql_text("breached_at IS NULL AND stopped_at IS NULL AND paused_at IS NULL"),
        ),
    )

    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    target: Mapped[str] = mapped_column(String(20), primary_key=True)
    policy_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sla_policies.id"))
    calendar_id: Mapped[str] = mapped_column(ForeignKey("business_calendars.id"))
    priority: Mapped[str] = mapped_column(String(10))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    warn_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_by: Mapped[str | None] = mapped_column(String(20))
    warned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    breached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)


class Transfer(Base):
    """Audit of every transfer (不得私自轉接): who moved which ticket to whom, and why."""

    __tablename__ = "transfers"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    from_agent_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    to_agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id"))
    requested_by: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    reason: Mapped[str] = mapped_column(Text)
    transferred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TicketCollaborator(Base):
    """An agent a lead added to a ticket besides its assignee: they may draft its answers too.

    Cleared when the ticket is resolved or closed; kept across transfers (the collaborators
    belong to the ticket, not to whoever holds it).
    """

    __tablename__ = "ticket_collaborators"

    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id"), primary_key=True, index=True)
    added_by: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


metadata = Base.metadata
