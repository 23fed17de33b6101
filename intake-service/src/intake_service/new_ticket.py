"""A new ticket as data: what is decided before the database is touched, and its rows and events.

Both ways a ticket is created build it from here: the API's group-commit writer
(`ticket_writer`) and the email channel's ORM unit of work (`service.stage_ticket`), so
the two cannot drift apart in what they store or announce.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from helpdesk_shared.chassis.logging import correlation_id_var, traceparent_var
from helpdesk_shared.contracts.enums import ComplaintChange, TicketKind, TicketStatus
from helpdesk_shared.contracts.envelope import EventPayload
from helpdesk_shared.contracts.intake import ComplaintUpdated, TicketCreated
from helpdesk_shared.text import normalise, words
from intake_service.domain.privacy import field_max_length, redact_to_fit
from intake_service.domain.urgency import detect_urgent
from intake_service.schemas import TicketCreate

# Redaction can lengthen text the API accepted at its own limit: the event's copies are cut to these.
_SUBJECT_LIMIT = field_max_length(TicketCreated, "subject")
_DESCRIPTION_LIMIT = field_max_length(TicketCreated, "description")


def request_fingerprint(body: TicketCreate) -> str:
    """What an Idempotency-Key is bound to: a retry must carry the same body."""
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


@dataclass(slots=True)
class TicketDraft:
    """A ticket accepted by validation, with everything computed that needs no database."""

    body: TicketCreate
    caller: str
    idempotency_key: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    correlation_id: str | None = field(default_factory=correlation_id_var.get)
    traceparent: str | None = field(default_factory=traceparent_var.get)
    fingerprint: str | None = None
    urgent_detected: bool = False
    search_tokens: str = ""

    def __post_init__(self) -> None:
        body = self.body
        if self.idempotency_key is not None:
            self.fingerprint = request_fingerprint(body)
        text = ticket_text(body.subject, body.description)
        self.urgent_detected = detect_urgent(text)
        self.search_tokens = search_tokens(text)


def ticket_text(subject: str, description: str) -> str:
    """A ticket's text as urgency detection and search read it: normalised."""
    return normalise(f"{subject} {description}")


def search_tokens(text: str) -> str:
    """What a ticket's search index holds for its ``ticket_text``: the segmented words, so that
    full-text search works for Chinese."""
    return " ".join(words(text, for_search=True))


def ticket_number(prefix: str, sequence_value: int) -> str:
    return f"{prefix}-{sequence_value:06d}"


def ticket_row(draft: TicketDraft, *, number: str, customer_id: uuid.UUID) -> dict[str, Any]:
    """The `tickets` row of a new ticket (column → value)."""
    body = draft.body
    return {
        "id": draft.id,
        "number": number,
        "channel": body.channel.value,
        "kind": body.kind.value,
        "status": TicketStatus.NEW.value,
        "priority": body.priority.value,
        "urgent_detected": draft.urgent_detected,
        "subject": body.subject,
        "description": body.description,
        "reference": body.reference,
        "callback_url": body.callback_url,
        "category_hint": body.category_hint,
        "tags": list(body.tags),
        "customer_id": customer_id,
        "reopen_count": 0,
        "resolution_count": 0,
        "search_tokens": draft.search_tokens,
        "created_at": draft.created_at,
        "updated_at": draft.created_at,
        "status_changed_at": draft.created_at,
    }


def created_timeline_data(draft: TicketDraft) -> dict[str, Any]:
    return {"status": TicketStatus.NEW.value, "channel": draft.body.channel.value}


def created_events(draft: TicketDraft, *, number: str, customer_id: uuid.UUID) -> list[EventPayload]:
    """`ticket.created` (and `complaint.updated` opening the case file of a complaint).

    The question text leaves intake with the customer's contact details redacted.
    """
    body = draft.body
    email, phone = body.customer.email, body.customer.phone
    events: list[EventPayload] = [
        TicketCreated(
            ticket_id=draft.id,
            number=number,
            channel=body.channel,
            kind=body.kind,
            subject=redact_to_fit(body.subject, _SUBJECT_LIMIT, email, phone),
            description=redact_to_fit(body.description, _DESCRIPTION_LIMIT, email, phone),
            priority=body.priority,
            urgent_detected=draft.urgent_detected,
            customer_id=customer_id,
            category_hint=body.category_hint,
            tags=list(body.tags),
            reference=body.reference,
            attachment_count=len(body.attachments),
            created_at=draft.created_at,
        )
    ]
    if body.kind == TicketKind.COMPLAINT:
        events.append(
            ComplaintUpdated(ticket_id=draft.id, change=ComplaintChange.OPENED, updated_at=draft.created_at)
        )
    return events
