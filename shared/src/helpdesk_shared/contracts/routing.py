"""Events published by the routing service (topic `helpdesk.routing`).

Key = ticket id, except `agent.status_changed` (key = agent id).
"""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from pydantic import AwareDatetime, Field

from .common import MAX_LIST, REASON_TEXT, SHORT_TEXT, DomainName, Label
from .enums import AgentPresence, EscalationReason, Priority, SlaTarget
from .envelope import ContractModel, EventPayload

PRODUCER = "routing"


class DomainScore(ContractModel):
    """One candidate domain of a classification with its score."""

    domain: DomainName = Field(description="Domain name")
    score: float = Field(ge=0.0, le=1.0, description="Classifier probability / rule confidence")


class TicketClassified(EventPayload):
    """Routing decided a ticket's domain, category, urgency and difficulty, and matched its SLA.

    Intake mirrors category, difficulty and the SLA due times.
    """

    event_type: ClassVar[str] = "ticket.classified"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    domain: DomainName | None = Field(default=None, description="Best domain; None when nothing matched")
    category: str | None = Field(
        default=None, max_length=SHORT_TEXT, description="Category within the domain"
    )
    confidence: float = Field(ge=0.0, le=1.0, description="Confidence of the best domain")
    domains: list[DomainScore] = Field(
        default_factory=list, max_length=MAX_LIST, description="Candidate domains, best first"
    )
    priority: Priority = Field(description="Priority after classification (may be raised to urgent)")
    urgent: bool = Field(default=False, description="Classified as urgent")
    difficult: bool = Field(default=False, description="Difficult (疑難): goes to the team lead")
    reasons: list[Label] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="Why: matched rules, multi-domain, complaint, low confidence, VIP, reopened twice …",
    )
    classifier_version: str | None = Field(
        default=None, max_length=100, description="Classifier model version used, None for rules only"
    )
    sla_policy_id: UUID | None = Field(default=None, description="Matched SLA policy")
    first_response_due_at: AwareDatetime | None = Field(default=None, description="First response due (UTC)")
    resolution_due_at: AwareDatetime | None = Field(default=None, description="Resolution due (UTC)")
    classified_at: AwareDatetime = Field(description="When the decision was made")


class TicketAssigned(EventPayload):
    """A ticket was assigned to an agent (automatically, by a lead, or back after a reopen)."""

    event_type: ClassVar[str] = "ticket.assigned"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    agent_id: UUID = Field(description="The new assignee")
    team_id: UUID | None = Field(default=None, description="The assignee's team")
    assigned_at: AwareDatetime = Field(description="When the assignment was made")
    reason: str = Field(
        max_length=REASON_TEXT,
        description="Why this agent: skill match, least load, difficult → lead, reopened → previous agent …",
    )
    difficult: bool = Field(default=False, description="The ticket is difficult (assignee is the team lead)")
    previous_agent_id: UUID | None = Field(default=None, description="Previous assignee, if any")


class TicketQueued(EventPayload):
    """Nobody with the skill and capacity is free; the ticket waits in a queue."""

    event_type: ClassVar[str] = "ticket.queued"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    team_id: UUID | None = Field(default=None, description="Team whose queue holds it")
    priority: Priority = Field(description="Queue priority (queues drain by priority, then age)")
    reason: str = Field(
        max_length=REASON_TEXT, description="Why it was queued (no capacity, agent offline …)"
    )
    queued_at: AwareDatetime = Field(description="When it was queued")


class TicketTransferred(EventPayload):
    """An authorised, audited transfer of a ticket to another agent (不得私自轉接)."""

    event_type: ClassVar[str] = "ticket.transferred"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    transfer_id: UUID = Field(description="Id of the audit record")
    from_agent_id: UUID | None = Field(default=None, description="Assignee before the transfer")
    to_agent_id: UUID = Field(description="Assignee after the transfer")
    to_team_id: UUID | None = Field(default=None, description="Team of the new assignee")
    requested_by: UUID = Field(description="User who made the transfer (current assignee or a lead)")
    reason: str = Field(min_length=1, max_length=REASON_TEXT, description="Required reason")
    transferred_at: AwareDatetime = Field(description="When the transfer was made")


class TicketCollaboratorsChanged(EventPayload):
    """A ticket's collaborators changed: agents besides the assignee who may draft its answers.

    A team lead or an admin adds them to a ticket someone holds, typically a difficult one
    (疑難問題); routing clears them when the ticket is resolved or closed. The event carries the
    whole current list (state, not a delta), so a consumer replaces what it holds and ignores an
    event older than the last it applied.
    """

    event_type: ClassVar[str] = "ticket.collaborators_changed"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    collaborator_ids: list[UUID] = Field(
        max_length=MAX_LIST,
        description="Every collaborator now, in the order they were added; empty when none are left",
    )
    changed_by: UUID | None = Field(
        default=None, description="Lead or admin who made the change; None when routing cleared the list"
    )
    changed_at: AwareDatetime = Field(description="When the list changed (orders the changes of a ticket)")


class TicketEscalated(EventPayload):
    """A ticket was escalated: priority raised, team lead added as watcher and notified."""

    event_type: ClassVar[str] = "ticket.escalated"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    reason: EscalationReason = Field(description="Why it was escalated")
    sla_target: SlaTarget | None = Field(default=None, description="Breached SLA clock, for SLA escalations")
    previous_priority: Priority = Field(description="Priority before escalation")
    priority: Priority = Field(description="Priority after escalation")
    lead_id: UUID | None = Field(default=None, description="Team lead added as watcher")
    agent_id: UUID | None = Field(default=None, description="Current assignee")
    team_id: UUID | None = Field(default=None, description="Team of the ticket")
    note: str | None = Field(default=None, max_length=REASON_TEXT, description="Note for manual escalations")
    escalated_at: AwareDatetime = Field(description="When it was escalated")


class SlaWarning(EventPayload):
    """An SLA clock passed its warning share of the target."""

    event_type: ClassVar[str] = "sla.warning"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    policy_id: UUID = Field(description="SLA policy")
    target: SlaTarget = Field(description="Which clock")
    share: float = Field(ge=0.0, le=1.0, description="Share of the target elapsed when the warning fired")
    due_at: AwareDatetime = Field(description="When the target will be breached")
    agent_id: UUID | None = Field(default=None, description="Current assignee")
    team_id: UUID | None = Field(default=None, description="Team of the ticket")
    priority: Priority = Field(description="Priority of the ticket")
    warned_at: AwareDatetime = Field(description="When the warning fired")


class SlaBreached(EventPayload):
    """An SLA clock passed its target; an escalation follows."""

    event_type: ClassVar[str] = "sla.breached"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    policy_id: UUID = Field(description="SLA policy")
    target: SlaTarget = Field(description="Which clock")
    due_at: AwareDatetime = Field(description="When the target was due")
    agent_id: UUID | None = Field(default=None, description="Assignee at the breach")
    team_id: UUID | None = Field(default=None, description="Team of the ticket")
    priority: Priority = Field(description="Priority before escalation")
    breached_at: AwareDatetime = Field(description="When the breach fired")


class AgentStatusChanged(EventPayload):
    """An agent's presence or capacity changed (key = agent id)."""

    event_type: ClassVar[str] = "agent.status_changed"
    aggregate_field: ClassVar[str] = "agent_id"

    agent_id: UUID = Field(description="Agent id (aggregate id, Kafka key)")
    team_id: UUID | None = Field(default=None, description="The agent's team")
    presence: AgentPresence = Field(description="Presence now")
    previous_presence: AgentPresence | None = Field(default=None, description="Presence before")
    active_tickets: int = Field(ge=0, description="Tickets the agent holds now")
    max_concurrent: int = Field(ge=0, description="The agent's capacity")
    changed_at: AwareDatetime = Field(description="When it changed")


PAYLOADS: tuple[type[EventPayload], ...] = (
    TicketClassified,
    TicketAssigned,
    TicketQueued,
    TicketTransferred,
    TicketCollaboratorsChanged,
    TicketEscalated,
    SlaWarning,
    SlaBreached,
    AgentStatusChanged,
)
"""Every payload routing publishes, in ARCHITECTURE.md order."""
