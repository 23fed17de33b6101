"""Satisfaction surveys: the link for the customer, and the customer's answer."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Role
from intake_service import feedback
from intake_service.feedback import AlreadyRated, InvalidSurveyToken, NotRateable
from intake_service.repository import TicketNotFound
from intake_service.schemas import RatingCreate, RatingOut, SurveyLink

router = APIRouter(prefix="/v1/tickets", tags=["satisfaction"])

# The token is the customer's credential: staff who could mint one could rate their own work
# (CSAT feeds the scorecards), so only the integration that sends it to the customer (and admins).
Sender = Annotated[Principal, Depends(require_roles(Role.CHANNEL))]


@router.get(
    "/{ticket_id}/survey-link",
    response_model=SurveyLink,
    responses=problem_responses(Unauthorized, Forbidden, TicketNotFound, NotRateable),
    summary="A signed, expiring satisfaction-survey link for the customer (channel integrations, admins)",
)
async def survey_link(ticket_id: uuid.UUID, uow: UoW, request: Request, _: Sender) -> SurveyLink:
    return await feedback.survey_link(uow, ticket_id, request.app.state.settings)


@router.post(
    "/{ticket_id}/satisfaction",
    status_code=status.HTTP_201_CREATED,
    response_model=RatingOut,
    responses=problem_responses(InvalidSurveyToken, TicketNotFound, AlreadyRated),
    summary="The customer's rating (1–5) of a resolution; the survey token authenticates",
)
async def rate(ticket_id: uuid.UUID, body: RatingCreate, uow: UoW, request: Request) -> RatingOut:
    return await feedback.rate(uow, ticket_id, body, request.app.state.settings)
