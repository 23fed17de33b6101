"""SLA use cases on a ticket's two clocks, from its creation to its closing, and the ticket's SLA view.

The functions called from event handlers (:func:`start_timers`, :func:`answer_delivered`,
:func:`ticket_resolved`, :func:`ticket_closed`, :func:`ticket_reopened`) **never commit**: they
add their changes to the caller's unit of work so that the handler's other use case (routing,
capacity) commits the clocks, the assignment and the inbox row in one transaction — a crash can
never leave a ticket assigned without its clocks, or its event marked handled without them.

A ticket's clocks over its life:

* ``ticket.created`` starts *first response* (business minutes) and *resolution* (working days)
  at the ticket's creation time, from the best matching policy and that policy's calendar.
* ``ticket.answer_delivered`` stops *first response* (met, or late = breached) and, when the
  policy says waiting on the customer pauses the clock, pauses *resolution*.
* ``ticket.reopened`` (the customer replied) resumes a paused *resolution* clock with the
  business time it had left. A *resolution* clock that had stopped (resolved, closed)
  **restarts from the reopen time with the full target**: the customer is owed a new
  resolution, and the earlier outcome was already reported by its own events.
* ``answer.submitted`` after a delivery (a follow-up answer, ANSWERED → AWAITING_REVIEW without a
  reopen) resumes a paused *resolution* clock too: the team is working on the ticket again, so
  the wait is no longer the customer's. The follow-up's delivery pauses it again.
* A clock whose due time cannot be worked out (its calendar no longer builds, or has no working
  time ahead) is left as it was and logged: the event's other use cases still run.
* ``ticket.resolved`` stops *resolution*, and *first response* too when no answer was delivered
  (a resolution is a response); ``ticket.closed`` stops whatever still runs.

Every change follows the lock order described in :mod:`routing_service.sla_repository`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from helpdesk_shared.chassis.logging import get_logger
from helpdesk_shared.chassis.problems import NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import Priority, SlaTarget
from helpdesk_shared.contracts.intake import (
    TicketAnswerDelivered,
    TicketClosed,
    TicketCreated,
    TicketReopened,
    TicketResolved,
)
from helpdesk_shared.contracts.review import AnswerSubmitted
from routing_service.domain.business_time import BusinessCalendar, BusinessTimeError, InvalidCalendarError
from routing_service.domain.sla import (
    SlaFacts,
    StopReason,
    is_difficult_at_intake,
    match_policy,
    plan,
    resolution_target,
    resume,
    timer_state,
)
from routing_service.models import SlaTimer
from routing_service.sla_repository import (
    SLA_CONFIG,
    START_TIMERS,
    PolicySnapshot,
    SlaConfig,
    SlaRepository,
    to_domain,
)
from routing_service.sla_schemas import TicketSlaOut, TimerOut

log = get_logger(__name__)


class TicketSlaNotFound(NotFound):
    slug, title = "ticket-sla-not-found", "No SLA clocks for this ticket"


@dataclass(frozen=True, slots=True)
class StartedTimers:
    """What the classification can announce in ``ticket.classified`` (its SLA fields)."""

    policy_id: uuid.UUID
    first_response_due_at: datetime
    resolution_due_at: datetime


async def start_timers(
    uow: UnitOfWork,
    ticket: TicketCreated,
    *,
    difficult: bool | None = None,
    priority: Priority | None = None,
) -> StartedTimers | None:
    """Start both clocks of a new ticket from the best matching active policy.

    **Does not commit**: the rows join the caller's unit of work, and the use case that follows
    in the same handler (``route_new_ticket``) commits them together with the assignment and
    the inbox row. ``difficult``/``priority`` default to what intake knows (a complaint or a VIP
    customer is difficult; intake's priority); the classification passes its own decision when
    it has one. Idempotent: calling again for the same ``ticket.created`` re-plans clocks that
    have not fired, paused or stopped from the new match (so a better-informed second call
    wins) and leaves every other clock alone. Returns ``None`` when no active policy matches or
    the calendar cannot produce a due time — logged as an error, but never a reason to keep the
    ticket from being assigned.
    """
    planned = await plan_timers(uow, ticket, difficult=difficult, priority=priority)
    if planned is None:
        return None
    rows, started = planned
    stored: dict[str, tuple[uuid.UUID, datetime]] = {
        row.target: (row.policy_id, row.due_at) for row in await uow.session.execute(START_TIMERS, rows)
    }
    if len(stored) < len(rows):  # a clock that already moved (a replay) keeps what it has
        stored = {
            t.target: (t.policy_id, t.due_at)
            for t in await SlaRepository(uow.session).timers(ticket.ticket_id)
        }
        return StartedTimers(
            policy_id=stored[SlaTarget.FIRST_RESPONSE][0],
            first_response_due_at=stored[SlaTarget.FIRST_RESPONSE][1],
            resolution_due_at=stored[SlaTarget.RESOLUTION][1],
        )
    return started


async def plan_timers(
    uow: UnitOfWork,
    ticket: TicketCreated,
    *,
    difficult: bool | None = None,
    priority: Priority | None = None,
) -> tuple[list[dict[str, Any]], StartedTimers] | None:
    """The rows of a new ticket's two clocks (for `START_TIMERS`) and what they announce, from
    the configuration snapshot — no query unless it is due for a reload; None when no active
    policy matches or the calendar cannot produce a due time (logged)."""
    if difficult is None:
        difficult = is_difficult_at_intake(ticket.kind, ticket.customer_vip)
    facts = SlaFacts(
        kind=ticket.kind, priority=priority or ticket.priority, difficult=difficult, channel=ticket.channel
    )
    config = await SLA_CONFIG.get(uow.session)
    chosen = match_policy(config.active, facts)
    if chosen is None:
        log.warning("sla_no_policy", ticket_id=str(ticket.ticket_id), facts=repr(facts))
        return None
    policy = config.policies[chosen.id]
    start = ticket.created_at
    try:
        calendar = await _calendar(SlaRepository(uow.session), policy.calendar_id, config)
        first = plan(calendar, start, _minutes(policy.first_response_minutes), policy.warning_share)
        resolution = plan(
            calendar, start, resolution_target(calendar, policy.resolution_working_days), policy.warning_share
        )
    except BusinessTimeError as exc:
        log.error(
            "sla_not_started", ticket_id=str(ticket.ticket_id), policy_id=str(policy.id), error=str(exc)
        )
        return None
    rows = [
        {
            "ticket_id": ticket.ticket_id,
            "target": target.value,
            "policy_id": policy.id,
            "calendar_id": policy.calendar_id,
            "priority": facts.priority.value,
            "started_at": start,
            "due_at": deadline.due_at,
            "warn_at": deadline.warn_at,
            "escalated": False,
        }
        for target, deadline in ((SlaTarget.FIRST_RESPONSE, first), (SlaTarget.RESOLUTION, resolution))
    ]
    started = StartedTimers(
        policy_id=policy.id, first_response_due_at=first.due_at, resolution_due_at=resolution.due_at
    )
    return rows, started


async def answer_delivered(uow: UnitOfWork, event: TicketAnswerDelivered) -> None:
    """Stop *first response*; pause *resolution* while waiting on the customer if the policy says so.

    Does not commit."""
    repo = SlaRepository(uow.session)
    for timer in await repo.lock_ticket_timers([event.ticket_id]):
        if timer.stopped_at is not None:
            continue
        if timer.target == SlaTarget.FIRST_RESPONSE:
            _stop(timer, event.delivered_at, "answered")
        elif timer.paused_at is None:
            policy = await _policy(repo, timer.policy_id)
            if policy is not None and policy.pause_when_waiting_on_customer:
                timer.paused_at = event.delivered_at
    await uow.flush()


async def answer_submitted(uow: UnitOfWork, event: AnswerSubmitted) -> None:
    """Resume a *resolution* clock paused by an earlier delivery: the team is at work again. Does not commit.

    A submission from before the pause (the answer whose delivery paused it, its event late) leaves
    the clock paused."""
    repo = SlaRepository(uow.session)
    for timer in await repo.lock_ticket_timers([event.ticket_id]):
        if (
            timer.target == SlaTarget.RESOLUTION
            and timer.stopped_at is None
            and timer.paused_at is not None
            and timer.paused_at <= event.submitted_at
        ):
            await _resume_logged(repo, timer, event.submitted_at)
    await uow.flush()


async def ticket_resolved(uow: UnitOfWork, event: TicketResolved) -> None:
    """Stop every running or paused clock as resolved. Does not commit."""
    await _stop_all(uow, event.ticket_id, event.resolved_at, "resolved")


async def ticket_closed(uow: UnitOfWork, event: TicketClosed) -> None:
    """Stop every running or paused clock as closed. Does not commit."""
    await _stop_all(uow, event.ticket_id, event.closed_at, "closed")


async def ticket_reopened(uow: UnitOfWork, event: TicketReopened) -> None:
    """Resume a paused *resolution* clock, or restart a stopped one with the full target. Does not commit."""
    repo = SlaRepository(uow.session)
    at = event.reopened_at
    for timer in await repo.lock_ticket_timers([event.ticket_id]):
        if timer.target != SlaTarget.RESOLUTION:
            continue
        if timer.stopped_at is not None:
            policy = await _policy(repo, timer.policy_id)
            if policy is None:
                continue
            try:
                calendar = await _calendar(repo, timer.calendar_id)
                target = resolution_target(calendar, policy.resolution_working_days)
                deadline = plan(calendar, at, target, policy.warning_share)
            except BusinessTimeError as exc:
                _log_kept(timer, "sla_not_restarted", exc)
                continue
            timer.started_at, timer.due_at, timer.warn_at = at, deadline.due_at, deadline.warn_at
            timer.paused_at = timer.stopped_at = timer.stopped_by = None
            timer.warned_at = timer.breached_at = None
            timer.escalated = False
        elif timer.paused_at is not None:
            await _resume_logged(repo, timer, at)
    await uow.flush()


async def ticket_sla(uow: UnitOfWork, ticket_id: uuid.UUID, *, now: datetime | None = None) -> TicketSlaOut:
    """The ticket's clocks with their state and the business minutes left."""
    repo = SlaRepository(uow.session)
    timers = await repo.timers(ticket_id)
    if not timers:
        raise TicketSlaNotFound(
            f"Ticket {ticket_id} has no SLA clocks (unknown ticket, or no policy matched)"
        )
    now = now or datetime.now(UTC)
    out = []
    for timer in timers:
        remaining: int | None = None
        if timer.stopped_at is None:
            try:
                calendar = await _calendar(repo, timer.calendar_id)
                remaining = calendar.business_minutes_between(timer.paused_at or now, timer.due_at)
            except BusinessTimeError as exc:  # the calendar stopped building: the rest still shows
                log.warning("sla_remaining_unknown", ticket_id=str(ticket_id), error=str(exc))
        out.append(
            TimerOut(
                target=SlaTarget(timer.target),
                state=timer_state(
                    now=now,
                    due_at=timer.due_at,
                    paused_at=timer.paused_at,
                    stopped_at=timer.stopped_at,
                    stopped_by=timer.stopped_by,
                    breached_at=timer.breached_at,
                ),
                policy_id=timer.policy_id,
                calendar_id=timer.calendar_id,
                started_at=timer.started_at,
                due_at=timer.due_at,
                warn_at=timer.warn_at,
                remaining_business_minutes=remaining,
                paused_at=timer.paused_at,
                stopped_at=timer.stopped_at,
                stopped_by=_stop_reason(timer.stopped_by),
                warned_at=timer.warned_at,
                breached_at=timer.breached_at,
                escalated=timer.escalated,
            )
        )
    return TicketSlaOut(ticket_id=ticket_id, priority=Priority(timers[0].priority), timers=out)


# ---- helpers ----------------------------------------------------------------------------------


async def _calendar(
    repo: SlaRepository, calendar_id: str, config: SlaConfig | None = None
) -> BusinessCalendar:
    """The calendar from the configuration snapshot; read from the database if the snapshot
    predates it (created on another replica a moment ago)."""
    config = config or await SLA_CONFIG.get(repo.session)
    if (calendar := config.calendars.get(calendar_id)) is not None:
        return calendar
    if (why := config.unusable.get(calendar_id)) is not None:  # known not to build: no query
        raise InvalidCalendarError(why)
    row = await repo.calendar(calendar_id)
    if row is None:  # a foreign key guards this; reaching it means the database was edited by hand
        raise LookupError(f"calendar {calendar_id!r} of an SLA policy or timer does not exist")
    return to_domain(row)


async def _policy(repo: SlaRepository, policy_id: uuid.UUID) -> PolicySnapshot | None:
    config = await SLA_CONFIG.get(repo.session)
    if (policy := config.policies.get(policy_id)) is not None:
        return policy
    row = await repo.policy(policy_id)
    return PolicySnapshot.of(row) if row is not None else None


def _minutes(minutes: int) -> timedelta:
    return timedelta(minutes=minutes)


def _resume(timer: SlaTimer, calendar: BusinessCalendar, at: datetime) -> None:
    paused_at = timer.paused_at
    if paused_at is None:
        return
    # Both worked out before either is set: a failure leaves the clock exactly as it was.
    due_at = resume(calendar, paused_at, at, timer.due_at)
    warn_at = resume(calendar, paused_at, at, timer.warn_at) if timer.warned_at is None else timer.warn_at
    timer.due_at, timer.warn_at, timer.paused_at = due_at, warn_at, None


async def _resume_logged(repo: SlaRepository, timer: SlaTimer, at: datetime) -> None:
    """`_resume`; a due time that cannot be worked out leaves the clock paused (logged), so that
    the event's other use cases (reassigning a reopened ticket) still run."""
    try:
        _resume(timer, await _calendar(repo, timer.calendar_id), at)
    except BusinessTimeError as exc:
        _log_kept(timer, "sla_not_resumed", exc)


def _log_kept(timer: SlaTimer, event: str, exc: BusinessTimeError) -> None:
    log.error(
        event,
        ticket_id=str(timer.ticket_id),
        target=timer.target,
        policy_id=str(timer.policy_id),
        calendar_id=timer.calendar_id,
        error=str(exc),
    )


def _stop(timer: SlaTimer, at: datetime, reason: StopReason) -> None:
    timer.stopped_at, timer.stopped_by = at, reason


async def _stop_all(uow: UnitOfWork, ticket_id: uuid.UUID, at: datetime, reason: StopReason) -> None:
    """A paused clock is first resumed at ``at`` so that the paused time never counts against it."""
    repo = SlaRepository(uow.session)
    for timer in await repo.lock_ticket_timers([ticket_id]):
        if timer.stopped_at is not None:
            continue
        if timer.paused_at is not None:  # not resumable: stopped as it was, the ticket still closes
            await _resume_logged(repo, timer, at)
        _stop(timer, at, reason)
    await uow.flush()


_STOP_REASONS: dict[str | None, StopReason] = {
    "answered": "answered",
    "resolved": "resolved",
    "closed": "closed",
}


def _stop_reason(value: str | None) -> StopReason | None:
    return _STOP_REASONS.get(value)
