"""Complaint case files (投訴處理): responsibility, plan and deadline, progress, result, root cause.

A complaint ticket gets its case file when it is created; every change is kept in
the ticket's timeline and announced as `complaint.updated` for metrics' complaint
statistics. An archived case file is read-only.

A case file is archived once the complaint is dealt with: its ticket resolved or closed and a
result recorded. Until then the ticket is not closed (see `workflow.close` and auto-close), so
the customer can still answer.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from helpdesk_shared.chassis.auth import Principal
from helpdesk_shared.chassis.problems import Conflict
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import ComplaintChange, TicketKind, TicketStatus
from helpdesk_shared.contracts.intake import ComplaintUpdated
from intake_service.domain.privacy import field_max_length, redact_to_fit
from intake_service.models import ComplaintCase, Customer, Ticket
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


class CaseTicketOpen(Conflict):
    slug, title = "complaint-ticket-open", "The complaint's ticket must be resolved or closed first"


class CaseResultMissing(Conflict):
    slug, title = "complaint-result-missing", "A complaint case file needs a result before it is archived"


_ARCHIVABLE_WITH = frozenset({TicketStatus.RESOLVED, TicketStatus.CLOSED})
# Staff write these freely and may copy the customer's contacts into them; the event's copy is
# redacted (and cut to the field, as redaction can lengthen it), the case file keeps the original.
_STAFF_TEXT = ("plan", "progress_note", "result", "root_cause", "corrective_action")
_STAFF_TEXT_LIMIT = {field: field_max_length(ComplaintUpdated, field) for field in _STAFF_TEXT}


async def _case(
    uow: UnitOfWork, ticket_id: uuid.UUID, *, for_update: bool = False
) -> tuple[Ticket, ComplaintCase]:
    """The ticket and its case file; for an update both are locked (the ticket first, as closing
    does), so archiving sees the ticket's status as it stays until the commit."""
    ticket = await load_ticket(uow, ticket_id, for_update=for_update)
    if ticket.kind != TicketKind.COMPLAINT:
        raise NotAComplaint(f"Ticket {ticket.number} is a {ticket.kind}, not a complaint")
    case = await uow.session.get(ComplaintCase, ticket_id, with_for_update=for_update)
    if case is None:  # complaint tickets created before case files existed
        case = ComplaintCase(ticket_id=ticket_id, archived=False, updated_at=datetime.now(UTC))
        uow.session.add(case)
    return ticket, case


def _redacted(text: str | None, field: str, customer: Customer) -> str | None:
    if text is None:
        return None
    return redact_to_fit(text, _STAFF_TEXT_LIMIT[field], customer.email, customer.phone)


async def _event(
    uow: UnitOfWork,
    ticket: Ticket,
    case: ComplaintCase,
    change: ComplaintChange,
    principal: Principal,
    now: datetime,
    note: str | None = None,
) -> ComplaintUpdated:
    customer = await uow.session.get_one(Customer, ticket.customer_id)
    return ComplaintUpdated(
        ticket_id=case.ticket_id,
        change=change,
        responsible_department=case.responsible_department,
        responsible_person_id=case.responsible_person_id,
        plan=_redacted(case.plan, "plan", customer),
        deadline=case.deadline,
        progress_note=_redacted(note, "progress_note", customer),
        result=_redacted(case.result, "result", customer),
        root_cause=_redacted(case.root_cause, "root_cause", customer),
        corrective_action=_redacted(case.corrective_action, "corrective_action", customer),
        archived=case.archived,
        updated_by=principal.user_id,
        updated_at=now,
    )


def _check_archivable(ticket: Ticket, result: str | None) -> None:
    if TicketStatus(ticket.status) not in _ARCHIVABLE_WITH:
        raise CaseTicketOpen(
            f"Ticket {ticket.number} is {ticket.status}; archive its case file once it is resolved or closed",
            current_status=TicketStatus(ticket.status).value,
        )
    if result is None or not result.strip():
        raise CaseResultMissing("Record the result communicated to the customer before archiving")


async def get_case(uow: UnitOfWork, ticket_id: uuid.UUID) -> ComplaintCaseOut:
    _, case = await _case(uow, ticket_id)
    return ComplaintCaseOut.model_validate(case)


async def update_case(
    uow: UnitOfWork, ticket_id: uuid.UUID, body: ComplaintCaseUpdate, principal: Principal
) -> ComplaintCaseOut:
    ticket, case = await _case(uow, ticket_id, for_update=True)
    if case.archived:
        raise CaseArchived("Archived case files cannot change")
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if getattr(case, k) != v}
    if not changes:
        return ComplaintCaseOut.model_validate(case)
    if changes.get("archived"):
        _check_archivable(ticket, changes.get("result", case.result))
    now = datetime.now(UTC)
    for field, value in changes.items():
        setattr(case, field, value)
    case.updated_at = now
    change = next(kind for field, kind in _CHANGE_OF_FIELD if field in changes)
    await TicketRepository(uow.session).add_timeline(
        ticket_id, "complaint", at=now, actor=principal.subject, change=change, fields=sorted(changes)
    )
    uow.publish(await _event(uow, ticket, case, change, principal, now), subject=str(ticket_id))
    out = ComplaintCaseOut.model_validate(case)
    await uow.commit()
    return out


async def add_progress_note(
    uow: UnitOfWork, ticket_id: uuid.UUID, body: ComplaintNote, principal: Principal
) -> ComplaintCaseOut:
    ticket, case = await _case(uow, ticket_id, for_update=True)
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
        await _event(uow, ticket, case, ComplaintChange.PROGRESS_NOTED, principal, now, note=body.note),
        subject=str(ticket_id),
    )
    out = ComplaintCaseOut.model_validate(case)
    await uow.commit()
    return out
