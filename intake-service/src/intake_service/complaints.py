"""Complaint case files (投訴處理): responsibility, plan and deadline, progress, result, root cause.

A complaint ticket gets its case file when it is created; every change is kept in
the ticket's timeline and announced as `complaint.updated` for metrics' complaint
statistics. An archived case file is read-only.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from helpdesk_shared.chassis.auth import Principal
from helpdesk_shared.chassis.problems import Conflict
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import ComplaintChange, TicketKind
from helpdesk_shared.contracts.intake import ComplaintUpdated
from intake_service.models import ComplaintCase
from intake_service.repository import TicketRepository, load_ticket
from intake_service.schemas import ComplaintCaseOut, ComplaintCaseUpdate, ComplaintNote

# The first field group that changed names the change (most significant first).
_CHANGE_OF_FIELD: tuple[tuple[str, ComplaintChange], ...] = (
    ("archived", ComplaintChange.ARCHIVED),
    ("result", ComplaintChange.RESULT_RECORDED),
    ("root_cause", ComplaintChange.ROOT_CAUSE_RECORDED),
    ("corrective_action", ComplaintChange.ROOT_CAUSE_RECORDED),
    ("responsible_department", ComplaintChange.RESPONSIBILITY_ASSIGNED),
    ("responsible_person_id", ComplaintChange.RESPONSIBILITY_ASSIGNED),
    ("plan", ComplaintChange.PLAN_UPDATED),
    ("deadline", ComplaintChange.PLAN_UPDATED),
)


class NotAComplaint(Conflict):
    slug, title = "not-a-complaint", "The ticket is not a complaint"


class CaseArchived(Conflict):
    slug, title = "complaint-archived", "The complaint case file is archived"


async def _case(uow: UnitOfWork, ticket_id: uuid.UUID, *, for_update: bool = False) -> ComplaintCase:
    ticket = await load_ticket(uow, ticket_id)
    if ticket.kind != TicketKind.COMPLAINT:
        raise NotAComplaint(f"Ticket {ticket.number} is a {ticket.kind}, not a complaint")
    case = await uow.session.get(ComplaintCase, ticket_id, with_for_update=for_update)
    if case is None:  # complaint tickets created before case files existed
        case = ComplaintCase(ticket_id=ticket_id, archived=False, updated_at=datetime.now(UTC))
        uow.session.add(case)
    return case


def _event(
    case: ComplaintCase, change: ComplaintChange, principal: Principal, now: datetime, note: str | None = None
) -> ComplaintUpdated:
    return ComplaintUpdated(
        ticket_id=case.ticket_id,
        change=change,
        responsible_department=case.responsible_department,
        responsible_person_id=case.responsible_person_id,
        plan=case.plan,
        deadline=case.deadline,
        progress_note=note,
        result=case.result,
        root_cause=case.root_cause,
        corrective_action=case.corrective_action,
        archived=case.archived,
        updated_by=principal.user_id,
        updated_at=now,
    )


async def get_case(uow: UnitOfWork, ticket_id: uuid.UUID) -> ComplaintCaseOut:
    return ComplaintCaseOut.model_validate(await _case(uow, ticket_id))


async def update_case(
    uow: UnitOfWork, ticket_id: uuid.UUID, body: ComplaintCaseUpdate, principal: Principal
) -> ComplaintCaseOut:
    case = await _case(uow, ticket_id, for_update=True)
    if case.archived:
        raise CaseArchived("Archived case files cannot change")
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if getattr(case, k) != v}
    if not changes:
        return ComplaintCaseOut.model_validate(case)
    now = datetime.now(UTC)
    for field, value in changes.items():
        setattr(case, field, value)
    case.updated_at = now
    change = next(kind for field, kind in _CHANGE_OF_FIELD if field in changes)
    await TicketRepository(uow.session).add_timeline(
        ticket_id, "complaint", at=now, actor=principal.subject, change=change, fields=sorted(changes)
    )
    uow.publish(_event(case, change, principal, now), subject=str(ticket_id))
    out = ComplaintCaseOut.model_validate(case)
    await uow.commit()
    return out


async def add_progress_note(
    uow: UnitOfWork, ticket_id: uuid.UUID, body: ComplaintNote, principal: Principal
) -> ComplaintCaseOut:
    case = await _case(uow, ticket_id, for_update=True)
    if case.archived:
        raise CaseArchived("Archived case files cannot change")
    now = datetime.now(UTC)
    case.updated_at = now
    await TicketRepository(uow.session).add_timeline(
        ticket_id,
        "complaint",
        at=now,
        actor=principal.subject,
        change=ComplaintChange.PROGRESS_NOTED,
        note=body.note,
    )
    uow.publish(
        _event(case, ComplaintChange.PROGRESS_NOTED, principal, now, note=body.note), subject=str(ticket_id)
    )
    out = ComplaintCaseOut.model_validate(case)
    await uow.commit()
    return out
