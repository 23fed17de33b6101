"""Read views: the queue by team and priority, and who holds what (any staff role may read)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.pagination import InvalidCursor, Page, PageParams, page_params
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import AgentPresence, Role
from routing_service import views
from routing_service.errors import AgentNotFound
from routing_service.schemas import AgentWorkload, QueueOverview

router = APIRouter(prefix="/v1", tags=["queues and workload"])

Staff = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.REVIEWER, Role.LEAD, Role.OPS))]
_AUTH = (Unauthorized, Forbidden)


@router.get(
    "/queues",
    response_model=QueueOverview,
    summary="Tickets waiting for an agent: depth by team and priority, and the oldest wait",
    responses=problem_responses(*_AUTH),
)
async def queues(uow: UoW, _: Staff) -> QueueOverview:
    return await views.queue_overview(uow)


@router.get(
    "/workload",
    response_model=Page[AgentWorkload],
    summary="Every agent's presence, load and tickets",
    responses=problem_responses(*_AUTH, InvalidCursor),
)
async def workload(
    uow: UoW,
    _: Staff,
    page: Annotated[PageParams, Depends(page_params)],
    team_id: Annotated[uuid.UUID | None, Query(description="Only this team's agents")] = None,
    presence: Annotated[AgentPresence | None, Query(description="Only agents with this presence")] = None,
) -> Page[AgentWorkload]:
    items, cursor = await views.workload_page(uow, page, team_id=team_id, presence=presence)
    return Page[AgentWorkload](items=items, next_cursor=cursor)


@router.get(
    "/agents/{agent_id}/workload",
    response_model=AgentWorkload,
    summary="One agent's presence, load and tickets",
    responses=problem_responses(*_AUTH, AgentNotFound),
)
async def agent_workload(agent_id: uuid.UUID, uow: UoW, _: Staff) -> AgentWorkload:
    return await views.agent_workload(uow, agent_id)
