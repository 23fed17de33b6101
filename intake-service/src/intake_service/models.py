"""Intake's tables: tickets and the customers (PII lives only here)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Sequence,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

from helpdesk_shared.chassis.db import service_metadata

TICKET_NUMBER_SEQ = Sequence("ticket_number_seq", start=1)


class Base(DeclarativeBase):
    metadata = service_metadata()


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    phone: Mapped[str | None] = mapped_column(String(50))
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_created_at_id", "created_at", "id"),
        Index("ix_tickets_status_created_at", "status", "created_at"),
        Index("ix_tickets_assignee_id", "assignee_id"),
        # A customer's tickets: export and erasure on request.
        Index("ix_tickets_customer_id", "customer_id"),
        Index("ix_tickets_channel_created_at", "channel", "created_at"),
        Index("ix_tickets_kind_created_at", "kind", "created_at"),
        Index("ix_tickets_priority_created_at", "priority", "created_at"),
        # The category filter: routing's category, else the channel's hint until routing decided one.
        Index("ix_tickets_category_created_at", text("coalesce(category, category_hint)"), "created_at"),
        Index(
            "ix_tickets_search",
            text("to_tsvector('simple'::regconfig, search_tokens)"),
            postgresql_using="gin",
        ),
        # The auto-close pass looks only at answered and resolved tickets, oldest change first.
        Index(
            "ix_tickets_auto_close_due",
            "status_changed_at",
            postgresql_where=text("status IN ('answered', 'resolved')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    channel: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(30))
    status: Mapped[str] = mapped_column(String(30))
    priority: Mapped[str] = mapped_column(String(10))
    urgent_detected: Mapped[bool] = mapped_column(default=False)
    subject: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(100))
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    category_hint: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id"))
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    team_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    previous_assignee_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    resolution_count: Mapped[int] = mapped_column(Integer, default=0)
    # Normalised, jieba-segmented subject + description: full-text search that works for Chinese.
    search_tokens: Mapped[str] = mapped_column(Text, default="")
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    # When the status last became what it is: auto-close counts its days from here.
    status_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Mirrored from routing's `ticket.classified` (and `ticket.assigned` for difficulty) and
    # `ticket.escalated`; `priority` follows the newer of the two decisions (see workflow).
    domain: Mapped[str | None] = mapped_column(String(100))
    category: Mapped[str | None] = mapped_column(String(200))
    difficult: Mapped[bool] = mapped_column(server_default=text("false"), default=False)
    sla_policy_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # As routing matched them at classification: its clocks may pause and move them later.
    first_response_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolution_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When routing made the classification and the escalation stored: older events are ignored.
    classified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    escalated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When routing made the assignment, queueing or transfer the assignee stands by (its event's
    # time): an older one arriving late (a dead-lettered event replayed) is ignored.
    assignment_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @validates("status")
    def _stamp_status_change(self, _key: str, status: str) -> str:
        # Stamped here rather than by each use case: the API, the delivery worker and the
        # consumers of routing's and review's events all move tickets, and one forgotten stamp
        # would close a ticket days early or never.
        if status != self.status:
            self.status_changed_at = datetime.now(UTC)
        return status


class Message(Base):
    """A message on a ticket after its creation: customer follow-ups, outbound answers."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_ticket_id_created_at", "ticket_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id"))
    direction: Mapped[str] = mapped_column(String(10))
    author: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    # RFC 5322 Message-ID of the email carrying this message (threads replies back to the ticket).
    email_message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TimelineEntry(Base):
    """One line of a ticket's history, in the order it happened."""

    __tablename__ = "timeline"
    __table_args__ = (Index("ix_timeline_ticket_id_seq", "ticket_id", "seq"),)

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id"))
    kind: Mapped[str] = mapped_column(String(30))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class IdempotencyKey(Base):
    """A channel's Idempotency-Key: retries replay the first response instead of creating again.

    One key is one request of the caller's: a new ticket (`ticket_id`) or a follow-up on one
    (`ticket_id` and `message_id`).
    """

    __tablename__ = "idempotency_keys"

    caller: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    ticket_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # The follow-up the key's request stored (POST /v1/tickets/{id}/messages).
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class Attachment(Base):
    """Metadata of a file the channel stored; intake keeps where it is, never the bytes."""

    __tablename__ = "attachments"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id"), index=True)
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id"))
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    url: Mapped[str | None] = mapped_column(String(2048))
    storage_key: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Rating(Base):
    """The customer's satisfaction score: one per resolution of a ticket."""

    __tablename__ = "ratings"

    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    resolution_count: Mapped[int] = mapped_column(Integer, primary_key=True)
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    agent_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    rated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ComplaintCase(Base):
    """The case file of a complaint ticket (投訴處理)."""

    __tablename__ = "complaint_cases"

    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    responsible_department: Mapped[str | None] = mapped_column(String(200))
    responsible_person_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    plan: Mapped[str | None] = mapped_column(Text)
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[str | None] = mapped_column(Text)
    root_cause: Mapped[str | None] = mapped_column(Text)
    corrective_action: Mapped[str | None] = mapped_column(Text)
    archived: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Delivery(Base):
    """Getting one approved answer to the customer through the ticket's channel, retried until accepted."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        # The fresh ones (never attempted) are claimed before any retry: found without walking a
        # backlog of overdue retries to a dead webhook.
        Index(
            "ix_deliveries_due_fresh",
            "next_attempt_at",
            postgresql_where=text("status = 'pending' AND attempts = 0"),
        ),
        # One delivery per answer version: the same version published again (under a new event id)
        # is not sent again.
        Index("uq_deliveries_answer_version", "answer_id", "answer_version", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id"), index=True)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id"))
    answer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    answer_version: Mapped[int] = mapped_column(Integer)
    agent_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    channel: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Of the `answer.published` event: the delivery, its log lines and its events carry it on.
    correlation_id: Mapped[str | None] = mapped_column(String(200))
    # Its W3C traceparent (the handler's, a child of the event's): each attempt is a child of it,
    # so the delivery's events and the webhook carry the answer's trace on. None before 0016.
    traceparent: Mapped[str | None] = mapped_column(String(200))
    # The worker attempt that holds the delivery (None: nobody) and until when: only the holder of
    # the token sends it and records the outcome, so two replicas never both send one answer.
    claim_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When it last became pending (published, or retried by a lead): it is given up once pending
    # for INTAKE_DELIVERY_GIVE_UP_AFTER_SECONDS. None on rows from before revision 0013: created_at.
    pending_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class InboundEmail(Base):
    """Every raw message the email channel received, kept for inspection and re-processing."""

    __tablename__ = "inbound_emails"
    __table_args__ = (
        # Erasure finds a customer's messages by these; most messages refer to no other ticket.
        Index(
            "ix_inbound_emails_thread_ticket_id",
            "thread_ticket_id",
            postgresql_where=text("thread_ticket_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    ticket_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    # SHA-256 of the lower-cased From address: what erasure matches an ignored or unreadable
    # message by (those have no ticket). Null once erased, or when no sender could be read.
    sender_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    # The ticket an ignored message refers to (a bounce of our answer, an auto-reply to it).
    thread_ticket_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class EmailThreadId(Base):
    """A Message-ID (without angle brackets) we sent or received, and the ticket it belongs to."""

    __tablename__ = "email_thread_ids"

    message_id: Mapped[str] = mapped_column(String(998), primary_key=True)
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


metadata = Base.metadata
