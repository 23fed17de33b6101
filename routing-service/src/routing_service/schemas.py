"""Request and response bodies of the routing API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from helpdesk_shared.contracts.enums import AgentPresence, Priority, TicketKind
from routing_service.domain.assignment import MAX_SKILL_LEVEL, MIN_SKILL_LEVEL, effective_levels
from routing_service.domain.business_time import BusinessCalendar, BusinessTimeError
from routing_service.sla_schemas import ClockTime, Weekday

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Domain = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Language = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=35)]
AgentRole = Literal["specialist", "reviewer", "lead"]
SkillLevel = Annotated[int, Field(ge=MIN_SKILL_LEVEL, le=MAX_SKILL_LEVEL)]
Roles = Annotated[list[AgentRole], Field(min_length=1, max_length=3)]
Domains = Annotated[list[Domain], Field(max_length=50)]
SkillLevels = Annotated[
    dict[Domain, SkillLevel],
    Field(
        max_length=50,
        description="Level 1–5 per held domain (a domain without a level is at 3); higher levels are "
        "preferred among equally loaded specialists",
        examples=[{"車險": 4}],
    ),
]
Languages = Annotated[list[Language], Field(max_length=10, description="BCP 47 tags, e.g. zh, en")]
Capacity = Annotated[int, Field(ge=0, le=200, description="Tickets held at once")]


class StoredSchedule(BaseModel):
    """When the agent works. Shown to people planning shifts; routing acts on presence alone.

    As stored: a schedule saved under earlier input rules is shown as it was."""

    time_zone: str = Field(description="IANA time zone")
    weekly_hours: dict[int, list[tuple[ClockTime, ClockTime]]] = Field(
        description='Weekday (0 = Monday … 6 = Sunday) → ordered local ["HH:MM", "HH:MM"] intervals',
    )


class AgentSchedule(StoredSchedule):
    """When the agent works. Shown to people planning shifts; routing acts on presence alone."""

    model_config = ConfigDict(extra="forbid")

    time_zone: str = Field(max_length=64, examples=["Asia/Shanghai"], description="IANA time zone")
    weekly_hours: dict[Weekday, Annotated[list[tuple[ClockTime, ClockTime]], Field(max_length=12)]] = Field(
        description='Weekday (0 = Monday … 6 = Sunday) → ordered local ["HH:MM", "HH:MM"] intervals',
        examples=[{str(d): [["09:00", "12:00"], ["13:30", "18:00"]] for d in range(5)}],
    )

    @model_validator(mode="after")
    def _valid_hours(self) -> Self:
        # The business-calendar rules (known zone, ordered non-overlapping intervals) apply as is.
        try:
            BusinessCalendar(
                id="schedule",
                time_zone=self.time_zone,
                weekly_hours={day: list(hours) for day, hours in self.weekly_hours.items()},
            )
        except BusinessTimeError as exc:
            raise ValueError(str(exc)) from exc
        return self


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    lead_id: uuid.UUID | None = None


class TeamUpdate(BaseModel):
    """Only the fields sent change; `lead_id: null` removes the lead."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    lead_id: uuid.UUID | None = Field(default=None, description="An existing agent")

    @field_validator("name", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


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
    roles: Roles
    domains: Domains = Field(default_factory=list)
    skill_levels: SkillLevels = Field(default_factory=dict)
    languages: Languages = Field(default_factory=lambda: ["zh"])
    max_concurrent: Capacity = 5
    presence: AgentPresence = AgentPresence.ONLINE
    schedule: AgentSchedule | None = None


class AgentUpdate(BaseModel):
    """Only the fields sent change. `team_id: null` and `schedule: null` clear them; the other
    fields may be omitted but not null. `skill_levels` replaces every level; changing `domains`
    alone drops the levels of domains no longer held. Lowering `max_concurrent` below the
    tickets held is allowed: the agent gets no new ticket until below it. Taking a role, a domain
    or a language away sends the agent's untouched tickets that it no longer covers back to the
    queue (see `service.update_agent`)."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    team_id: uuid.UUID | None = None
    roles: Roles | None = None
    domains: Domains | None = None
    skill_levels: SkillLevels | None = None
    languages: Languages | None = None
    max_concurrent: Capacity | None = None
    schedule: AgentSchedule | None = None

    @field_validator("name", "roles", "domains", "skill_levels", "languages", "max_concurrent", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    team_id: uuid.UUID | None
    roles: list[str]
    domains: list[str]
    skill_levels: dict[str, int] = Field(description="Every held domain with its level (1–5)")
    languages: list[str]
    max_concurrent: int
    active_tickets: int
    presence: AgentPresence
    schedule: StoredSchedule | None = None
    created_at: datetime
    deactivated_at: datetime | None = Field(
        default=None,
        description="When the agent was removed (DELETE): kept for history, takes and holds no tickets",
    )

    @model_validator(mode="after")
    def _every_domain_levelled(self) -> Self:
        self.skill_levels = effective_levels(self.domains, self.skill_levels)
        return self


class PresenceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    presence: AgentPresence = Field(
        description="online: takes new tickets; away: keeps its tickets, takes no new ones; "
        "offline: also hands back the tickets it has not worked on yet"
    )


class PresenceOut(AgentOut):
    returned_ticket_ids: list[uuid.UUID] = Field(
        default_factory=list,
        description="Tickets handed back to the queue (and on to free agents) by going offline",
    )


# --- views ----------------------------------------------------------------------------------


class PriorityDepth(BaseModel):
    urgent: int = 0
    high: int = 0
    normal: int = 0
    low: int = 0


class TeamQueue(BaseModel):
    team_id: uuid.UUID | None = Field(
        description="The team holding the tickets' domain best (highest summed skill level of its "
        "specialists); null: the domain is unknown or no team holds it"
    )
    team_name: str | None
    depth: int
    by_priority: PriorityDepth
    oldest_queued_at: datetime = Field(
        description="Since when the longest-waiting customer waits (ticket created or reopened)"
    )
    oldest_wait_seconds: float


class QueueOverview(BaseModel):
    depth: int = Field(description="Tickets waiting for an agent")
    oldest_queued_at: datetime | None = Field(
        description="Since when the longest-waiting customer waits (ticket created or reopened)"
    )
    oldest_wait_seconds: float | None
    by_priority: PriorityDepth
    teams: list[TeamQueue] = Field(description="Deepest first")
    as_of: datetime


class AssignmentOut(BaseModel):
    ticket_id: uuid.UUID
    assigned_at: datetime
    reason: str
    domain: str | None
    language: str | None
    touched: bool = Field(description="The assignee has submitted an answer for it")
    touched_at: datetime | None


class AgentWorkload(BaseModel):
    agent_id: uuid.UUID
    name: str
    team_id: uuid.UUID | None
    presence: AgentPresence
    active_tickets: int
    max_concurrent: int
    utilisation: float | None = Field(
        description="active_tickets / max_concurrent (above 1 after capacity was lowered); null at capacity 0"
    )
    assignments: list[AssignmentOut] = Field(description="Oldest first")


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
