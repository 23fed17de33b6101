"""KPI read endpoints for leads and ops."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Role
from metrics_service import service

router = APIRouter(prefix="/v1/metrics", tags=["kpis"])

Viewer = Annotated[Principal, Depends(require_roles(Role.LEAD, Role.OPS))]


class Summary(BaseModel):
    tickets_created: int
    tickets_assigned: int


@router.get("/summary", response_model=Summary, responses=problem_responses(Unauthorized, Forbidden))
async def get_summary(uow: UoW, _: Viewer) -> Summary:
    return Summary(**await service.summary(uow))
