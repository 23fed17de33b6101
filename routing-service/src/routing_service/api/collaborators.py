"""A ticket's collaborators: agents a lead adds besides the assignee (they may draft answers)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Role
from routing_service import collaborators
from routing_service.collaborators import (
    CollaboratorIsAssignee,
    CollaboratorsOut,
    TicketNotAssigned,
    TicketUnknown,
    TooManyCollaborators,
    UnknownCollaborator,
)

router = APIRouter(prefix="/v1/tickets", tags=["collaborators"])

Manager = Annotated[Principal, Depends(require_roles(Role.LEAD))]
Staff = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.REVIEWER, Role.LEAD, Role.OPS))]


@router.get(
    "/{ticket_id}/collaborators",
    response_model=CollaboratorsOut,
    summary="The ticket's assignee and collaborators",
    responses=problem_responses(Unauthorized, Forbidden, TicketUnknown),
)
async def list_collaborators(ticket_id: uuid.UUID, uow: UoW, _: Staff) -> CollaboratorsOut:
    return await collaborators.collaborators_of(uow, ticket_id)


@router.put(
    "/{ticket_id}/collaborators/{agent_id}",
    response_model=CollaboratorsOut,
    summary="Add a collaborator (an admin, or the lead of the assignee's team or of the ticket's domain "
    "team; idempotent; announced as ticket.collaborators_changed)",
    responses=problem_responses(
        Unauthorized,
        Forbidden,
        TicketNotAssigned,
        UnknownCollaborator,
        CollaboratorIsAssignee,
        TooManyCollaborators,
    ),
)
async def add_collaborator(
    ticket_id: uuid.UUID, agent_id: uuid.UUID, uow: UoW, principal: Manager
) -> CollaboratorsOut:
    return await collaborators.add(uow, ticket_id, agent_id, principal)


@router.delete(
    "/{ticket_id}/collaborators/{agent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a collaborator (an admin, or the lead of the assignee's team or of the ticket's domain "
    "team; idempotent; announced as ticket.collaborators_changed)",
    responses=problem_responses(Unauthorized, Forbidden, TicketNotAssigned),
)
async def remove_collaborator(
    ticket_id: uuid.UUID, agent_id: uuid.UUID, uow: UoW, principal: Manager
) -> Response:
    await collaborators.remove(uow, ticket_id, agent_id, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
