"""Authorised, audited transfers of tickets between agents."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, status

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.problems import Conflict, Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Role
from routing_service import transfers
from routing_service.transfers import (
    TargetNotQualified,
    TargetUnavailable,
    TicketNotAssigned,
    TransferOut,
    TransferRequest,
    UnknownTargetAgent,
)

router = APIRouter(prefix="/v1/tickets", tags=["transfers"])

Worker = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.LEAD))]


@router.post(
    "/{ticket_id}/transfer",
    status_code=status.HTTP_201_CREATED,
    response_model=TransferOut,
    summary="Transfer a ticket (the current assignee, a lead of its team or domain, or an admin) to an "
    "online agent who can work it, with a free slot unless the ticket is answered (it takes none while "
    "it waits for its customer); a reason is required; audited",
    responses=problem_responses(
        Unauthorized,
        TargetNotQualified,
        Forbidden,
        TicketNotAssigned,
        UnknownTargetAgent,
        TargetUnavailable,
        Conflict,
    ),
)
async def transfer(ticket_id: uuid.UUID, body: TransferRequest, uow: UoW, principal: Worker) -> TransferOut:
    return await transfers.transfer(uow, ticket_id, body, principal)
