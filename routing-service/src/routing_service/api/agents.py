"""Teams and agents: who can take tickets, with which skills and capacity, and their presence."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.pagination import Page, PageParams, page_params
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Role
from routing_service import presence, service
from routing_service.errors import (
    AgentNotFound,
    AlreadyExists,
    InvalidSkillLevels,
    TeamNotFound,
    UnknownAgent,
    UnknownTeam,
)
from routing_service.schemas import (
    AgentCreate,
    AgentOut,
    AgentUpdate,
    PresenceOut,
    PresenceUpdate,
    TeamCreate,
    TeamOut,
    TeamUpdate,
)
from routing_service.service import AgentDeactivated, AgentLeadsTeam, TeamNotEmpty

router = APIRouter(prefix="/v1", tags=["teams and agents"])

Manager = Annotated[Principal, Depends(require_roles(Role.LEAD))]
Staff = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.REVIEWER, Role.LEAD, Role.OPS))]
_AUTH = (Unauthorized, Forbidden)


@router.post(
    "/teams",
    status_code=status.HTTP_201_CREATED,
    response_model=TeamOut,
    responses=problem_responses(*_AUTH, AlreadyExists),
)
async def create_team(body: TeamCreate, uow: UoW, _: Manager) -> TeamOut:
    return await service.create_team(uow, body)


@router.get("/teams", response_model=list[TeamOut], responses=problem_responses(*_AUTH))
async def list_teams(uow: UoW, _: Staff) -> list[TeamOut]:
    return await service.list_teams(uow)


@router.patch(
    "/teams/{team_id}",
    response_model=TeamOut,
    summary="Rename a team or change its lead (leads and admins)",
    responses=problem_responses(*_AUTH, UnknownTeam, AlreadyExists, UnknownAgent),
)
async def update_team(team_id: uuid.UUID, body: TeamUpdate, uow: UoW, _: Manager) -> TeamOut:
    return await service.update_team(uow, team_id, body)


@router.delete(
    "/teams/{team_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a team no agent belongs to (leads and admins; 409 while agents do)",
    responses=problem_responses(*_AUTH, UnknownTeam, TeamNotEmpty),
)
async def delete_team(team_id: uuid.UUID, uow: UoW, _: Manager) -> Response:
    await service.delete_team(uow, team_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/agents",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentOut,
    responses=problem_responses(*_AUTH, TeamNotFound, InvalidSkillLevels, AlreadyExists),
)
async def create_agent(body: AgentCreate, uow: UoW, _: Manager) -> AgentOut:
    return await service.create_agent(uow, body)


@router.get("/agents", response_model=Page[AgentOut], responses=problem_responses(*_AUTH))
async def list_agents(
    uow: UoW,
    _: Staff,
    page: Annotated[PageParams, Depends(page_params)],
    include_inactive: Annotated[bool, Query(description="Also list deactivated agents")] = False,
) -> Page[AgentOut]:
    items, cursor = await service.list_agents(uow, page, include_inactive=include_inactive)
    return Page[AgentOut](items=items, next_cursor=cursor)


@router.get("/agents/{agent_id}", response_model=AgentOut, responses=problem_responses(*_AUTH, AgentNotFound))
async def get_agent(agent_id: uuid.UUID, uow: UoW, _: Staff) -> AgentOut:
    return await service.get_agent(uow, agent_id)


@router.patch(
    "/agents/{agent_id}",
    response_model=AgentOut,
    summary="Change an agent's team, roles, skills, languages, capacity or schedule (leads and admins)",
    responses=problem_responses(*_AUTH, AgentNotFound, TeamNotFound, InvalidSkillLevels, AgentDeactivated),
)
async def update_agent(agent_id: uuid.UUID, body: AgentUpdate, uow: UoW, _: Manager) -> AgentOut:
    return await service.update_agent(uow, agent_id, body)


@router.delete(
    "/agents/{agent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove (deactivate) an agent: offline for good, every ticket back to the queue, kept for "
    "history (leads and admins; idempotent; agent.status_changed)",
    responses=problem_responses(*_AUTH, AgentNotFound, AgentLeadsTeam),
)
async def deactivate_agent(agent_id: uuid.UUID, uow: UoW, principal: Manager) -> Response:
    await service.deactivate_agent(uow, agent_id, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/agents/{agent_id}/presence",
    response_model=PresenceOut,
    summary="Set presence: the agent themself, or a lead or admin for anyone",
    responses=problem_responses(*_AUTH, AgentNotFound, AgentDeactivated),
)
async def set_presence(agent_id: uuid.UUID, body: PresenceUpdate, uow: UoW, principal: Staff) -> PresenceOut:
    await service.ensure_presence_may_change(uow, agent_id, body, principal)
    return await presence.set_presence(uow, agent_id, body, principal)
