"""Request and response bodies of the intake API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from helpdesk_shared.contracts.enums import Channel, CloseReason, Priority, TicketKind, TicketStatus

Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class CustomerIn(BaseModel):
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


class TicketCreate(BaseModel):
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


class TicketOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    number: str
    status: TicketStatus
    assignee_id: uuid.UUID | None
    team_id: uuid.UUID | None
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


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=20_000)
    channel: Channel | None = Field(default=None, description="Defaults to the ticket's channel")


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    ticket_id: uuid.UUID
    direction: Literal["inbound", "outbound"]
    author: str
    channel: Channel
    body: str
    created_at: datetime


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=4_000, description="Internal resolution note")
    domain: str | None = Field(default=None, max_length=100, description="Final domain, if it changed")
    category: str | None = Field(default=None, max_length=200)


class CloseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Literal[CloseReason.MANUAL, CloseReason.DUPLICATE, CloseReason.SPAM] = CloseReason.MANUAL


class TimelineItem(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    kind: str = Field(description="created, message, assigned, status_changed, transferred, review …")
    occurred_at: datetime
    actor: str | None
    data: dict[str, Any]
