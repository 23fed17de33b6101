"""Events published by the intake service (topic `helpdesk.intake`, key = ticket id).

Intake owns customers' personal data; none of it appears here. Customers are
referred to by intake's pseudonymous `customer_id` only.
"""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from pydantic import AwareDatetime, Field

from .common import (
    COMMENT_TEXT,
    MAX_LIST,
    QUESTION_TEXT,
    REASON_TEXT,
    SHORT_TEXT,
    DomainName,
    LanguageTag,
    Tag,
)
from .enums import (
    Channel,
    CloseReason,
    ComplaintChange,
    MessageAuthor,
    Priority,
    TicketKind,
    TicketStatus,
)
from .envelope import EventPayload

PRODUCER = "intake"


class TicketCreated(EventPayload):
    """A ticket (question, service request or complaint) was accepted from a channel.

    Routing classifies and assigns it and starts its SLA timers; review and kb
    keep the question text; metrics counts it.
    """

    event_type: ClassVar[str] = "ticket.created"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    number: str = Field(min_length=1, max_length=32, description="Human-friendly ticket number")
    channel: Channel = Field(description="Channel the ticket arrived through")
    kind: TicketKind = Field(description="Question, service request or complaint")
    subject: str = Field(max_length=500, description="Subject line as given by the customer")
    description: str = Field(max_length=QUESTION_TEXT, description="The question / request text")
    priority: Priority = Field(description="Priority (given, or raised to urgent when detected)")
    urgent_detected: bool = Field(
        default=False, description="True when urgency was detected from the text (緊急, 加急, ASAP …)"
    )
    customer_id: UUID = Field(description="Intake's pseudonymous customer id (no personal data)")
    customer_vip: bool = Field(default=False, description="The customer is flagged VIP (makes it difficult)")
    category_hint: str | None = Field(
        default=None, max_length=SHORT_TEXT, description="Category suggested by the channel, if any"
    )
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_LIST, description="Free tags")
    language: LanguageTag | None = Field(default=None, description="BCP 47 language tag, if known")
    reference: str | None = Field(
        default=None, max_length=100, description="Order / business reference number given by the customer"
    )
    attachment_count: int = Field(default=0, ge=0, description="Number of attachments stored with it")
    created_at: AwareDatetime = Field(description="When intake accepted the ticket")


class TicketMessageReceived(EventPayload):
    """A message was added to an existing ticket (customer follow-up, reply by email, note)."""

    event_type: ClassVar[str] = "ticket.message_received"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    message_id: UUID = Field(description="Id of the stored message")
    channel: Channel = Field(description="Channel the message arrived through")
    author: MessageAuthor = Field(description="Who wrote it")
    body: str = Field(max_length=QUESTION_TEXT, description="Message text (quoted history stripped)")
    attachment_count: int = Field(default=0, ge=0, description="Number of attachments with the message")
    received_at: AwareDatetime = Field(description="When intake received the message")


class TicketReopened(EventPayload):
    """A customer replied after an answer or resolution; the ticket is open again.

    Routing gives it back to `previous_agent_id` when that agent is available
    and treats a ticket reopened twice as difficult.
    """

    event_type: ClassVar[str] = "ticket.reopened"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    message_id: UUID | None = Field(default=None, description="The customer message that reopened it, if any")
    previous_status: TicketStatus = Field(description="Status before reopening (answered, resolved …)")
    previous_agent_id: UUID | None = Field(default=None, description="Agent who last held the ticket")
    reopen_count: int = Field(
        ge=1, description="How many times this ticket has been reopened, this one included"
    )
    reason: str | None = Field(
        default=None, max_length=REASON_TEXT, description="Why, when not a customer reply"
    )
    reopened_at: AwareDatetime = Field(description="When the ticket was reopened")


class TicketAnswerDelivered(EventPayload):
    """An approved answer reached the customer through the ticket's channel.

    This is the moment that counts as the (first) response for SLAs and KPIs.
    """

    event_type: ClassVar[str] = "ticket.answer_delivered"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    answer_id: UUID = Field(description="Review's answer id")
    answer_version: int = Field(ge=1, description="Delivered version of the answer")
    message_id: UUID = Field(description="Intake's outbound message id")
    channel: Channel = Field(description="Channel the answer was delivered through")
    agent_id: UUID | None = Field(default=None, description="Author of the answer")
    first_response: bool = Field(description="True when this is the ticket's first delivered answer")
    attempts: int = Field(default=1, ge=1, description="Delivery attempts it took")
    delivered_at: AwareDatetime = Field(description="When the channel accepted the answer")


class TicketResolved(EventPayload):
    """The ticket was resolved; the resolution SLA clock stops and a survey is sent."""

    event_type: ClassVar[str] = "ticket.resolved"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    resolved_by: UUID | None = Field(default=None, description="User who resolved it (None: the system)")
    agent_id: UUID | None = Field(default=None, description="Assignee at resolution")
    domain: DomainName | None = Field(
        default=None, description="Final domain (routing learns classifier examples from it)"
    )
    category: str | None = Field(default=None, max_length=SHORT_TEXT, description="Final category")
    resolution_count: int = Field(
        default=1, ge=1, description="1 for the first resolution, 2 after a reopen …"
    )
    note: str | None = Field(default=None, max_length=COMMENT_TEXT, description="Internal resolution note")
    resolved_at: AwareDatetime = Field(description="When it was resolved")


class TicketClosed(EventPayload):
    """The ticket was closed (by a person, or automatically after no customer reply)."""

    event_type: ClassVar[str] = "ticket.closed"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    reason: CloseReason = Field(description="Why it was closed")
    previous_status: TicketStatus = Field(description="Status before closing")
    closed_by: UUID | None = Field(default=None, description="User who closed it (None: the system)")
    closed_at: AwareDatetime = Field(description="When it was closed")


class TicketRated(EventPayload):
    """The customer answered the satisfaction survey (once per resolution)."""

    event_type: ClassVar[str] = "ticket.rated"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    score: int = Field(ge=1, le=5, description="Satisfaction score, 1 (poor) to 5 (excellent)")
    comment: str | None = Field(default=None, max_length=2_000, description="The customer's comment")
    agent_id: UUID | None = Field(default=None, description="Assignee at resolution (for scorecards)")
    resolution_count: int = Field(default=1, ge=1, description="Which resolution was rated")
    rated_at: AwareDatetime = Field(description="When the survey was answered")


class ComplaintUpdated(EventPayload):
    """A complaint's case file changed (投訴處理).

    Carries the case file as it stands after the change; `change` says what
    changed. Responsible people are staff ids, never customer data.
    """

    event_type: ClassVar[str] = "complaint.updated"

    ticket_id: UUID = Field(description="The complaint ticket's id (aggregate id, Kafka key)")
    change: ComplaintChange = Field(description="What changed")
    responsible_department: str | None = Field(
        default=None, max_length=SHORT_TEXT, description="Department responsible for the complaint"
    )
    responsible_person_id: UUID | None = Field(default=None, description="Staff member responsible")
    plan: str | None = Field(default=None, max_length=COMMENT_TEXT, description="Handling plan")
    deadline: AwareDatetime | None = Field(default=None, description="Deadline of the handling plan")
    progress_note: str | None = Field(
        default=None, max_length=COMMENT_TEXT, description="Progress note added by this change"
    )
    result: str | None = Field(
        default=None, max_length=COMMENT_TEXT, description="Result communicated to the customer"
    )
    root_cause: str | None = Field(default=None, max_length=COMMENT_TEXT, description="Root cause")
    corrective_action: str | None = Field(
        default=None, max_length=COMMENT_TEXT, description="Corrective action taken"
    )
    archived: bool = Field(default=False, description="The case file is archived")
    updated_by: UUID | None = Field(default=None, description="Staff member who made the change")
    updated_at: AwareDatetime = Field(description="When the change was made")


ERASED_TICKETS_PER_EVENT = 500
"""Ticket ids in one `CustomerErased`: intake erases a customer's tickets in batches of this size."""


class CustomerErased(EventPayload):
    """A customer was erased on request (保密): intake took the person out of these tickets' text.

    Services that keep customers' own words (routing's classification text and training examples,
    kb's FAQ candidates) forget them for these tickets. A customer with more tickets than fit in one
    event gets several, one per batch erasure rewrote; one with no tickets gets none.
    """

    event_type: ClassVar[str] = "customer.erased"
    aggregate_field: ClassVar[str] = "customer_id"

    customer_id: UUID = Field(description="Intake's pseudonymous customer id (aggregate id, Kafka key)")
    ticket_ids: list[UUID] = Field(
        min_length=1,
        max_length=ERASED_TICKETS_PER_EVENT,
        description="The customer's tickets this event covers (one erasure batch)",
    )
    erased_at: AwareDatetime = Field(description="When the customer was erased")


PAYLOADS: tuple[type[EventPayload], ...] = (
    TicketCreated,
    TicketMessageReceived,
    TicketReopened,
    TicketAnswerDelivered,
    TicketResolved,
    TicketClosed,
    TicketRated,
    ComplaintUpdated,
    CustomerErased,
)
"""Every payload intake publishes, in ARCHITECTURE.md order (then those added since)."""
