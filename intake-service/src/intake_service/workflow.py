"""Use cases that move a ticket through its lifecycle, and its timeline.

Every status change goes through the state machine in `domain.lifecycle`
(an illegal one is a 409), is written to the timeline, and emits its event in
the same transaction. Changes mirrored from other services' events follow the
same state machine but never raise: what it does not allow is noted on the
timeline and the status is kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from helpdesk_shared.chassis.auth import Principal
from helpdesk_shared.chassis.logging import get_logger
from helpdesk_shared.chassis.pagination import InvalidCursor
from helpdesk_shared.chassis.problems import Conflict, Forbidden
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import CloseReason, MessageAuthor, Role, TicketKind, TicketStatus
from helpdesk_shared.contracts.intake import (
    TicketClosed,
    TicketMessageReceived,
    TicketReopened,
    TicketResolved,
)
from helpdesk_shared.contracts.review import AnswerApproved, AnswerRejected, AnswerSubmitted
from helpdesk_shared.contracts.routing import (
    TicketAssigned,
    TicketClassified,
    TicketCollaboratorsChanged,
    TicketEscalated,
    TicketQueued,
    TicketTransferred,
)
from intake_service.domain.lifecycle import (
    REOPENED_BY_CUSTOMER,
    IllegalTransition,
    can_transition,
    needs_lead,
    status_after_assignment,
    transition,
)
from intake_service.domain.privacy import field_max_length, redact_contacts, redact_to_fit
from intake_service.models import (
    Attachment,
    ComplaintCase,
    Customer,
    IdempotencyKey,
    Message,
    Ticket,
    TimelineEntry,
)
from intake_service.repository import TicketRepository, load_ticket
from intake_service.schemas import (
    CloseRequest,
    MessageCreate,
    MessageOut,
    ResolveRequest,
    TicketOut,
    TimelineItem,
)
from intake_service.service import STAFF_ROLES, IdempotencyKeyReused

log = get_logger(__name__)

# Timeline entries per page, at most and by default (a ticket rarely has more: one page).
TIMELINE_LIMIT = 1000
# Characters of message bodies per timeline page: a page of long follow-ups ends early (each body
# is at most the API's 20,000 characters), so a response stays within a few megabytes.
TIMELINE_BODY_CHARS = 1_000_000
# Redaction can lengthen a body the API accepted at its own limit: the event's copy is cut to this.
_MESSAGE_BODY_LIMIT = field_max_length(TicketMessageReceived, "body")
_RESOLUTION_NOTE_LIMIT = field_max_length(TicketResolved, "note")


class IllegalTicketTransition(Conflict):
    slug, title = "illegal-transition", "Illegal ticket status transition"


class TicketClosedForMessages(Conflict):
    slug, title = "ticket-closed", "The ticket is closed"


class ComplaintCaseOpen(Conflict):
    slug, title = "complaint-case-open", "The complaint's case file is not archived"


def _change_status(ticket: Ticket, target: TicketStatus) -> TicketStatus:
    previous = TicketStatus(ticket.status)
    try:
        ticket.status = transition(previous, target)
    except IllegalTransition as exc:
        raise IllegalTicketTransition(str(exc), current_status=previous.value) from exc
    return previous


def _require_owner_or_lead(ticket: Ticket, principal: Principal) -> None:
    if principal.has_any({Role.LEAD, Role.ADMIN}):
        return
    if ticket.assignee_id is None or principal.user_id != ticket.assignee_id:
        raise Forbidden("Only the ticket's assignee or a lead may do this")


def _require_lead_for(ticket: Ticket, target: TicketStatus, principal: Principal) -> None:
    current = TicketStatus(ticket.status)
    if needs_lead(current, target) and not principal.has_any({Role.LEAD, Role.ADMIN}):
        raise Forbidden(f"Only a lead may move a ticket from '{current}' to '{target}'")


def _newer_assignment(ticket: Ticket, at: datetime, event_type: str) -> bool:
    """Whether an assignment, queueing or transfer routing made at `at` is no older than the one
    the ticket's assignee stands by (and if so, it now is that one). An older one is logged and
    ignored.

    Within a partition routing's events arrive in order; an older one arrives later only when
    replayed (from the dead-letter topic, say) after newer ones, and applying it would set back an
    assignee a transfer or the queue replaced. Its timeline entry would be as misleading: entries
    read in the order they were written, so "assigned to A" after "transferred to B" says A holds
    the ticket — none is written. A decision made at the very same time is not older: routing
    announces a queueing and the assignment that ends it at one time, in that order.
    Decided on the row the event's handler loaded (and locked) anyway: no statement of its own.
    """
    if ticket.assignment_changed_at is not None and at < ticket.assignment_changed_at:
        log.info(
            "stale_assignment_ignored",
            ticket_id=str(ticket.id),
            type=event_type,
            made_at=at,
            current_since=ticket.assignment_changed_at,
        )
        return False
    ticket.assignment_changed_at = at
    return True


async def apply_assignment(uow: UnitOfWork, event: TicketAssigned) -> None:
    """Mirror routing's decision: the ticket shows its assignee, team and status (unless routing
    decided otherwise since: see `_newer_assignment`). Does not commit: the consumer applies a run
    of them in one transaction."""
    ticket = await load_ticket(uow, event.ticket_id, for_update=True)
    # Routing makes a ticket difficult again when it reopens too often, without classifying it
    # again; an assignment that does not say so (the lead away: a specialist) takes nothing back.
    # That holds for one older than the ticket's assignee too: routing's word on the difficulty
    # still stands once another agent holds the ticket.
    if event.difficult:
        ticket.difficult = True
    if not _newer_assignment(ticket, event.assigned_at, event.event_type):
        return
    repo = TicketRepository(uow.session)
    previous_status = TicketStatus(ticket.status)
    ticket.status = status_after_assignment(previous_status)
    if ticket.assignee_id != event.agent_id:
        ticket.previous_assignee_id = ticket.assignee_id
    ticket.assignee_id = event.agent_id
    ticket.team_id = event.team_id or ticket.team_id
    await repo.add_timeline(
        ticket.id,
        "assigned",
        at=event.assigned_at,
        actor="routing",
        agent_id=event.agent_id,
        reason=event.reason,
        difficult=event.difficult,
    )
    if ticket.status != previous_status:
        await repo.add_timeline(
            ticket.id,
            "status_changed",
            at=event.assigned_at,
            actor="routing",
            **{"from": previous_status, "to": ticket.status},
        )


async def apply_queued(uow: UnitOfWork, event: TicketQueued) -> None:
    """Mirror routing's queue: nobody holds the ticket now (an untouched one goes back to `new`).
    Does not commit, as `apply_assignment`; an older one than the ticket's assignee stands by is
    ignored, as there."""
    ticket = await load_ticket(uow, event.ticket_id, for_update=True)
    if not _newer_assignment(ticket, event.queued_at, event.event_type):
        return
    repo = TicketRepository(uow.session)
    previous_status = TicketStatus(ticket.status)
    if ticket.assignee_id is not None:
        ticket.previous_assignee_id = ticket.assignee_id
        ticket.assignee_id = None
    if previous_status == TicketStatus.ASSIGNED:
        ticket.status = transition(previous_status, TicketStatus.NEW)
    ticket.team_id = event.team_id or ticket.team_id
    await repo.add_timeline(
        ticket.id, "queued", at=event.queued_at, actor="routing", reason=event.reason, priority=event.priority
    )
    if ticket.status != previous_status:
        await repo.add_timeline(
            ticket.id,
            "status_changed",
            at=event.queued_at,
            actor="routing",
            **{"from": previous_status, "to": ticket.status},
        )


async def apply_transfer(uow: UnitOfWork, event: TicketTransferred) -> None:
    """Mirror an audited transfer: new assignee, and the transfer in the timeline (an older one
    than the ticket's assignee stands by is ignored, as in `apply_assignment`)."""
    ticket = await load_ticket(uow, event.ticket_id, for_update=True)
    if not _newer_assignment(ticket, event.transferred_at, event.event_type):
        return
    ticket.previous_assignee_id = ticket.assignee_id
    ticket.assignee_id = event.to_agent_id
    ticket.team_id = event.to_team_id or ticket.team_id
    await TicketRepository(uow.session).add_timeline(
        ticket.id,
        "transferred",
        at=event.transferred_at,
        actor=str(event.requested_by),
        from_agent_id=event.from_agent_id,
        to_agent_id=event.to_agent_id,
        reason=event.reason,
    )
    await uow.commit()


async def _mirrored_ticket(uow: UnitOfWork, ticket_id: uuid.UUID, event_type: str) -> Ticket | None:
    """The ticket an event is about, locked; None (and a warning) when intake never had it.

    Raising instead would only send the event to the dead-letter topic after retries that
    cannot succeed.
    """
    ticket = await TicketRepository(uow.session).get(ticket_id, for_update=True)
    if ticket is None:
        log.warning("event_for_unknown_ticket", type=event_type, ticket_id=str(ticket_id))
    return ticket


async def apply_collaborators(uow: UnitOfWork, event: TicketCollaboratorsChanged) -> None:
    """Note the ticket's collaborators (the whole list) on the timeline, for staff only.

    Routing clears the list when the ticket is resolved or closed; nobody asked for that, so the
    entry's actor is routing itself.
    """
    ticket = await _mirrored_ticket(uow, event.ticket_id, event.event_type)
    if ticket is None:
        return
    await TicketRepository(uow.session).add_timeline(
        ticket.id,
        "collaborators",
        at=event.changed_at,
        actor=str(event.changed_by) if event.changed_by is not None else "routing",
        collaborator_ids=event.collaborator_ids,
    )
    await uow.commit()


async def apply_classification(uow: UnitOfWork, event: TicketClassified) -> None:
    """Mirror routing's classification: domain, category, difficulty, SLA policy and due times,
    and the priority it decided (raised to urgent when urgent). Does not commit, as
    `apply_assignment`.

    Each decision is applied only if it is newer than the one the ticket holds: a classification
    older than the stored one changes nothing, and its priority gives way to a later escalation's
    (the ticket's priority is that of routing's newer decision, so a late copy of a
    classification never lowers a priority an escalation raised since).
    """
    ticket = await _mirrored_ticket(uow, event.ticket_id, event.event_type)
    if ticket is None:
        return
    if ticket.classified_at is not None and event.classified_at <= ticket.classified_at:
        log.info("stale_classification_ignored", ticket_id=str(ticket.id), classified_at=event.classified_at)
        return
    ticket.classified_at = event.classified_at
    ticket.domain, ticket.category, ticket.difficult = event.domain, event.category, event.difficult
    ticket.sla_policy_id = event.sla_policy_id
    ticket.first_response_due_at = event.first_response_due_at
    ticket.resolution_due_at = event.resolution_due_at
    if ticket.escalated_at is None or event.classified_at > ticket.escalated_at:
        ticket.priority = event.priority
    # The decision, not its reasons and scores (routing's `POST /v1/routing/classify` explains those).
    await TicketRepository(uow.session).add_timeline(
        ticket.id,
        "classified",
        at=event.classified_at,
        actor="routing",
        domain=event.domain,
        category=event.category,
        priority=event.priority,
        difficult=event.difficult,
    )


async def apply_escalation(uow: UnitOfWork, event: TicketEscalated) -> None:
    """Mirror an escalation: its priority (when newer than the classification the ticket holds)
    and the escalation on the staff timeline. An escalation no newer than the last one applied
    is a copy or a late arrival: ignored. Does not commit."""
    ticket = await _mirrored_ticket(uow, event.ticket_id, event.event_type)
    if ticket is None:
        return
    if ticket.escalated_at is not None and event.escalated_at <= ticket.escalated_at:
        log.info("stale_escalation_ignored", ticket_id=str(ticket.id), escalated_at=event.escalated_at)
        return
    ticket.escalated_at = event.escalated_at
    if ticket.classified_at is None or event.escalated_at > ticket.classified_at:
        ticket.priority = event.priority
    await TicketRepository(uow.session).add_timeline(
        ticket.id,
        "escalated",
        at=event.escalated_at,
        actor="routing",
        reason=event.reason,
        sla_target=event.sla_target,
        previous_priority=event.previous_priority,
        priority=event.priority,
        lead_id=event.lead_id,
        note=event.note,
    )


async def _follow_status(
    uow: UnitOfWork, ticket: Ticket, target: TicketStatus, *, at: datetime, actor: str, cause: str
) -> None:
    """Move to `target` if the lifecycle allows it; otherwise keep the status (events from
    another topic can arrive out of order, or after the ticket was closed)."""
    previous = TicketStatus(ticket.status)
    if previous == target:
        return
    if not can_transition(previous, target):
        log.info(
            "mirrored_transition_skipped",
            ticket_id=str(ticket.id),
            cause=cause,
            current=previous,
            target=target,
        )
        return
    ticket.status = target
    await TicketRepository(uow.session).add_timeline(
        ticket.id, "status_changed", at=at, actor=actor, **{"from": previous, "to": target}
    )


async def _mirror_review(
    uow: UnitOfWork,
    event: AnswerSubmitted | AnswerRejected | AnswerApproved,
    *,
    outcome: str,
    at: datetime,
    actor: uuid.UUID,
    target: TicketStatus | None,
    **details: Any,
) -> None:
    """A review step on the timeline, and the status it implies when the lifecycle allows it."""
    ticket = await _mirrored_ticket(uow, event.ticket_id, event.event_type)
    if ticket is None:
        return
    await TicketRepository(uow.session).add_timeline(
        ticket.id,
        f"answer_{outcome}",
        at=at,
        actor=str(actor),
        summary=f"answer v{event.answer_version} {outcome}"
        + (" for review" if outcome == "submitted" else ""),
        answer_id=event.answer_id,
        answer_version=event.answer_version,
        author_id=event.author_id,
        **details,
    )
    if target is not None:
        await _follow_status(uow, ticket, target, at=at, actor=str(actor), cause=event.event_type)


async def apply_answer_submitted(uow: UnitOfWork, event: AnswerSubmitted) -> None:
    """An answer version went to review: the ticket awaits review."""
    await _mirror_review(
        uow,
        event,
        outcome="submitted",
        at=event.submitted_at,
        actor=event.author_id,
        target=TicketStatus.AWAITING_REVIEW,
        reviewer_id=event.reviewer_id,
    )


async def apply_answer_rejected(uow: UnitOfWork, event: AnswerRejected) -> None:
    """The reviewer sent the answer back: the ticket is being worked on again.

    The reviewer's comment is internal: channel callers do not see it on the timeline.
    """
    await _mirror_review(
        uow,
        event,
        outcome="rejected",
        at=event.rejected_at,
        actor=event.reviewer_id,
        target=TicketStatus.IN_PROGRESS,
        reviewer_id=event.reviewer_id,
        checklist=event.checklist.model_dump(mode="json"),
        comment=event.comment,
    )


async def apply_answer_approved(uow: UnitOfWork, event: AnswerApproved) -> None:
    """Noted only: the ticket is answered once the published answer was delivered, not when approved."""
    await _mirror_review(
        uow,
        event,
        outcome="approved",
        at=event.approved_at,
        actor=event.reviewer_id,
        target=None,
        reviewer_id=event.reviewer_id,
        checklist=event.checklist.model_dump(mode="json"),
        comment=event.comment,
    )


def message_fingerprint(ticket_id: uuid.UUID, body: MessageCreate) -> str:
    """What a follow-up's Idempotency-Key is bound to: the same body for the same ticket."""
    return hashlib.sha256(f"message:{ticket_id}:{body.model_dump_json()}".encode()).hexdigest()


async def add_customer_message(
    uow: UnitOfWork,
    ticket_id: uuid.UUID,
    body: MessageCreate,
    *,
    caller: str,
    idempotency_key: str | None = None,
) -> tuple[MessageOut, bool]:
    """A customer follow-up; after an answer or a resolution it reopens the ticket. True when a
    retry with the first request's Idempotency-Key replayed its message.

    The caller's key is claimed first, in the transaction that stores the message: a concurrent
    twin's claim waits for that transaction, then replays its message (or, when it failed and
    stored nothing, claims the key itself). Keys are the ones `POST /v1/tickets` uses: one key,
    one request of the caller's.
    """
    if idempotency_key is not None:
        fingerprint = message_fingerprint(ticket_id, body)
        if not await _claim_message_key(uow, caller, idempotency_key, fingerprint, ticket_id):
            return await _replayed_message(uow, caller, idempotency_key, fingerprint), True
    message = await stage_customer_message(
        uow, await load_ticket(uow, ticket_id, for_update=True), body, caller=caller
    )
    if idempotency_key is not None:
        await uow.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.caller == caller, IdempotencyKey.key == idempotency_key)
            .values(message_id=message.id)
        )
    out = MessageOut.model_validate(message)
    await uow.commit()
    return out, False


async def _claim_message_key(
    uow: UnitOfWork, caller: str, key: str, fingerprint: str, ticket_id: uuid.UUID
) -> bool:
    """True if this request is the first with the key (the row is this transaction's until it ends)."""
    claimed = await uow.session.execute(
        pg_insert(IdempotencyKey)
        .values(caller=caller, key=key, request_hash=fingerprint, ticket_id=ticket_id)
        .on_conflict_do_nothing()
        .returning(IdempotencyKey.key)
    )
    return claimed.first() is not None


async def _replayed_message(uow: UnitOfWork, caller: str, key: str, fingerprint: str) -> MessageOut:
    """The message the key's first request stored (a retry), or a 409 for another request."""
    claimed = await TicketRepository(uow.session).idempotency_key(caller, key)
    if claimed is not None and claimed.request_hash != fingerprint:
        raise IdempotencyKeyReused(f"Idempotency-Key {key!r} was used for a different request")
    if claimed is None or claimed.message_id is None:
        raise Conflict("A request with this Idempotency-Key is still being processed; retry")
    return MessageOut.model_validate(await uow.session.get_one(Message, claimed.message_id))


async def stage_customer_message(
    uow: UnitOfWork, ticket: Ticket, body: MessageCreate, *, caller: str, email_message_id: str | None = None
) -> Message:
    """Add the message, its events and a reopen if due to the unit of work (no commit; ticket locked)."""
    if ticket.status == TicketStatus.CLOSED:
        raise TicketClosedForMessages(
            f"Ticket {ticket.number} is closed; open a new ticket and mention {ticket.number} in it"
        )
    repo = TicketRepository(uow.session)
    now = datetime.now(UTC)
    message = await repo.add_message(
        Message(
            id=uuid.uuid4(),
            ticket_id=ticket.id,
            direction="inbound",
            author=MessageAuthor.CUSTOMER,
            channel=body.channel or ticket.channel,
            body=body.body,
            email_message_id=email_message_id,
            created_at=now,
        )
    )
    await repo.add_attachments(ticket.id, body.attachments, message_id=message.id)
    await repo.add_timeline(
        ticket.id,
        "message",
        at=now,
        actor=caller,
        message_id=message.id,
        author=MessageAuthor.CUSTOMER,
        direction="inbound",
    )
    # The customer's own email and phone are redacted however they were typed, as in a new ticket.
    customer = await uow.session.get_one(Customer, ticket.customer_id)
    uow.publish(
        TicketMessageReceived(
            ticket_id=ticket.id,
            message_id=message.id,
            channel=message.channel,
            author=MessageAuthor.CUSTOMER,
            body=redact_to_fit(message.body, _MESSAGE_BODY_LIMIT, customer.email, customer.phone),
            attachment_count=len(body.attachments),
            received_at=now,
        ),
        subject=str(ticket.id),
    )
    if TicketStatus(ticket.status) in REOPENED_BY_CUSTOMER:
        previous = _change_status(ticket, TicketStatus.REOPENED)
        await reopened_by_customer(uow, ticket, previous, message_id=message.id, at=now, actor=caller)
    return message


async def reopened_by_customer(
    uow: UnitOfWork,
    ticket: Ticket,
    previous: TicketStatus,
    *,
    message_id: uuid.UUID,
    at: datetime,
    actor: str,
) -> None:
    """The ticket, now `reopened` (from `previous`), waits for an answer to the customer's message
    `message_id`: counted, on the timeline (unless it was reopened already) and `ticket.reopened`
    for routing, which gives it a slot again and resumes its SLA clock."""
    ticket.reopen_count += 1
    if previous != TicketStatus.REOPENED:
        await TicketRepository(uow.session).add_timeline(
            ticket.id, "status_changed", at=at, actor=actor, **{"from": previous, "to": TicketStatus.REOPENED}
        )
    uow.publish(
        TicketReopened(
            ticket_id=ticket.id,
            message_id=message_id,
            previous_status=previous,
            previous_agent_id=ticket.assignee_id,
            reopen_count=ticket.reopen_count,
            reopened_at=at,
        ),
        subject=str(ticket.id),
    )


async def _move_by_staff(
    uow: UnitOfWork, ticket_id: uuid.UUID, principal: Principal, target: TicketStatus, **details: Any
) -> tuple[Ticket, TicketStatus, datetime]:
    """Load and lock the ticket, check who may move it, move it and note it in the timeline."""
    ticket = await load_ticket(uow, ticket_id, for_update=True)
    _require_owner_or_lead(ticket, principal)
    _require_lead_for(ticket, target, principal)
    previous = _change_status(ticket, target)
    now = datetime.now(UTC)
    await TicketRepository(uow.session).add_timeline(
        ticket.id,
        "status_changed",
        at=now,
        actor=principal.subject,
        **{"from": previous, "to": target},
        **details,
    )
    return ticket, previous, now


async def _committed(uow: UnitOfWork, ticket: Ticket) -> TicketOut:
    out = TicketOut.model_validate(ticket)
    await uow.commit()
    return out


async def start_work(uow: UnitOfWork, ticket_id: uuid.UUID, principal: Principal) -> TicketOut:
    ticket, _, _ = await _move_by_staff(uow, ticket_id, principal, TicketStatus.IN_PROGRESS)
    return await _committed(uow, ticket)


async def resolve(
    uow: UnitOfWork, ticket_id: uuid.UUID, body: ResolveRequest, principal: Principal
) -> TicketOut:
    ticket, _, now = await _move_by_staff(uow, ticket_id, principal, TicketStatus.RESOLVED, note=body.note)
    ticket.resolution_count += 1
    ticket.resolved_at = now
    # The timeline keeps the note as written for staff; the event, read by every service, goes
    # without the customer's contacts an agent may have copied into it.
    note = body.note
    if note is not None:
        customer = await uow.session.get_one(Customer, ticket.customer_id)
        note = redact_to_fit(note, _RESOLUTION_NOTE_LIMIT, customer.email, customer.phone)
    uow.publish(
        TicketResolved(
            ticket_id=ticket.id,
            resolved_by=principal.user_id,
            agent_id=ticket.assignee_id,
            domain=body.domain,
            category=body.category,
            resolution_count=ticket.resolution_count,
            note=note,
            resolved_at=now,
        ),
        subject=str(ticket.id),
    )
    return await _committed(uow, ticket)


async def _require_no_open_complaint_case(uow: UnitOfWork, ticket: Ticket) -> None:
    """A closed ticket takes no more customer messages, so a complaint stays open until its case
    file is archived (which waits for a result). Complaints from before case files have none."""
    if ticket.kind != TicketKind.COMPLAINT:
        return
    archived = await uow.session.scalar(
        select(ComplaintCase.archived).where(ComplaintCase.ticket_id == ticket.id)
    )
    if archived is False:
        raise ComplaintCaseOpen(
            f"Ticket {ticket.number} is a complaint whose case file is not archived: resolve the ticket, "
            "record the result and archive the case file first",
        )


async def close(uow: UnitOfWork, ticket_id: uuid.UUID, body: CloseRequest, principal: Principal) -> TicketOut:
    # Who may close and whether the status allows it are answered first; the move is rolled back
    # with the request if the complaint's case file is still open.
    ticket, previous, now = await _move_by_staff(
        uow, ticket_id, principal, TicketStatus.CLOSED, reason=body.reason
    )
    await _require_no_open_complaint_case(uow, ticket)
    ticket.closed_at = now
    uow.publish(
        TicketClosed(
            ticket_id=ticket.id,
            reason=CloseReason(body.reason),
            previous_status=previous,
            closed_by=principal.user_id,
            closed_at=now,
        ),
        subject=str(ticket.id),
    )
    return await _committed(uow, ticket)


async def close_for_inactivity(uow: UnitOfWork, ticket: Ticket, *, at: datetime, after_days: int) -> None:
    """Close a ticket the customer left without a reply since its answer or resolution.

    The caller holds the ticket's lock and checked it is due. The system closes it, so the
    event names nobody in `closed_by`.
    """
    previous = _change_status(ticket, TicketStatus.CLOSED)
    ticket.closed_at = at
    await TicketRepository(uow.session).add_timeline(
        ticket.id,
        "status_changed",
        at=at,
        actor="intake",
        **{"from": previous, "to": TicketStatus.CLOSED},
        reason=CloseReason.AUTO_NO_REPLY,
        after_days=after_days,
    )
    uow.publish(
        TicketClosed(
            ticket_id=ticket.id,
            reason=CloseReason.AUTO_NO_REPLY,
            previous_status=previous,
            closed_by=None,
            closed_at=at,
        ),
        subject=str(ticket.id),
    )


# What a channel integration (and so possibly the customer) may see of a ticket's history:
# the conversation and the status, never internal notes, reviews, transfers, collaborators or
# who did what. It holds what the customer sent, so message entries carry no text for it.
CUSTOMER_VISIBLE_KINDS = frozenset({"created", "message", "status_changed", "answer_delivered", "rated"})
CUSTOMER_VISIBLE_DATA = frozenset(
    {"status", "channel", "from", "to", "direction", "author", "message_id", "score"}
)


@dataclass(frozen=True)
class TimelinePage:
    items: list[TimelineItem]
    next_cursor: str | None


def timeline_cursor(seq: int) -> str:
    """An opaque cursor (URL-safe, as the lists' cursors) for the entries after `seq`."""
    return base64.urlsafe_b64encode(orjson.dumps([seq])).decode().rstrip("=")


def _after_seq(cursor: str) -> int:
    try:
        [seq] = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidCursor("The cursor is malformed; start again without it") from exc
    if type(seq) is not int or not 0 <= seq < 2**63:  # a bool is an int too
        raise InvalidCursor("The cursor is malformed; start again without it")
    return seq


async def timeline(
    uow: UnitOfWork,
    ticket_id: uuid.UUID,
    principal: Principal,
    *,
    limit: int = TIMELINE_LIMIT,
    cursor: str | None = None,
) -> TimelinePage:
    """A page of the ticket's history in the order it was written (`seq`), from after `cursor`.

    Staff see each customer message's text and attachments with it (the customer's contacts
    masked for the roles that see them masked); a page ends early once its bodies reach
    `TIMELINE_BODY_CHARS`. Channels see only the customer-facing kinds, without text.
    """
    ticket = await load_ticket(uow, ticket_id)
    staff = principal.has_any(STAFF_ROLES)
    stmt = select(TimelineEntry).where(TimelineEntry.ticket_id == ticket_id)
    if not staff:
        stmt = stmt.where(TimelineEntry.kind.in_(CUSTOMER_VISIBLE_KINDS))
    if cursor is not None:
        stmt = stmt.where(TimelineEntry.seq > _after_seq(cursor))
    entries = (await uow.session.scalars(stmt.order_by(TimelineEntry.seq).limit(limit + 1))).all()
    more = len(entries) > limit
    items = [TimelineItem.model_validate(e) for e in entries[:limit]]
    if staff:
        items, cut = await _with_message_text(uow, ticket, items, principal)
        more = more or cut
    else:
        items = [
            item.model_copy(
                update={
                    "actor": None,
                    "data": {k: v for k, v in item.data.items() if k in CUSTOMER_VISIBLE_DATA},
                }
            )
            for item in items
        ]
    return TimelinePage(items, timeline_cursor(items[-1].seq) if more and items else None)


def _message_id(item: TimelineItem) -> uuid.UUID | None:
    if item.kind != "message" or not isinstance(raw := item.data.get("message_id"), str):
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


async def _with_message_text(
    uow: UnitOfWork, ticket: Ticket, items: list[TimelineItem], principal: Principal
) -> tuple[list[TimelineItem], bool]:
    """The message entries with the message's text, channel and attachments; True when the page
    was cut short where its bodies reach `TIMELINE_BODY_CHARS` (never before its first entry)."""
    ids = {m for m in map(_message_id, items) if m is not None}
    if not ids:
        return items, False
    lengths: dict[uuid.UUID | None, int] = {
        message_id: length
        for message_id, length in await uow.session.execute(
            select(Message.id, func.char_length(Message.body)).where(Message.id.in_(ids))
        )
    }
    end, chars = len(items), 0
    for n, item in enumerate(items):
        chars += lengths.get(_message_id(item), 0)
        if chars > TIMELINE_BODY_CHARS and n > 0:
            end = n
            break
    shown = {m for m in map(_message_id, items[:end]) if m in lengths}
    messages: dict[uuid.UUID | None, Message] = {
        m.id: m for m in await uow.session.scalars(select(Message).where(Message.id.in_(shown)))
    }
    attachments: defaultdict[uuid.UUID | None, list[Attachment]] = defaultdict(list)
    for attachment in await uow.session.scalars(
        select(Attachment)
        .where(Attachment.message_id.in_(shown))
        .order_by(Attachment.created_at, Attachment.id)
    ):
        attachments[attachment.message_id].append(attachment)
    readable = await _as_readable_by(uow, ticket, principal)
    with_text = []
    for item in items[:end]:
        if (message := messages.get(_message_id(item))) is not None:
            item = item.model_copy(
                update={
                    "data": {
                        **item.data,
                        "channel": message.channel,
                        "body": readable(message.body),
                        "attachments": [
                            {
                                "id": str(a.id),
                                "name": readable(a.name),
                                "content_type": a.content_type,
                                "size_bytes": a.size_bytes,
                            }
                            for a in attachments[message.id]
                        ],
                    }
                }
            )
        with_text.append(item)
    return with_text, end < len(items)


async def _as_readable_by(uow: UnitOfWork, ticket: Ticket, principal: Principal) -> Callable[[str], str]:
    """Customer text as `principal` may read it: as written for the roles that see the customer's
    contact data unmasked; for the others without the customer's email and phone (and any other),
    as intake's events carry such text."""
    # Imported here: `privacy` imports the email channel, which imports this module.
    from intake_service.privacy import UNMASKED_ROLES

    if principal.has_any(UNMASKED_ROLES):
        return lambda text: text
    customer = await uow.session.get_one(Customer, ticket.customer_id)
    email, phone = customer.email, customer.phone
    return lambda text: redact_contacts(text, email, phone)
