"""Request and response bodies of the routing API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from helpdesk_shared.contracts.enums import AgentPresence, Priority, TicketKind

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Domain = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Language = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=35)]
AgentRole = Literal["specialist", "reviewer", "lead"]


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    lead_id: uuid.UUID | None = None


class TeamOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    lead_id: uuid.UUID | None
    created_at: datetime


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID | None = Field(default=None, description="Reuse the identity provider's user id")
    name: Name
    team_id: uuid.UUID | None = None
    roles: list[AgentRole] = Field(min_length=1, max_length=3)
    domains: list[Domain] = Field(default_factory=list, max_length=50)
    languages: list[Language] = Field(default_factory=lambda: ["zh"], max_length=10)
    max_concurrent: int = Field(default=5, ge=0, le=200)
    presence: AgentPresence = AgentPresence.ONLINE


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    team_id: uuid.UUID | None
    roles: list[str]
    domains: list[str]
    languages: list[str]
    max_concurrent: int
    active_tickets: int
    presence: AgentPresence
    created_at: datetime


# --- classification -------------------------------------------------------------------------

Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ImportResult(BaseModel):
    imported: int = Field(description="New examples stored")
    duplicates: int = Field(description="Lines whose (text, domain) was already stored or repeated")


class ClassifierOut(BaseModel):
    version: int
    n_examples: int
    classes: list[str]
    trained_at: datetime
    cv_accuracy: float | None = Field(description="Accuracy of out-of-fold predictions while training")


class ClassifyRequest(BaseModel):
    """A text to classify, optionally with the ticket facts that bear on difficulty and urgency."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20_000)
    kind: TicketKind = TicketKind.QUESTION
    priority: Priority = Priority.NORMAL
    customer_vip: bool = False
    reopen_count: int = Field(default=0, ge=0, le=1_000)


class DomainScoreOut(BaseModel):
    domain: str
    score: float


class ClassifyResponse(BaseModel):
    domain: str | None
    confidence: float
    domains: list[DomainScoreOut]
    category: str | None
    urgent: bool
    difficult: bool
    reasons: list[str]
    source: Literal["rule", "model", "none"] = Field(description="What decided the domain")
    classifier_version: int | None


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    pattern: str = Field(
        min_length=1, max_length=500, description="Keywords separated by '|', or a regular expression"
    )
    is_regex: bool = False
    domain: Domain | None = Field(default=None, description="Forces this domain (confidence 1.0) on a match")
    category: Category | None = None
    urgent: bool = False
    enabled: bool = True
    priority: int = Field(
        default=100, ge=0, le=1_000_000, description="Higher priorities are evaluated first"
    )


class RuleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    pattern: str
    is_regex: bool
    domain: str | None
    category: str | None
    urgent: bool
    enabled: bool
    priority: int
    created_at: datetime
