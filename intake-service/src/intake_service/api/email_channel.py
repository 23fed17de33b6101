"""The email channel's webhook: raw RFC 5322 messages from an inbound-mail service or an MTA."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.limits import RequestTooLarge
from helpdesk_shared.chassis.problems import DomainError, Forbidden, Unauthorized, problem_responses
from helpdesk_shared.contracts.enums import Role
from intake_service import inbound_email
from intake_service.inbound_email import UnreadableEmail

router = APIRouter(prefix="/v1/channels/email", tags=["email channel"])
INBOUND_PATH = "/v1/channels/email/inbound"  # its body limit is MAX_MESSAGE_BYTES, not the services' 1 MiB

ChannelCaller = Annotated[Principal, Depends(require_roles(Role.CHANNEL))]
MAX_MESSAGE_BYTES = 25 * 1024 * 1024


class NotAnEmail(DomainError):
    status, slug, title = 415, "unsupported-media-type", "Send the raw message as message/rfc822"


class InboundOutcome(BaseModel):
    outcome: Literal["created", "threaded", "ignored"]
    ticket_id: uuid.UUID | None
    inbound_id: uuid.UUID
    reason: str | None = None


@router.post(
    INBOUND_PATH.removeprefix(router.prefix),
    response_model=InboundOutcome,
    summary="One raw RFC 5322 message: a new ticket, a reply threaded into its ticket, or ignored",
    responses=problem_responses(Unauthorized, Forbidden, NotAnEmail, RequestTooLarge, UnreadableEmail),
    openapi_extra={
        "requestBody": {"content": {"message/rfc822": {"schema": {"type": "string", "format": "binary"}}}}
    },
)
async def inbound(request: Request, response: Response, uow: UoW, _: ChannelCaller) -> InboundOutcome:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "message/rfc822":
        raise NotAnEmail(f"Content-Type was {media_type or 'missing'}")
    # At most MAX_MESSAGE_BYTES: the chassis' body limit for this route (larger_bodies) refuses more.
    raw = await request.body()
    result = await inbound_email.receive(
        uow,
        raw,
        number_prefix=request.app.state.settings.ticket_number_prefix,
        max_bytes=MAX_MESSAGE_BYTES,
    )
    if result.outcome == "created" and result.reason is None:
        response.status_code = status.HTTP_201_CREATED
    return InboundOutcome(
        outcome=result.outcome,
        ticket_id=result.ticket_id,
        inbound_id=result.inbound_id,
        reason=result.reason,
    )
