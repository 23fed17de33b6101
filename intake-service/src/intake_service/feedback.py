"""Satisfaction surveys: a signed, expiring link per resolution; one rating per resolution.

Customers have no account, so the survey link itself is the credential: a JWT
for audience `helpdesk-survey` naming the ticket and which resolution it rates.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import and_, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from helpdesk_shared.chassis.problems import Conflict, Unauthorized
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import TicketStatus
from helpdesk_shared.contracts.intake import TicketRated
from intake_service.domain.privacy import field_max_length, redact_to_fit
from intake_service.models import Customer, Rating, TimelineEntry
from intake_service.repository import TicketRepository, load_ticket
from intake_service.schemas import RatingCreate, RatingOut, SurveyLink
from intake_service.settings import IntakeSettings

SURVEY_AUDIENCE = "helpdesk-survey"
_RATEABLE = frozenset({TicketStatus.RESOLVED, TicketStatus.CLOSED})
# Redaction can lengthen a comment the API accepted at its own limit: the event's copy is cut to this.
_COMMENT_LIMIT = field_max_length(TicketRated, "comment")


class NotRateable(Conflict):
    slug, title = "not-rateable", "The ticket has no resolution to rate"


class AlreadyRated(Conflict):
    slug, title = "already-rated", "This resolution was already rated"


class InvalidSurveyToken(Unauthorized):
    slug, title = "invalid-survey-token", "The survey link is invalid or has expired"


# The timeline entries that change who holds a ticket (as workflow's apply_* write them).
_HOLDER_CHANGES = ("assigned", "transferred", "queued")


async def _resolving_agent(uow: UnitOfWork, ticket_id: uuid.UUID, resolution: int) -> uuid.UUID | None:
    """The assignee when resolution `resolution` was made (the `agent_id` its `ticket.resolved`
    named), or None when nobody held the ticket or the timeline does not show that resolution.

    The ticket's current assignee is not it: after a reopen the ticket moves on, and whoever holds
    it then may close it without resolving again. The `status_changed` entry of a resolution names
    who pressed resolve, which can be a lead acting for the assignee, so the holder is replayed
    from the assignment entries before it.
    """
    entries = await uow.session.execute(
        select(TimelineEntry.kind, TimelineEntry.data)
        .where(
            TimelineEntry.ticket_id == ticket_id,
            or_(
                TimelineEntry.kind.in_(_HOLDER_CHANGES),
                and_(
                    TimelineEntry.kind == "status_changed",
                    TimelineEntry.data["to"].astext == TicketStatus.RESOLVED.value,
                ),
            ),
        )
        .order_by(TimelineEntry.seq)
    )
    holder: Any = None
    resolutions = 0
    for kind, data in entries:
        if kind == "assigned":
            holder = data.get("agent_id")
        elif kind == "transferred":
            holder = data.get("to_agent_id")
        elif kind == "queued":
            holder = None
        else:
            resolutions += 1
            if resolutions == resolution:
                try:
                    return uuid.UUID(holder) if holder is not None else None
                except (TypeError, ValueError):  # not a holder intake wrote; crediting nobody is safer
                    return None
    return None


async def survey_link(uow: UnitOfWork, ticket_id: uuid.UUID, settings: IntakeSettings) -> SurveyLink:
    ticket = await load_ticket(uow, ticket_id)
    if TicketStatus(ticket.status) not in _RATEABLE or ticket.resolution_count < 1:
        raise NotRateable(f"Ticket {ticket.number} is {ticket.status}; surveys follow a resolution")
    expires = datetime.now(UTC) + timedelta(days=settings.survey_ttl_days)
    agent = await _resolving_agent(uow, ticket.id, ticket.resolution_count)
    token = jwt.encode(
        {
            "sub": str(ticket.id),
            "res": ticket.resolution_count,
            # The rating is the resolving agent's, even if the ticket is reopened and moves on
            # before the customer answers; null rather than a guess when that is not known.
            "agt": str(agent) if agent is not None else None,
            "aud": SURVEY_AUDIENCE,
            "exp": int(expires.timestamp()),
        },
        settings.survey_secret.get_secret_value(),
        algorithm="HS256",
    )
    return SurveyLink(
        url=f"{settings.survey_base_url}/{ticket.id}/satisfaction?token={token}",
        token=token,
        expires_at=expires,
    )


def _verify(token: str, ticket_id: uuid.UUID, settings: IntakeSettings) -> tuple[int, uuid.UUID | None, bool]:
    """The resolution the link rates, the agent who held the ticket then (None: nobody), and
    whether the link names one at all (links sent before it did leave that to the ticket)."""
    try:
        claims = jwt.decode(
            token,
            settings.survey_secret.get_secret_value(),
            algorithms=["HS256"],
            audience=SURVEY_AUDIENCE,
            options={"require": ["sub", "exp", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidSurveyToken(str(exc)) from exc
    resolution = claims.get("res")
    if claims["sub"] != str(ticket_id) or not isinstance(resolution, int) or resolution < 1:
        raise InvalidSurveyToken("The survey link belongs to another ticket")
    agent = claims.get("agt")
    try:
        return resolution, uuid.UUID(agent) if agent is not None else None, "agt" in claims
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidSurveyToken("The survey link names no valid agent") from exc


async def rate(
    uow: UnitOfWork, ticket_id: uuid.UUID, body: RatingCreate, settings: IntakeSettings
) -> RatingOut:
    resolution, agent_id, names_agent = _verify(body.token, ticket_id, settings)
    ticket = await load_ticket(uow, ticket_id)
    if not names_agent:
        agent_id = await _resolving_agent(uow, ticket.id, resolution)
    now = datetime.now(UTC)
    inserted = await uow.session.execute(
        pg_insert(Rating)
        .values(
            ticket_id=ticket.id,
            resolution_count=resolution,
            score=body.score,
            comment=body.comment,
            agent_id=agent_id,
            rated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(Rating.ticket_id)
    )
    if inserted.first() is None:
        raise AlreadyRated(f"Resolution {resolution} of ticket {ticket.number} was already rated")
    # The comment is free text like any other: it leaves intake without the customer's contacts.
    comment = body.comment
    if comment is not None:
        customer = await uow.session.get_one(Customer, ticket.customer_id)
        comment = redact_to_fit(comment, _COMMENT_LIMIT, customer.email, customer.phone)
    await TicketRepository(uow.session).add_timeline(
        ticket.id, "rated", at=now, actor="customer", score=body.score, resolution_count=resolution
    )
    uow.publish(
        TicketRated(
            ticket_id=ticket.id,
            score=body.score,
            comment=comment,
            agent_id=agent_id,
            resolution_count=resolution,
            rated_at=now,
        ),
        subject=str(ticket.id),
    )
    await uow.commit()
    return RatingOut(ticket_id=ticket.id, resolution_count=resolution, score=body.score, rated_at=now)
