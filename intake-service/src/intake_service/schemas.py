"""Request and response bodies of the intake API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from helpdesk_shared.contracts.enums import Channel, CloseReason, Priority, TicketKind, TicketStatus

Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class _StorableText(BaseModel):
    """A body whose text PostgreSQL can store: U+0000 is refused by validation (a 422 naming the
    field) instead of failing at the database — for a new ticket, the writer's whole batch."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        texts = value if isinstance(value, list) else (value,)
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("must not contain the NUL character (U+0000)")
        return value


class CustomerIn(_StorableText):
    model_config = ConfigDict(extra="forbid")

    external_id: str | None = Field(default=None, max_length=200, description="The channel's own customer id")
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(
        default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", examples=["li.lei@example.com"]
    )
    phone: str | None = Field(
        default=None, pattern=r"^\+?[0-9][0-9 ()\-]{2,48}$", examples=["+86 138 0000 0000"]
    )

    @model_validator(mode="after")
    def _identifiable(self) -> CustomerIn:
        if not (self.external_id or self.email or self.phone):
            raise ValueError("customer needs at least one of external_id, email or phone")
        return self


MAX_ATTACHMENTS = 20
MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
MAX_TOTAL_ATTACHMENT_BYTES = 50 * 1024 * 1024


class AttachmentIn(_StorableText):
    """Where the channel stored a file: a URL or a storage key (intake never holds the bytes)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    content_type: str = Field(pattern=r"^[\w.+-]+/[\w.+-]+$", max_length=255, examples=["application/pdf"])
    size_bytes: int = Field(ge=0, le=MAX_ATTACHMENT_BYTES)
    url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2048)
    storage_key: str | None = Field(default=None, min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _one_location(self) -> AttachmentIn:
        if (self.url is None) == (self.storage_key is None):
            raise ValueError("give exactly one of url or storage_key")
        return self


def _total_size_within_limit(attachments: list[AttachmentIn]) -> None:
    total = sum(a.size_bytes for a in attachments)
    if total > MAX_TOTAL_ATTACHMENT_BYTES:
        raise ValueError(f"attachments total {total} bytes; the limit is {MAX_TOTAL_ATTACHMENT_BYTES}")


class TicketCreate(_StorableText):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    kind: TicketKind
    subject: str = Field(min_length=1, max_length=300)
    description: str = Field(min_length=1, max_length=20_000)
    customer: CustomerIn
    priority: Priority = Priority.NORMAL
    reference: str | None = Field(default=None, max_length=100, description="Order or business number")
    category_hint: str | None = Field(default=None, max_length=200)
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    callback_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        max_length=2048,
        description="Where approved answers are delivered (signed webhook) for non-email channels, instead "
        "of the channel's configured callback. Its host must be one of the deployment's "
        "INTAKE_CALLBACK_HOSTS when it lists any, and in production it must be https and is refused "
        "unless the list is set (422 naming body.callback_url)",
    )

    @model_validator(mode="after")
    def _attachments_fit(self) -> TicketCreate:
        _total_size_within_limit(self.attachments)
        return self


class TicketOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    number: str
    status: TicketStatus
    assignee_id: uuid.UUID | None
    team_id: uuid.UUID | None
    customer_id: uuid.UUID
    channel: Channel
    kind: TicketKind
    priority: Priority
    urgent_detected: bool
    subject: str
    reference: str | None
    category_hint: str | None
    tags: list[str]
    reopen_count: int
    resolution_count: int
    resolved_at: datetime | None
    closed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # Routing's decisions, mirrored from its events (a new ticket has none yet). Staff only: null
    # for channel integrations (see `service.ticket_view`).
    domain: str | None = Field(
        default=None, description="Domain routing classified the ticket in (staff only: null for channels)"
    )
    category: str | None = Field(
        default=None,
        description="Category routing decided (null: not decided, see category_hint; staff only: null "
        "for channels)",
    )
    difficult: bool | None = Field(
        default=None,
        description="Difficult (疑難), as routing decided: true or false for staff, null for channels",
    )
    sla_policy_id: uuid.UUID | None = Field(
        default=None, description="The SLA policy routing matched (staff only: null for channels)"
    )
    first_response_due_at: datetime | None = Field(
        default=None,
        description="First response due, as routing matched it at classification "
        "(routing's GET /v1/tickets/{id}/sla has the clocks as they run; staff only: null for channels)",
    )
    resolution_due_at: datetime | None = Field(
        default=None,
        description="Resolution due, as routing matched it at classification (a paused or "
        "restarted clock moves it later in routing; staff only: null for channels)",
    )
    escalated_at: datetime | None = Field(
        default=None, description="When routing last escalated the ticket (staff only: null for channels)"
    )


class MessageCreate(_StorableText):
    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=20_000)
    channel: Channel | None = Field(default=None, description="Defaults to the ticket's channel")
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)

    @model_validator(mode="after")
    def _attachments_fit(self) -> MessageCreate:
        _total_size_within_limit(self.attachments)
        return self


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    ticket_id: uuid.UUID
    direction: Literal["inbound", "outbound"]
    author: str
    channel: Channel
    body: str
    created_at: datetime


class ResolveRequest(_StorableText):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=4_000, description="Internal resolution note")
    domain: str | None = Field(
        default=None, min_length=1, max_length=100, description="Final domain, if it changed"
    )
    category: str | None = Field(default=None, max_length=200)


class CloseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Literal[CloseReason.MANUAL, CloseReason.DUPLICATE, CloseReason.SPAM] = CloseReason.MANUAL


class TimelineItem(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    kind: str = Field(
        description="created, message, assigned, status_changed, transferred, answer_submitted, "
        "answer_rejected, answer_approved, answer_published, answer_delivered, delivery_failed, rated, "
        "complaint, follow_up_of, follow_up_opened, queued, collaborators, classified, escalated, "
        "delivery_retried, answer_not_delivered"
    )
    occurred_at: datetime
    actor: str | None
    data: dict[str, Any] = Field(
        description="The entry's details by kind. A `message` entry has `message_id`, `author` and "
        "`direction`; staff also get the message's `channel`, `body` and `attachments` (id, name, "
        "content_type, size_bytes), the customer's email and phone masked unless their role sees them"
    )


class AttachmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    message_id: uuid.UUID | None
    name: str
    content_type: str
    size_bytes: int
    url: str | None
    storage_key: str | None
    created_at: datetime


class CustomerOut(BaseModel):
    """Contact data, masked for roles that do not need it."""

    id: uuid.UUID
    external_id: str | None
    name: str | None
    email: str | None
    phone: str | None
    masked: bool
    erased: bool
    created_at: datetime


class SurveyLink(BaseModel):
    url: str
    token: str
    expires_at: datetime


class RatingCreate(_StorableText):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=10, max_length=2000, description="From the survey link")
    score: int = Field(ge=1, le=5, description="1 (poor) … 5 (excellent)")
    comment: str | None = Field(default=None, max_length=2000)


class RatingOut(BaseModel):
    ticket_id: uuid.UUID
    resolution_count: int
    score: int
    rated_at: datetime


class TicketExport(TicketOut):
    """A ticket as the customer's data: with the text they wrote."""

    description: str


class AttachmentExport(AttachmentOut):
    ticket_id: uuid.UUID


class RatingExport(RatingOut):
    model_config = ConfigDict(from_attributes=True)

    comment: str | None


class CustomerExport(BaseModel):
    """Everything intake holds about one customer (a data subject access request)."""

    customer: CustomerOut
    tickets: list[TicketExport]
    messages: list[MessageOut]
    attachments: list[AttachmentExport] = Field(
        description="Metadata; the files stay where the channel put them"
    )
    ratings: list[RatingExport]


class ComplaintCaseUpdate(_StorableText):
    """Only the fields present change."""

    model_config = ConfigDict(extra="forbid")

    responsible_department: str | None = Field(default=None, max_length=200)
    responsible_person_id: uuid.UUID | None = None
    plan: str | None = Field(default=None, max_length=4_000)
    deadline: AwareDatetime | None = Field(default=None, description="With a UTC offset, e.g. +08:00")
    result: str | None = Field(
        default=None, max_length=4_000, description="Result communicated to the customer"
    )
    root_cause: str | None = Field(default=None, max_length=4_000)
    corrective_action: str | None = Field(default=None, max_length=4_000)
    # The schema says boolean (null is refused below); None only stands for "not sent".
    archived: bool | SkipJsonSchema[None] = Field(
        default=None, description="true archives the case file (then read-only)"
    )

    @field_validator("archived")
    @classmethod
    def _archived_is_true_or_false(cls, value: bool | None) -> bool:
        # Unlike the texts, which null clears, a case file is archived or not: null is no answer.
        if value is None:
            raise ValueError("archived is true or false (leave it out to keep it as it is)")
        return value


class ComplaintNote(_StorableText):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=4_000)


class ComplaintCaseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ticket_id: uuid.UUID
    responsible_department: str | None
    responsible_person_id: uuid.UUID | None
    plan: str | None
    deadline: datetime | None
    result: str | None
    root_cause: str | None
    corrective_action: str | None
    archived: bool
    updated_at: datetime
