"""FAQ candidates promoted from approved answers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.pagination import InvalidCursor, Page, PageParams, page_params
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Role
from kb_service import service

router = APIRouter(prefix="/v1/kb", tags=["faq"])

Editor = Annotated[Principal, Depends(require_roles(Role.KB_EDITOR, Role.LEAD))]


class FaqCandidateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    answer_id: uuid.UUID
    answer_version: int
    ticket_id: uuid.UUID
    domain: str | None
    question: str | None
    body: str
    status: str
    approved_at: datetime


@router.get(
    "/faq-candidates",
    response_model=Page[FaqCandidateOut],
    summary="Approved answers proposed as FAQ, newest first",
    responses=problem_responses(Unauthorized, Forbidden, InvalidCursor),
)
async def faq_candidates(
    uow: UoW, _: Editor, page: Annotated[PageParams, Depends(page_params)]
) -> Page[FaqCandidateOut]:
    rows, cursor = await service.faq_candidates(uow, page)
    return Page[FaqCandidateOut](items=[FaqCandidateOut.model_validate(c) for c in rows], next_cursor=cursor)
