"""Firing SLA clocks: warnings at ``warn_at``, breaches a grace after ``due_at``, each exactly once.

The grace (``ROUTING_SLA_BREACH_GRACE_SECONDS``, 5 s) is for the answer delivered just before its
due time whose ``ticket.answer_delivered`` reaches routing just after: without it, a clock met in
time would breach and escalate the ticket. Warnings need none (an early warning costs nothing).

Due times are stored in the database, so nothing is lost when a replica stops: whichever replica
looks next fires what is due. A pass claims tickets by locking their ``first_response`` timer
row with ``FOR UPDATE SKIP LOCKED`` (replicas never wait on or double-fire each other's tickets,
see the lock order in :mod:`routing_service.sla_repository`), re-reads every clock of the claimed
tickets under the lock, and in the same transaction marks ``warned_at``/``breached_at`` and writes
the events to the outbox. A pass that fails rolls back whole: nothing is marked, nothing is sent,
and the next pass tries again. Each warning or breach fired starts a trace of its own: its events'
``traceparent`` (no request or event caused it).

A breach escalates the ticket (高層/主管): its priority goes up one step (the queue entry too, so a
waiting ticket is served sooner), and ``ticket.escalated`` names the assignee's team lead as
watcher when routing knows one. A clock found past its due time before its warning fired (the
service was down through both) only breaches: a warning after the breach would tell nobody
anything.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from prometheus_client import Counter
from sqlalchemy import update

from helpdesk_shared.chassis.app import ServiceRuntime
from helpdesk_shared.chassis.logging import get_logger, traced
from helpdesk_shared.chassis.trace_context import new_traceparent
from helpdesk_shared.chassis.uow import UnitOfWork, UnitOfWorkFactory
from helpdesk_shared.contracts.enums import EscalationReason, Priority, SlaTarget
from helpdesk_shared.contracts.routing import SlaBreached, SlaWarning, TicketEscalated
from routing_service.domain.sla import raise_priority
from routing_service.models import QueueEntry, SlaPolicy, SlaTimer
from routing_service.settings import SLA_BREACH_GRACE_SECONDS, RoutingSettings
from routing_service.sla_repository import SlaRepository

log = get_logger(__name__)

SLA_FIRED = Counter("helpdesk_sla_fired_total", "SLA warnings and breaches fired", ["kind", "target"])


Owner = tuple[uuid.UUID | None, uuid.UUID | None, uuid.UUID | None]
"""(assignee, the assignee's team, that team's lead), each ``None`` when routing does not know it."""


class Fired(NamedTuple):
    claimed: int
    """Tickets whose clocks this pass locked and looked at."""
    warnings: int
    breaches: int


def _running(timer: SlaTimer) -> bool:
    return timer.stopped_at is None and timer.paused_at is None and timer.breached_at is None


async def fire_due(
    uow_factory: UnitOfWorkFactory,
    *,
    now: datetime | None = None,
    batch: int = 100,
    grace: timedelta = timedelta(seconds=SLA_BREACH_GRACE_SECONDS),
) -> Fired:
    """One pass: fire what is due by ``now`` (default: the current time) for up to ``batch`` tickets;
    a clock breaches once ``now`` is ``grace`` past its due time."""
    now = now or datetime.now(UTC)
    async with uow_factory() as uow:
        repo = SlaRepository(uow.session)
        claimed = await repo.claim_due_tickets(await repo.due_ticket_ids(now, batch, breach_grace=grace))
        if not claimed:
            return Fired(0, 0, 0)
        by_ticket: dict[uuid.UUID, list[SlaTimer]] = defaultdict(list)
        for timer in await repo.lock_ticket_timers(claimed):
            by_ticket[timer.ticket_id].append(timer)
        fired: list[tuple[str, str]] = []
        for ticket_id, timers in by_ticket.items():
            owner = await repo.owner(ticket_id)
            for timer in timers:
                # A clock firing is caused by no request or event: each one fired is a trace of
                # its own (a breach's `sla.breached` and `ticket.escalated` share it).
                if _running(timer) and timer.due_at + grace <= now:
                    with traced(new_traceparent()):
                        await _breach(uow, timer, timers, owner, now)
                    fired.append(("breach", timer.target))
                elif _running(timer) and timer.warned_at is None and timer.warn_at <= now:
                    with traced(new_traceparent()):
                        await _warn(uow, timer, owner, now)
                    fired.append(("warning", timer.target))
        await uow.commit()
    for kind, target in fired:
        SLA_FIRED.labels(kind, target).inc()
    warnings = sum(kind == "warning" for kind, _ in fired)
    breaches = len(fired) - warnings
    if fired:
        log.info("sla_fired", tickets=len(claimed), warnings=warnings, breaches=breaches)
    return Fired(len(claimed), warnings, breaches)


async def _warn(uow: UnitOfWork, timer: SlaTimer, owner: Owner, now: datetime) -> None:
    policy = await uow.session.get_one(SlaPolicy, timer.policy_id)
    agent_id, team_id, _ = owner
    timer.warned_at = now
    uow.publish(
        SlaWarning(
            ticket_id=timer.ticket_id,
            policy_id=timer.policy_id,
            target=SlaTarget(timer.target),
            share=policy.warning_share,
            due_at=timer.due_at,
            agent_id=agent_id,
            team_id=team_id,
            priority=Priority(timer.priority),
            warned_at=now,
        ),
        subject=str(timer.ticket_id),
    )


async def _breach(
    uow: UnitOfWork, timer: SlaTimer, siblings: list[SlaTimer], owner: Owner, now: datetime
) -> None:
    agent_id, team_id, lead_id = owner
    previous = Priority(timer.priority)
    raised = raise_priority(previous)
    timer.breached_at, timer.escalated = now, True
    for sibling in siblings:  # the ticket's priority, as SLAs know it, lives on each of its clocks
        sibling.priority = raised
    if raised != previous:
        await uow.session.execute(
            update(QueueEntry)
            .where(QueueEntry.ticket_id == timer.ticket_id, QueueEntry.priority_rank < raised.rank)
            .values(priority=raised, priority_rank=raised.rank)
        )
    target = SlaTarget(timer.target)
    uow.publish(
        SlaBreached(
            ticket_id=timer.ticket_id,
            policy_id=timer.policy_id,
            target=target,
            due_at=timer.due_at,
            agent_id=agent_id,
            team_id=team_id,
            priority=previous,
            breached_at=now,
        ),
        subject=str(timer.ticket_id),
    )
    uow.publish(
        TicketEscalated(
            ticket_id=timer.ticket_id,
            reason=EscalationReason.SLA_BREACH,
            sla_target=target,
            previous_priority=previous,
            priority=raised,
            lead_id=lead_id,
            agent_id=agent_id,
            team_id=team_id,
            escalated_at=now,
        ),
        subject=str(timer.ticket_id),
    )


async def sla_timer_worker(runtime: ServiceRuntime) -> None:
    """Background task of the routing service: a pass every ``sla_poll_seconds``, at once while busy.

    The first pass waits until the consumer has handled the events that were waiting for it
    (up to ``sla_start_wait_seconds``): after a restart, answers delivered and tickets resolved
    while routing was away are still in Kafka, and their clocks, running here until those
    events stop them, would breach and escalate tickets that were answered in time.
    """
    settings = runtime.settings
    assert isinstance(settings, RoutingSettings)
    grace = timedelta(seconds=settings.sla_breach_grace_seconds)
    if runtime.consumer is not None:
        try:
            await asyncio.wait_for(runtime.consumer.caught_up.wait(), settings.sla_start_wait_seconds)
        except TimeoutError:
            log.warning("sla_started_behind", waited_seconds=settings.sla_start_wait_seconds)
    while True:
        try:
            fired = await fire_due(runtime.uow, batch=settings.sla_batch_size, grace=grace)
            if fired.claimed >= settings.sla_batch_size:
                continue
        except Exception as exc:  # a database hiccup must not stop the clocks for good
            log.warning("sla_pass_failed", error=repr(exc))
        await asyncio.sleep(settings.sla_poll_seconds)
