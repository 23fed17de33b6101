"""Auto-close: tickets answered or resolved N days ago, with no customer reply since, are closed.

A worker on every replica claims due tickets with `FOR UPDATE SKIP LOCKED`, so replicas share
the work and never close one ticket twice; each batch closes, notes on the timeline and emits
`ticket.closed` (reason `auto_no_reply`, closed by the system) in one transaction. No request or
event causes a closing, so each ticket closed starts a trace of its own (its event's `traceparent`).

Due means: answered or resolved since before the cut-off (`status_changed_at`), no answer
delivered since the cut-off (a later supplementary answer keeps the ticket answered without a
status change, and restarts the customer's N days), and no customer message since the status
change (such a message reopens the ticket, so this only guards against a path that forgot to).
An answered ticket is also not due while the customer wrote after the newest delivered answer was
*written* (`followups`: a follow-up sent while the answer was in review, which the answer never
addressed; its delivery now leaves such a ticket reopened, so this guards older rows). A
resolution is staff's own answer to everything written before it: a resolved ticket counts from
the resolution.
A complaint whose case file is not archived is never due: closed, it would take no more messages
from the customer while the complaint is still being handled (manual closing refuses it too).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, exists, func, select

from helpdesk_shared.chassis.app import ServiceRuntime
from helpdesk_shared.chassis.logging import get_logger, traced
from helpdesk_shared.chassis.trace_context import new_traceparent
from helpdesk_shared.chassis.uow import UnitOfWorkFactory
from helpdesk_shared.contracts.enums import TicketStatus
from intake_service import workflow
from intake_service.followups import last_answer_written
from intake_service.models import ComplaintCase, Delivery, Message, Ticket
from intake_service.settings import IntakeSettings

log = get_logger(__name__)

BATCH = 50
AUTO_CLOSABLE = (TicketStatus.ANSWERED, TicketStatus.RESOLVED)

# A customer message after this moment has not been answered (LEAST ignores a NULL).
_ANSWERED_UP_TO = case(
    (
        Ticket.status == TicketStatus.ANSWERED,
        func.least(Ticket.status_changed_at, last_answer_written(Ticket.id)),
    ),
    else_=Ticket.status_changed_at,
)


async def close_idle(uow_factory: UnitOfWorkFactory, *, after_days: int, batch: int = BATCH) -> int:
    """One pass: close up to `batch` due tickets; returns how many (0 when `after_days` is 0)."""
    if after_days <= 0:
        return 0
    now = datetime.now(UTC)
    cutoff = now - timedelta(days=after_days)
    async with uow_factory() as uow:
        due = (
            await uow.session.scalars(
                select(Ticket)
                .where(
                    Ticket.status.in_(AUTO_CLOSABLE),
                    Ticket.status_changed_at < cutoff,
                    ~exists().where(Delivery.ticket_id == Ticket.id, Delivery.delivered_at >= cutoff),
                    ~exists().where(
                        Message.ticket_id == Ticket.id,
                        Message.direction == "inbound",
                        Message.created_at > _ANSWERED_UP_TO,
                    ),
                    ~exists().where(ComplaintCase.ticket_id == Ticket.id, ComplaintCase.archived.is_(False)),
                )
                .order_by(Ticket.status_changed_at)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for ticket in due:
            # Nothing a trace could continue caused this (no request, no event): each ticket
            # closed is a trace of its own, carried by its `ticket.closed`.
            with traced(new_traceparent()):
                await workflow.close_for_inactivity(uow, ticket, at=now, after_days=after_days)
        await uow.commit()
    if due:
        log.info("tickets_auto_closed", count=len(due), after_days=after_days)
    return len(due)


async def auto_close_worker(runtime: ServiceRuntime) -> None:
    """Background task of the intake service; returns at once when auto-close is off."""
    settings = runtime.settings
    assert isinstance(settings, IntakeSettings)
    if settings.auto_close_after_days == 0:
        log.info("auto_close_disabled")
        return
    while True:
        try:
            if await close_idle(runtime.uow, after_days=settings.auto_close_after_days) == BATCH:
                continue
        except Exception as exc:  # a database hiccup must not end auto-close for good
            log.warning("auto_close_pass_failed", error=repr(exc))
        await asyncio.sleep(settings.auto_close_poll_seconds)
