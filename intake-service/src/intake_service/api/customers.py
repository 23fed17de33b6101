"""Customer data for the people allowed to see it: masked views, export, erasure."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Role
from intake_service import privacy
from intake_service.privacy import CustomerNotFound
from intake_service.schemas import CustomerExport, CustomerOut

router = APIRouter(prefix="/v1/customers", tags=["customers (personal data)"])

Reader = Annotated[Principal, Depends(require_roles(Role.CHANNEL, Role.AGENT, Role.REVIEWER, Role.LEAD))]
Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
_ERRORS = problem_responses(Unauthorized, Forbidden, CustomerNotFound)


@router.get(
    "/{customer_id}",
    response_model=CustomerOut,
    responses=_ERRORS,
    summary="The customer's contact data (masked unless the role needs it)",
)
async def get_customer(customer_id: uuid.UUID, uow: UoW, principal: Reader) -> CustomerOut:
    return await privacy.get_customer(uow, customer_id, principal)


@router.get(
    "/{customer_id}/export",
    response_model=CustomerExport,
    responses=_ERRORS,
    summary="Everything held about the customer (data subject access request)",
)
async def export_customer(customer_id: uuid.UUID, uow: UoW, principal: Admin) -> CustomerExport:
    return await privacy.export_customer(uow, customer_id, principal)


@router.post(
    "/{customer_id}/erase",
    response_model=CustomerOut,
    responses=_ERRORS,
    summary="Erase the customer's personal data; tickets stay, anonymous",
)
async def erase_customer(customer_id: uuid.UUID, uow: UoW, principal: Admin) -> CustomerOut:
    return await privacy.erase_customer(uow, customer_id, principal)
