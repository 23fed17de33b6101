"""SLA rules (pure: no I/O, no clock): which policy applies, when a clock warns and breaches, its state.

* **Policy matching.** A policy's criteria (kind, priority, difficult, channel) are each either a
  value or ``None`` = any. Among the active policies whose criteria all hold, the lowest
  ``precedence`` wins; on a tie the more specific one (more criteria set) wins, then the older
  one, so the choice is deterministic. Leads order policies explicitly through ``precedence``;
  specificity only breaks ties so that "urgent complaints" beats "complaints" at equal rank.
* **Targets.** First response is counted in business minutes, resolution in working days, each
  working day being the calendar's standard daily working time (so "1 working day" on
  ``cn-default`` is 450 business minutes, whatever the hours of the day it starts on).
* **Warning** fires when ``warning_share`` of the target's business time has elapsed.
* **Pausing** (waiting on the customer) freezes the remaining business time; resuming moves the
  due and warning instants forward by the business time that elapsed while paused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from helpdesk_shared.contracts.enums import Channel, Priority, TicketKind
from routing_service.domain.business_time import BusinessCalendar, Coverage

TimerState = Literal["running", "paused", "met", "breached", "cancelled"]
StopReason = Literal["answered", "resolved", "closed"]

_RAISED = {
    Priority.LOW: Priority.NORMAL,
    Priority.NORMAL: Priority.HIGH,
    Priority.HIGH: Priority.URGENT,
    Priority.URGENT: Priority.URGENT,
}


@dataclass(frozen=True, slots=True)
class SlaFacts:
    """What a policy is matched on."""

    kind: TicketKind
    priority: Priority
    difficult: bool
    channel: Channel


@dataclass(frozen=True, slots=True)
class PolicyCriteria:
    id: uuid.UUID
    precedence: int
    created_at: datetime
    kind: str | None = None
    priority: str | None = None
    difficult: bool | None = None
    channel: str | None = None

    @property
    def specificity(self) -> int:
        return sum(c is not None for c in (self.kind, self.priority, self.difficult, self.channel))

    def matches(self, facts: SlaFacts) -> bool:
        return (
            (self.kind is None or self.kind == facts.kind)
            and (self.priority is None or self.priority == facts.priority)
            and (self.difficult is None or self.difficult == facts.difficult)
            and (self.channel is None or self.channel == facts.channel)
        )


def match_policy(policies: Iterable[PolicyCriteria], facts: SlaFacts) -> PolicyCriteria | None:
    """The policy that applies to a ticket with ``facts`` (``None`` when no active policy matches)."""
    candidates = [p for p in policies if p.matches(facts)]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (p.precedence, -p.specificity, p.created_at, p.id))


def raise_priority(priority: Priority) -> Priority:
    """One step up (low → normal → high → urgent); urgent stays urgent."""
    return _RAISED[priority]


def is_difficult_at_intake(kind: TicketKind, customer_vip: bool) -> bool:
    """Difficulty as far as it is known when a ticket arrives: complaints and VIP customers.

    Multi-domain and low-confidence difficulty needs the classifier's decision; callers that
    have it pass it explicitly instead.
    """
    return kind == TicketKind.COMPLAINT or customer_vip


@dataclass(frozen=True, slots=True)
class Deadline:
    due_at: datetime
    warn_at: datetime


def plan(calendar: BusinessCalendar, start: datetime, target: timedelta, warning_share: float) -> Deadline:
    """Due and warning instants of a clock of ``target`` business time started at ``start``."""
    return Deadline(
        due_at=calendar.add_business_time(start, target),
        warn_at=calendar.add_business_time(start, target * warning_share),
    )


def resolution_target(calendar: BusinessCalendar, working_days: int) -> timedelta:
    return working_days * calendar.standard_day


def resume(calendar: BusinessCalendar, paused_at: datetime, now: datetime, instant: datetime) -> datetime:
    """Where ``instant`` (a due or warning time) moves when a clock paused at ``paused_at`` resumes.

    The business time that was left at the pause is left again from ``now``; an instant already
    passed at the pause stays where it was (a breach is not undone by waiting on the customer).
    """
    left = calendar.business_time_between(paused_at, instant)
    if left <= timedelta(0):
        return instant
    return calendar.add_business_time(max(now, paused_at), left)


def timer_state(
    *,
    now: datetime,
    due_at: datetime,
    paused_at: datetime | None,
    stopped_at: datetime | None,
    stopped_by: str | None,
    breached_at: datetime | None,
) -> TimerState:
    """``met``: stopped by an answer/resolution in time; ``cancelled``: closed before its due time
    without having been met; ``breached``: stopped late, fired, or running past its due time.

    When it stopped decides over a breach the worker recorded: an answer delivered just before the
    due time can reach routing just after the worker fired, and the clock was met all the same.
    """
    if stopped_at is not None:
        if stopped_at > due_at:
            return "breached"
        return "cancelled" if stopped_by == "closed" else "met"
    if breached_at is not None:
        return "breached"
    if paused_at is not None:
        return "paused" if paused_at <= due_at else "breached"
    return "breached" if now >= due_at else "running"


def coverage_between(calendar: BusinessCalendar, start: datetime, end: datetime) -> Coverage:
    """The weakest holiday-data coverage over the local years from ``start`` to ``end``.

    A preview that crosses into a year the holiday source has no data for is a fallback
    answer even when it started in a covered year (and an estimated one when it crosses into a
    year whose schedule is not published yet).
    """
    zone = ZoneInfo(calendar.time_zone)
    first, last = sorted((start.astimezone(zone).year, end.astimezone(zone).year))
    verdicts: Sequence[Coverage] = [calendar.coverage(year) for year in range(first, last + 1)]
    if "none" in verdicts:
        return "none"
    for weakest in ("fallback", "estimated"):
        if weakest in verdicts:
            return weakest
    return "statutory"
