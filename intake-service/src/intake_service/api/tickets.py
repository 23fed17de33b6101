"""Ticket endpoints for channel integrations and frontends."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.pagination import Page, PageParams, page_params
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Role, TicketStatus
from intake_service import service
from intake_service.schemas import TicketCreate, TicketOut
from intake_service.service import TicketNotFound

router = APIRouter(prefix="/v1/tickets", tags=["tickets"])

ChannelCaller = Annotated[Principal, Depends(require_roles(Role.CHANNEL))]
TicketReader = Annotated[
    Principal, Depends(require_roles(Role.CHANNEL, Role.AGENT, Role.REVIEWER, Role.LEAD))
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TicketOut,
    summary="Accept a ticket from a channel",
    responses=problem_responses(Unauthorized, Forbidden),
)
async def create_ticket(
    body: TicketCreate, uow: UoW, request: Request, response: Response, _: ChannelCaller
) -> TicketOut:
    ticket = await service.create_ticket(
        uow, body, number_prefix=request.app.state.settings.ticket_number_prefix
    )
    response.headers["Location"] = f"/v1/tickets/{ticket.id}"
    return ticket


@router.get(
    "/{ticket_id}",
    response_model=TicketOut,
    summary="A ticket as it stands now",
    responses=problem_responses(Unauthorized, Forbidden, TicketNotFound),
)
async def get_ticket(ticket_id: uuid.UUID, uow: UoW, _: TicketReader) -> TicketOut:
    return await service.get_ticket(uow, ticket_id)


@router.get(
    "",
    response_model=Page[TicketOut],
    summary="Tickets, newest first",
    responses=problem_responses(Unauthorized, Forbidden),
)
async def list_tickets(
    uow: UoW,
    _: TicketReader,
    page: Annotated[PageParams, Depends(page_params)],
    status_filter: Annotated[TicketStatus | None, Query(alias="status")] = None,
) -> Page[TicketOut]:
    items, cursor = await service.list_tickets(uow, page, status=status_filter)
    return Page[TicketOut](items=items, next_cursor=cursor)
