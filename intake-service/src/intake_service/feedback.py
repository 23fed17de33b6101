"""Satisfaction surveys: a signed, expiring link per resolution; one rating per resolution.

Customers have no account, so the survey link itself is the credential: a JWT
for audience `helpdesk-survey` naming the ticket and which resolution it rates.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy.dialects.postgresql import insert as pg_insert

from helpdesk_shared.chassis.problems import Conflict, Unauthorized
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import TicketStatus
from helpdesk_shared.contracts.intake import TicketRated
from intake_service.domain.privacy import field_max_length, redact_to_fit
from intake_service.models import Customer, Rating
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


async def survey_link(uow: UnitOfWork, ticket_id: uuid.UUID, settings: IntakeSettings) -> SurveyLink:
    ticket = await load_ticket(uow, ticket_id)
    if TicketStatus(ticket.status) not in _RATEABLE or ticket.resolution_count < 1:
        raise NotRateable(f"Ticket {ticket.number} is {ticket.status}; surveys follow a resolution")
    expires = datetime.now(UTC) + timedelta(days=settings.survey_ttl_days)
    token = jwt.encode(
        {
            "sub": str(ticket.id),
            "res": ticket.resolution_count,
            # The rating is the resolving agent's, even if the ticket is reopened and moves on
            # before the customer answers (links exist only while it is resolved or closed).
            "agt": str(ticket.assignee_id) if ticket.assignee_id is not None else None,
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
        agent_id = ticket.assignee_id
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
