"""Complaint case files (投訴處理)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Role
from intake_service import complaints
from intake_service.complaints import CaseArchived, CaseResultMissing, CaseTicketOpen, NotAComplaint
from intake_service.repository import TicketNotFound
from intake_service.schemas import ComplaintCaseOut, ComplaintCaseUpdate, ComplaintNote

router = APIRouter(prefix="/v1/tickets/{ticket_id}/complaint", tags=["complaints"])

Staff = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.REVIEWER, Role.LEAD))]
Handler = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.LEAD))]
Lead = Annotated[Principal, Depends(require_roles(Role.LEAD))]
_ERRORS = (Unauthorized, Forbidden, TicketNotFound, NotAComplaint)


@router.get("", response_model=ComplaintCaseOut, responses=problem_responses(*_ERRORS))
async def get_case(ticket_id: uuid.UUID, uow: UoW, _: Staff) -> ComplaintCaseOut:
    return await complaints.get_case(uow, ticket_id)


@router.patch(
    "",
    response_model=ComplaintCaseOut,
    responses=problem_responses(*_ERRORS, CaseArchived, CaseTicketOpen, CaseResultMissing),
    summary="Responsibility, plan and deadline, result, root cause, archive (leads)",
    description="Archiving needs the ticket resolved or closed and a result recorded; a complaint's "
    "ticket is closed only once its case file is archived.",
)
async def update_case(
    ticket_id: uuid.UUID, body: ComplaintCaseUpdate, uow: UoW, principal: Lead
) -> ComplaintCaseOut:
    return await complaints.update_case(uow, ticket_id, body, principal)


@router.post(
    "/notes",
    response_model=ComplaintCaseOut,
    responses=problem_responses(*_ERRORS, CaseArchived),
    summary="A progress note (shown in the ticket's timeline)",
)
async def add_note(
    ticket_id: uuid.UUID, body: ComplaintNote, uow: UoW, principal: Handler
) -> ComplaintCaseOut:
    return await complaints.add_progress_note(uow, ticket_id, body, principal)
