"""Ticket endpoints for channel integrations and frontends."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from pydantic import AwareDatetime

from helpdesk_shared.chassis.app import ServiceRuntime, UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.pagination import InvalidCursor, Page, PageParams, page_params
from helpdesk_shared.chassis.problems import (
    Conflict,
    Forbidden,
    InvalidInput,
    Unauthorized,
    problem_responses,
)
from helpdesk_shared.contracts.enums import Channel, Priority, Role, TicketKind, TicketStatus
from helpdesk_shared.text import tokens
from intake_service import service, workflow
from intake_service.attachment_content import AttachmentNotFound, ContentHeldByChannel, attachment_content
from intake_service.new_ticket import TicketDraft
from intake_service.repository import TicketFilters, TicketNotFound, TicketSort
from intake_service.schemas import (
    AttachmentOut,
    CloseRequest,
    MessageCreate,
    MessageOut,
    ResolveRequest,
    TicketCreate,
    TicketOut,
    TimelineItem,
)
from intake_service.service import STAFF_ROLES, IdempotencyKeyReused
from intake_service.settings import IntakeSettings
from intake_service.ticket_writer import TicketConflict, TicketStoreUnavailable, TicketWriter
from intake_service.workflow import IllegalTicketTransition, TicketClosedForMessages

router = APIRouter(prefix="/v1/tickets", tags=["tickets"])
# A time without an offset is ambiguous (a Shanghai team's 09:00 is not UTC's 09:00).
_WITH_OFFSET = "ISO 8601 with a UTC offset, e.g. 2026-12-01T00:00:00+08:00 (encode '+' as %2B)"

ChannelCaller = Annotated[Principal, Depends(require_roles(Role.CHANNEL))]
TicketReader = Annotated[
    Principal, Depends(require_roles(Role.CHANNEL, Role.AGENT, Role.REVIEWER, Role.LEAD))
]
TicketWorker = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.LEAD))]
StaffReader = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.REVIEWER, Role.LEAD))]
_AUTH = (Unauthorized, Forbidden)


class InvalidIdempotencyKey(InvalidInput):
    slug, title = "invalid-idempotency-key", "Invalid Idempotency-Key header"


class InvalidDateRange(InvalidInput):
    slug, title = "invalid-date-range", "created_from must be before created_to"


class StaffOnlyFilter(Forbidden):
    slug, title = "staff-only-filter", "Only staff may filter by routing's decisions"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TicketOut,
    summary="Accept a ticket from a channel",
    responses=problem_responses(
        *_AUTH, IdempotencyKeyReused, InvalidIdempotencyKey, TicketConflict, TicketStoreUnavailable
    ),
)
async def create_ticket(
    body: TicketCreate,
    request: Request,
    response: Response,
    caller: ChannelCaller,
    idempotency_key: Annotated[
        str | None, Header(description="Retries with the same key and body return the first ticket")
    ] = None,
) -> TicketOut:
    # `intake_service.api.fast_intake` serves this route without FastAPI's generic request
    # path; it hands every request it does not fully accept to this function.
    if idempotency_key is not None and not valid_idempotency_key(idempotency_key):
        raise InvalidIdempotencyKey("Idempotency-Key must be 1–255 printable characters")
    if body.callback_url is not None:
        require_allowed_callback(body.callback_url, request.app.state.settings)
    ticket, replayed = await accept_ticket(request.app, body, caller.subject, idempotency_key)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/tickets/{ticket.id}"
    return ticket


def valid_idempotency_key(key: str) -> bool:
    return 1 <= len(key) <= 255 and key.isprintable()


def require_allowed_callback(url: str, settings: IntakeSettings) -> None:
    """A 422 naming `body.callback_url` when answers may not be posted there (`domain.callbacks`);
    worded as the body's other validation errors are."""
    refusal = settings.callback_url_refusal(url)
    if refusal is not None:
        raise RequestValidationError(
            [{"loc": ("body", "callback_url"), "msg": refusal, "type": "callback_url_refused", "input": url}]
        )


async def accept_ticket(
    app: FastAPI, body: TicketCreate, caller: str, idempotency_key: str | None
) -> tuple[TicketOut, bool]:
    """Store the ticket (or find the one its Idempotency-Key created); True when replayed."""
    draft = TicketDraft(body=body, caller=caller, idempotency_key=idempotency_key)
    writer: TicketWriter = app.state.ticket_writer
    ticket = await writer.submit(draft)
    if ticket is not None:
        return ticket, False
    runtime: ServiceRuntime = app.state.runtime
    async with runtime.uow() as uow:  # a retry: answer with the ticket the key created
        return await service.replay_ticket(uow, draft), True


@router.get(
    "",
    response_model=Page[TicketOut],
    summary="Find tickets (filters combine with AND)",
    description="Domain, category, difficulty, priority and SLA due times are routing's decisions, "
    "mirrored from its events: a ticket routing raised to urgent is found with `priority=urgent`. "
    "For the SLA, `first_response_due_before=<now>` lists the tickets whose first response is "
    "overdue, `resolution_due_before=<in two hours>` those whose resolution falls due by then. "
    "Channel integrations see tickets without routing's decisions (null), so they may not filter by "
    "`domain`, `difficult` or the due times (403), and their `category` is the category_hint they "
    "sent. Each `next_cursor` belongs to its `sort`: used with another, it is a 422.",
    responses=problem_responses(*_AUTH, InvalidDateRange, StaffOnlyFilter, InvalidCursor),
)
async def list_tickets(
    uow: UoW,
    reader: TicketReader,
    page: Annotated[PageParams, Depends(page_params)],
    status_filter: Annotated[TicketStatus | None, Query(alias="status")] = None,
    kind: TicketKind | None = None,
    channel: Channel | None = None,
    priority: Priority | None = None,
    assignee_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    category: Annotated[
        str | None,
        Query(
            max_length=200,
            description="The category routing decided; the channel's category_hint while it has not "
            "(for channel integrations: their category_hint only)",
        ),
    ] = None,
    domain: Annotated[str | None, Query(max_length=100, description="The domain routing decided")] = None,
    difficult: Annotated[bool | None, Query(description="Difficult (疑難) tickets, or the others")] = None,
    first_response_due_before: Annotated[
        AwareDatetime | None,
        Query(
            description="First response due before this time and still awaited (no answer delivered, "
            f"never resolved, not closed). {_WITH_OFFSET}"
        ),
    ] = None,
    resolution_due_before: Annotated[
        AwareDatetime | None,
        Query(description=f"Resolution due before this time and not resolved or closed. {_WITH_OFFSET}"),
    ] = None,
    created_from: Annotated[AwareDatetime | None, Query(description=_WITH_OFFSET)] = None,
    created_to: Annotated[AwareDatetime | None, Query(description=_WITH_OFFSET)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Words in subject or description")] = None,
    sort: Annotated[
        TicketSort,
        Query(
            description="`created_at` or `updated_at`, oldest first, or `priority`, low first (by rank: "
            "low, normal, high, urgent), then oldest first; `-` before it for the other way round "
            "(`-priority`: urgent first, newest first within a priority). Ties go by id"
        ),
    ] = "-created_at",
) -> Page[TicketOut]:
    if created_from and created_to and created_from >= created_to:
        raise InvalidDateRange()
    staff = reader.has_any(STAFF_ROLES)
    if not staff:
        routing_filters = {
            "domain": domain,
            "difficult": difficult,
            "first_response_due_before": first_response_due_before,
            "resolution_due_before": resolution_due_before,
        }
        if given := [name for name, value in routing_filters.items() if value is not None]:
            raise StaffOnlyFilter(
                f"Channel integrations may not filter by routing's decisions: {', '.join(given)}"
            )
    filters = TicketFilters(
        status=status_filter,
        kind=kind,
        channel=channel,
        priority=priority,
        assignee_id=assignee_id,
        team_id=team_id,
        category=category,
        domain=domain,
        difficult=difficult,
        first_response_due_before=first_response_due_before,
        resolution_due_before=resolution_due_before,
        created_from=created_from,
        created_to=created_to,
        search_terms=tuple(tokens(q)) if q else (),
        category_hint_only=not staff,
        sort=sort,
    )
    items, cursor = await service.list_tickets(uow, page, filters, reader)
    return Page[TicketOut](items=items, next_cursor=cursor)


@router.get(
    "/{ticket_id}",
    response_model=TicketOut,
    summary="A ticket as it stands now",
    description="Staff see routing's decisions on it (domain, category, difficult, SLA policy and due "
    "times, escalation); channel integrations get them null.",
    responses=problem_responses(*_AUTH, TicketNotFound),
)
async def get_ticket(ticket_id: uuid.UUID, uow: UoW, reader: TicketReader) -> TicketOut:
    return await service.get_ticket(uow, ticket_id, reader)


_NEXT_PAGE_HEADERS = {
    "Next-Cursor": {
        "description": "Present when later entries remain: pass it as ?cursor= for the next page",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'The next page\'s URL, rel="next" (when later entries remain)',
        "schema": {"type": "string"},
    },
}


@router.get(
    "/{ticket_id}/timeline",
    response_model=list[TimelineItem],
    summary="Messages, status changes, assignments, transfers and reviews, in order",
    description=(
        "Staff see what the customer wrote in each message entry (`body`, `channel`, `attachments`), "
        "with the customer's email and phone masked unless their role sees contact data. Channel "
        "integrations see the customer-facing part only: the conversation (without text) and status. "
        "Paged in timeline order: while later entries remain, the `Next-Cursor` header (and "
        '`Link: <…>; rel="next"`) gives the next page; a page also ends early once its message '
        "bodies reach about a million characters."
    ),
    responses={
        200: {"description": "A page of the timeline, oldest first", "headers": _NEXT_PAGE_HEADERS},
        **problem_responses(*_AUTH, TicketNotFound, InvalidCursor),
    },
)
async def get_timeline(
    ticket_id: uuid.UUID,
    request: Request,
    response: Response,
    uow: UoW,
    reader: TicketReader,
    limit: Annotated[
        int, Query(ge=1, le=workflow.TIMELINE_LIMIT, description="Entries per page at most")
    ] = workflow.TIMELINE_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=512, description="From a previous page's Next-Cursor header")
    ] = None,
) -> list[TimelineItem]:
    page = await workflow.timeline(uow, ticket_id, reader, limit=limit, cursor=cursor)
    if page.next_cursor is not None:
        response.headers["Next-Cursor"] = page.next_cursor
        following = request.url.include_query_params(cursor=page.next_cursor, limit=limit)
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return page.items


@router.get(
    "/{ticket_id}/attachments",
    response_model=list[AttachmentOut],
    summary="Attachments of the ticket and its messages",
    responses=problem_responses(*_AUTH, TicketNotFound),
)
async def list_attachments(ticket_id: uuid.UUID, uow: UoW, _: TicketReader) -> list[AttachmentOut]:
    return await service.list_attachments(uow, ticket_id)


@router.get(
    "/{ticket_id}/attachments/{attachment_id}/content",
    response_class=Response,
    summary="Download an attachment (email attachments come out of the archived message)",
    responses={
        200: {"description": "The file, as a download", "content": {"application/octet-stream": {}}},
        307: {"description": "The channel serves the file at this URL (Location)"},
        **problem_responses(*_AUTH, TicketNotFound, AttachmentNotFound, ContentHeldByChannel),
    },
)
async def download_attachment(
    ticket_id: uuid.UUID, attachment_id: uuid.UUID, uow: UoW, _: StaffReader
) -> Response:
    content = await attachment_content(uow, ticket_id, attachment_id)
    if isinstance(content, str):
        return RedirectResponse(content, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    return Response(
        content.data,
        media_type=content.content_type,
        headers={
            # Always a download, never rendered: a customer's HTML must not run in our origin.
            "Content-Disposition": (
                f"attachment; filename=\"attachment\"; filename*=UTF-8''{quote(content.name)}"
            ),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
        },
    )


@router.post(
    "/{ticket_id}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageOut,
    summary="A customer follow-up (reopens an answered or resolved ticket)",
    responses=problem_responses(
        *_AUTH, TicketNotFound, TicketClosedForMessages, IdempotencyKeyReused, InvalidIdempotencyKey
    ),
)
async def add_message(
    ticket_id: uuid.UUID,
    body: MessageCreate,
    uow: UoW,
    caller: ChannelCaller,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            description="Retries with the same key and body return the first message (one key, one request)"
        ),
    ] = None,
) -> MessageOut:
    if idempotency_key is not None and not valid_idempotency_key(idempotency_key):
        raise InvalidIdempotencyKey("Idempotency-Key must be 1–255 printable characters")
    message, replayed = await workflow.add_customer_message(
        uow, ticket_id, body, caller=caller.subject, idempotency_key=idempotency_key
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return message


@router.post(
    "/{ticket_id}/start",
    response_model=TicketOut,
    summary="The assignee starts working on the ticket",
    responses=problem_responses(*_AUTH, TicketNotFound, IllegalTicketTransition),
)
async def start(ticket_id: uuid.UUID, uow: UoW, principal: TicketWorker) -> TicketOut:
    return await workflow.start_work(uow, ticket_id, principal)


@router.post(
    "/{ticket_id}/resolve",
    response_model=TicketOut,
    summary="Resolve the ticket (assignee or lead)",
    responses=problem_responses(*_AUTH, TicketNotFound, IllegalTicketTransition),
)
async def resolve(
    ticket_id: uuid.UUID, uow: UoW, principal: TicketWorker, body: ResolveRequest | None = None
) -> TicketOut:
    return await workflow.resolve(uow, ticket_id, body or ResolveRequest(), principal)


@router.post(
    "/{ticket_id}/close",
    response_model=TicketOut,
    summary="Close the ticket (assignee or lead); closed tickets are final",
    responses=problem_responses(*_AUTH, TicketNotFound, IllegalTicketTransition, Conflict),
)
async def close(
    ticket_id: uuid.UUID, uow: UoW, principal: TicketWorker, body: CloseRequest | None = None
) -> TicketOut:
    return await workflow.close(uow, ticket_id, body or CloseRequest(), principal)
