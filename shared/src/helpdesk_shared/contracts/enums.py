"""Enumerations shared by every service and used in event payloads.

All are `StrEnum`s: their JSON form is the lower-case value, and they compare
equal to plain strings, so services can store them as text columns.
"""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """Where a ticket or a customer message came from (and where answers go back)."""

    WEB = "web"
    APP = "app"
    EMAIL = "email"
    CHAT = "chat"
    FORUM = "forum"
    PHONE = "phone"
    API = "api"


class TicketKind(StrEnum):
    """What the customer asked for. Complaints are always difficult."""

    QUESTION = "question"
    SERVICE_REQUEST = "service_request"
    COMPLAINT = "complaint"


class Priority(StrEnum):
    """Ticket priority; `urgent` goes first and is escalated."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def rank(self) -> int:
        """0 for `low` … 3 for `urgent`, for ordering queues."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2, Priority.URGENT: 3}


class TicketStatus(StrEnum):
    """States of intake's ticket lifecycle state machine."""

    NEW = "new"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    AWAITING_REVIEW = "awaiting_review"
    ANSWERED = "answered"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REOPENED = "reopened"


class AgentPresence(StrEnum):
    """An agent's presence; only `online` agents receive new tickets."""

    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


class Role(StrEnum):
    """Roles carried in bearer tokens (`channel` is for channel integrations)."""

    AGENT = "agent"
    REVIEWER = "reviewer"
    LEAD = "lead"
    KB_EDITOR = "kb_editor"
    ADMIN = "admin"
    OPS = "ops"
    CHANNEL = "channel"


class MessageAuthor(StrEnum):
    """Who wrote a message on a ticket."""

    CUSTOMER = "customer"
    AGENT = "agent"
    SYSTEM = "system"


class CloseReason(StrEnum):
    """Why a ticket was closed."""

    MANUAL = "manual"
    AUTO_NO_REPLY = "auto_no_reply"
    DUPLICATE = "duplicate"
    SPAM = "spam"


class ComplaintChange(StrEnum):
    """Which part of a complaint case file changed."""

    OPENED = "opened"
    RESPONSIBILITY_ASSIGNED = "responsibility_assigned"
    PLAN_UPDATED = "plan_updated"
    PROGRESS_NOTED = "progress_noted"
    RESULT_RECORDED = "result_recorded"
    ROOT_CAUSE_RECORDED = "root_cause_recorded"
    ARCHIVED = "archived"


class SlaTarget(StrEnum):
    """Which SLA clock a warning, breach or escalation refers to."""

    FIRST_RESPONSE = "first_response"
    RESOLUTION = "resolution"


class EscalationReason(StrEnum):
    """Why a ticket was escalated to the team lead."""

    SLA_BREACH = "sla_breach"
    URGENT = "urgent"
    COMPLAINT = "complaint"
    MANUAL = "manual"


class ReviewVerdict(StrEnum):
    """Outcome of one review of an answer version."""

    APPROVED = "approved"
    REJECTED = "rejected"


class AnswerFormat(StrEnum):
    """Markup of an answer body."""

    PLAIN = "plain"
    MARKDOWN = "markdown"


class Confidentiality(StrEnum):
    """Access level of a knowledge-base article (lowest to highest)."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"


class ArchiveReason(StrEnum):
    """Why a knowledge-base article was archived."""

    STALE = "stale"
    SUPERSEDED = "superseded"
    WITHDRAWN = "withdrawn"


class GapSource(StrEnum):
    """How a knowledge gap was found."""

    SEARCH_NO_HIT = "search_no_hit"
    AGENT_REPORT = "agent_report"
