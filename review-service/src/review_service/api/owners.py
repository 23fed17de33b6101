"""Who may draft the answers of a ticket: its owner and collaborators (mirrored from routing)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Role
from review_service import service
from review_service.service import TicketOwnerUnknown

router = APIRouter(prefix="/v1/tickets", tags=["answer drafting"])

Staff = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.REVIEWER, Role.LEAD))]


class TicketOwnerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ticket_id: uuid.UUID
    agent_id: uuid.UUID
    assigned_at: datetime
    collaborator_ids: list[uuid.UUID] = Field(
        default_factory=list,
        description="Agents besides the owner who may draft answers (added by a lead), in the order added",
    )


@router.get(
    "/{ticket_id}/owner",
    response_model=TicketOwnerOut,
    summary="Who may draft the ticket's answers: its owner and its collaborators",
    responses=problem_responses(Unauthorized, Forbidden, TicketOwnerUnknown),
)
async def ticket_owner(ticket_id: uuid.UUID, uow: UoW, _: Staff) -> TicketOwnerOut:
    return TicketOwnerOut.model_validate(await service.owner_of(uow, ticket_id))
