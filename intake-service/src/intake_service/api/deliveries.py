"""Deliveries of a ticket's approved answers: where each stands, and a retry for a failed one."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, ConfigDict, Field

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Channel, Role
from intake_service import delivery
from intake_service.delivery import DeliveryNotFailed, DeliveryNotFound, DeliveryTicketClosed
from intake_service.models import Delivery
from intake_service.repository import TicketNotFound

router = APIRouter(prefix="/v1/tickets/{ticket_id}/deliveries", tags=["deliveries"])

# Staff who may read the ticket (admins always may); not channel integrations: the errors are
# the servers' and integrations' own words, internal to the team.
StaffReader = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.REVIEWER, Role.LEAD))]
Lead = Annotated[Principal, Depends(require_roles(Role.LEAD))]
_AUTH = (Unauthorized, Forbidden)


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    message_id: uuid.UUID = Field(description="The outbound message carrying the answer")
    answer_id: uuid.UUID
    answer_version: int
    channel: Channel
    status: Literal["pending", "delivered", "failed"]
    attempts: int = Field(description="Attempts so far (since a retry, if it was retried)")
    next_attempt_at: datetime | None = Field(description="When it is tried next; null unless pending")
    last_error: str | None = Field(description="Why the latest failed attempt failed")
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, row: Delivery) -> DeliveryOut:
        out = cls.model_validate(row)
        return out if row.status == "pending" else out.model_copy(update={"next_attempt_at": None})


@router.get(
    "",
    response_model=list[DeliveryOut],
    summary="The ticket's answer deliveries, oldest first: status, attempts, next attempt, last error",
    responses=problem_responses(*_AUTH, TicketNotFound),
)
async def list_deliveries(ticket_id: uuid.UUID, uow: UoW, _: StaffReader) -> list[DeliveryOut]:
    return [DeliveryOut.of(row) for row in await delivery.ticket_deliveries(uow, ticket_id)]


@router.post(
    "/{delivery_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryOut,
    summary="Send a failed delivery again (leads)",
    description="The delivery is pending again, due at once, its attempts reset and its give-up age "
    "counted afresh; the retry is on the ticket's timeline. Only a failed delivery: 409 otherwise.",
    responses=problem_responses(
        *_AUTH, TicketNotFound, DeliveryNotFound, DeliveryNotFailed, DeliveryTicketClosed
    ),
)
async def retry_delivery(
    ticket_id: uuid.UUID, delivery_id: uuid.UUID, uow: UoW, principal: Lead
) -> DeliveryOut:
    row = await delivery.retry_failed_delivery(uow, ticket_id, delivery_id, actor=principal.subject)
    return DeliveryOut.of(row)
