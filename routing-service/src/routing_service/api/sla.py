"""SLA API: business calendars (with a due-time preview), policies, and a ticket's clocks.

Reading is open to agents, leads and ops (and admins); changing calendars and policies is for
leads and admins, and an edit reaches every replica's new tickets within
``ROUTING_CONFIG_CACHE_SECONDS`` (see :mod:`routing_service.config_cache`). Every error is
problem+json: unknown ids → 404, inconsistent calendars and impossible arithmetic (including a
policy whose targets have no due time on its calendar) → 422, duplicate ids or names → 409.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Role
from routing_service import sla, sla_admin
from routing_service.sla_admin import (
    CalendarExists,
    CalendarNotFound,
    InvalidBusinessTime,
    InvalidCalendar,
    PolicyExists,
    PolicyNotFound,
    UnknownCalendar,
)
from routing_service.sla_schemas import (
    MAX_FIRST_RESPONSE_MINUTES,
    MAX_RESOLUTION_WORKING_DAYS,
    CalendarCreate,
    CalendarOut,
    CalendarUpdate,
    DueOut,
    PolicyCreate,
    PolicyOut,
    PolicyUpdate,
    TicketSlaOut,
)

router = APIRouter(prefix="/v1", tags=["SLA"])

Manager = Annotated[Principal, Depends(require_roles(Role.LEAD))]
Reader = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.LEAD, Role.OPS))]
CalendarPath = Annotated[str, Path(max_length=64, description='Calendar id, e.g. "cn-default"')]
_AUTH = (Unauthorized, Forbidden)
# A "+" sent unencoded in a query string arrives as a space: "…T16:00:00 08:00" means "+08:00".
_SPACE_OFFSET = re.compile(r" (\d{2}(?::?\d{2})?)$")
IN_FORCE = (
    "New tickets get the change at once on the replica that saved it and at most "
    "`ROUTING_CONFIG_CACHE_SECONDS` (2 s by default) later on every other routing replica, which "
    "keep policies and calendars in memory for that long. Clocks already running keep their due times."
)


def _parse_start(raw: str) -> datetime:
    try:
        return datetime.fromisoformat(_SPACE_OFFSET.sub(r"+\1", raw.strip()))
    except ValueError as exc:
        raise InvalidBusinessTime(
            f"start must be an ISO 8601 date-time with a UTC offset, got {raw!r}", field="query.start"
        ) from exc


@router.post(
    "/sla/calendars",
    status_code=status.HTTP_201_CREATED,
    response_model=CalendarOut,
    responses=problem_responses(*_AUTH, InvalidCalendar, CalendarExists),
    description=IN_FORCE,
)
async def create_calendar(body: CalendarCreate, uow: UoW, _: Manager) -> CalendarOut:
    return await sla_admin.create_calendar(uow, body)


@router.get("/sla/calendars", response_model=list[CalendarOut], responses=problem_responses(*_AUTH))
async def list_calendars(uow: UoW, _: Reader) -> list[CalendarOut]:
    return await sla_admin.list_calendars(uow)


@router.get(
    "/sla/calendars/{calendar_id}",
    response_model=CalendarOut,
    responses=problem_responses(*_AUTH, CalendarNotFound),
)
async def get_calendar(calendar_id: CalendarPath, uow: UoW, _: Reader) -> CalendarOut:
    return await sla_admin.get_calendar(uow, calendar_id)


@router.put(
    "/sla/calendars/{calendar_id}",
    response_model=CalendarOut,
    responses=problem_responses(*_AUTH, CalendarNotFound, InvalidCalendar, InvalidBusinessTime),
    description=IN_FORCE,
)
async def update_calendar(
    calendar_id: CalendarPath, body: CalendarUpdate, uow: UoW, _: Manager
) -> CalendarOut:
    return await sla_admin.update_calendar(uow, calendar_id, body)


@router.get(
    "/sla/calendars/{calendar_id}/due",
    response_model=DueOut,
    summary="Preview SLA arithmetic: when does business time started at `start` run out?",
    responses=problem_responses(*_AUTH, CalendarNotFound, InvalidBusinessTime, InvalidCalendar),
)
async def preview_due(
    calendar_id: CalendarPath,
    uow: UoW,
    _: Reader,
    start: Annotated[
        str,
        Query(
            max_length=64,
            description="ISO 8601 with a UTC offset, e.g. 2026-09-30T16:00:00+08:00 (encode '+' as %2B)",
        ),
    ],
    # Up to the longest policy targets: a walk over years of calendar days runs on the event loop.
    business_minutes: Annotated[int | None, Query(ge=0, le=MAX_FIRST_RESPONSE_MINUTES)] = None,
    working_days: Annotated[
        int | None, Query(ge=0, le=MAX_RESOLUTION_WORKING_DAYS, description="Instead of business_minutes")
    ] = None,
) -> DueOut:
    return await sla_admin.preview_due(
        uow, calendar_id, _parse_start(start), business_minutes=business_minutes, working_days=working_days
    )


@router.post(
    "/sla/policies",
    status_code=status.HTTP_201_CREATED,
    response_model=PolicyOut,
    responses=problem_responses(*_AUTH, UnknownCalendar, InvalidBusinessTime, InvalidCalendar, PolicyExists),
    description=IN_FORCE,
)
async def create_policy(body: PolicyCreate, uow: UoW, _: Manager) -> PolicyOut:
    return await sla_admin.create_policy(uow, body)


@router.get("/sla/policies", response_model=list[PolicyOut], responses=problem_responses(*_AUTH))
async def list_policies(uow: UoW, _: Reader) -> list[PolicyOut]:
    return await sla_admin.list_policies(uow)


@router.get(
    "/sla/policies/{policy_id}", response_model=PolicyOut, responses=problem_responses(*_AUTH, PolicyNotFound)
)
async def get_policy(policy_id: uuid.UUID, uow: UoW, _: Reader) -> PolicyOut:
    return await sla_admin.get_policy(uow, policy_id)


@router.put(
    "/sla/policies/{policy_id}",
    response_model=PolicyOut,
    responses=problem_responses(
        *_AUTH, PolicyNotFound, UnknownCalendar, InvalidBusinessTime, InvalidCalendar, PolicyExists
    ),
    description=IN_FORCE,
)
async def update_policy(policy_id: uuid.UUID, body: PolicyUpdate, uow: UoW, _: Manager) -> PolicyOut:
    return await sla_admin.update_policy(uow, policy_id, body)


@router.get(
    "/tickets/{ticket_id}/sla",
    response_model=TicketSlaOut,
    summary="A ticket's SLA clocks: due and warning times, state, business minutes left",
    responses=problem_responses(*_AUTH, sla.TicketSlaNotFound),
)
async def ticket_sla(ticket_id: uuid.UUID, uow: UoW, _: Reader) -> TicketSlaOut:
    return await sla.ticket_sla(uow, ticket_id)
