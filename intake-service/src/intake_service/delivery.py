"""Delivering approved answers: recorded on `answer.published`, sent by a worker, retried until accepted.

The handler of `answer.published` stores the outbound message and a pending
delivery in one transaction (so an approved answer is never lost), once per answer
version: the same version published again under a new event id changes nothing.
The worker runs up to `INTAKE_DELIVERY_CONCURRENCY` attempts at once, each claiming a due
delivery of its own right before it sends it (`FOR UPDATE SKIP LOCKED`, safe with several
attempts and several replicas) with a token of its own and a claim that outlasts a send:
a webhook that hangs for its whole timeout holds one attempt, not every answer. Fresh
deliveries (never attempted) are claimed before retries, so a backlog of retries to a dead
callback cannot starve new answers. An attempt sends only while the delivery is still
pending and still its own, outside any transaction, and records the outcome only under
that same condition — an attempt whose claim ran out and was taken over records nothing,
so an answer is not sent twice and a late failure never overwrites a delivery. Each
attempt runs under the correlation id of its `answer.published` and as a child of its
trace (both stored on the delivery), which its events and the webhook carry. Once the channel
accepted, the ticket is answered and `ticket.answer_delivered` emitted — the first
response for SLAs.
Temporary failures back off exponentially up to a cap and go on at that pace until the
delivery has been pending for `INTAKE_DELIVERY_GIVE_UP_AFTER_SECONDS`; permanent ones
(and deliveries given up) are marked failed on the ticket's timeline, where a lead may
retry them (`retry_failed_delivery`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import ColumnElement, exists, func, select, update

from helpdesk_shared.chassis.app import ServiceRuntime
from helpdesk_shared.chassis.logging import (
    correlated,
    correlation_id_var,
    get_logger,
    traced,
    traceparent_var,
)
from helpdesk_shared.chassis.problems import Conflict, NotFound
from helpdesk_shared.chassis.trace_context import continue_trace
from helpdesk_shared.chassis.uow import UnitOfWork, UnitOfWorkFactory
from helpdesk_shared.contracts.enums import Channel, MessageAuthor, TicketStatus
from helpdesk_shared.contracts.intake import TicketAnswerDelivered
from helpdesk_shared.contracts.review import AnswerPublished
from intake_service import workflow
from intake_service.channels import (
    AnswerSender,
    ChannelSender,
    DeliveryError,
    OutboundAnswer,
    SmtpSender,
    WebhookSender,
    new_message_id,
)
from intake_service.domain.lifecycle import status_after_delivery
from intake_service.domain.privacy import redact_contacts
from intake_service.followups import unanswered_follow_up
from intake_service.models import Customer, Delivery, EmailThreadId, Message, Ticket
from intake_service.repository import TicketRepository, load_ticket
from intake_service.settings import IntakeSettings

log = get_logger(__name__)

# Claims per attempt slot in one pass (see `pass_size`).
BATCH = 10
# A claimed delivery is not due again for at least this long (or four send timeouts); a send may
# take half of it, leaving the rest to record the outcome before anyone else may claim it.
_MIN_CLAIM_SECONDS = 60.0
# 2 ** this is far past any cap: the doubling stops before its float could overflow a timedelta.
_MAX_DOUBLINGS = 40


class DeliveryNotFound(NotFound):
    slug, title = "delivery-not-found", "Delivery not found"


class DeliveryNotFailed(Conflict):
    slug, title = "delivery-not-failed", "Only a failed delivery can be retried"


class DeliveryTicketClosed(Conflict):
    slug, title = "ticket-closed", "The ticket is closed"


# The reason of a delivery that found its ticket closed when its turn came: not sent, failed.
TICKET_CLOSED = "ticket_closed"


async def _not_delivered_to_closed_ticket(
    repo: TicketRepository, ticket_id: uuid.UUID, *, at: datetime, actor: str, **answer: Any
) -> None:
    """The timeline's word that an answer was not sent because its ticket is closed — whether it
    was published after the closing or its delivery's turn came after it (``answer``: the answer's
    id and version, and the delivery's ids when there is one)."""
    await repo.add_timeline(
        ticket_id, "answer_not_delivered", at=at, actor=actor, reason=TICKET_CLOSED, **answer
    )


async def record_published_answer(uow: UnitOfWork, event: AnswerPublished, *, mail_domain: str) -> None:
    ticket = await load_ticket(uow, event.ticket_id, for_update=True)
    # Under the ticket's lock, so two publishes of one version (an answer belongs to one ticket)
    # take turns and the second sees the first; the unique index stands behind this.
    if await uow.session.scalar(
        select(
            exists().where(
                Delivery.answer_id == event.answer_id, Delivery.answer_version == event.answer_version
            )
        )
    ):
        log.info(
            "answer_version_already_published",
            ticket_id=str(ticket.id),
            answer_id=str(event.answer_id),
            answer_version=event.answer_version,
        )
        return  # handled (the consumer's commit keeps its id in the inbox), nothing else changes
    repo = TicketRepository(uow.session)
    now = datetime.now(UTC)
    if ticket.status == TicketStatus.CLOSED.value:
        # Closed while the answer was in review (a lead closing spam or a duplicate): it is not
        # sent. The timeline says so, and a new ticket or a lead's own message is the way on.
        await _not_delivered_to_closed_ticket(
            repo,
            ticket.id,
            at=now,
            actor="review",
            answer_id=event.answer_id,
            answer_version=event.answer_version,
        )
        await uow.commit()
        return
    email_message_id = new_message_id(mail_domain).strip("<>")
    message = await repo.add_message(
        Message(
            id=uuid.uuid4(),
            ticket_id=ticket.id,
            direction="outbound",
            author=MessageAuthor.AGENT,
            channel=ticket.channel,
            body=event.body,
            email_message_id=email_message_id,
            created_at=now,
        )
    )
    uow.session.add(EmailThreadId(message_id=email_message_id, ticket_id=ticket.id))
    uow.session.add(
        Delivery(
            id=uuid.uuid4(),
            ticket_id=ticket.id,
            message_id=message.id,
            answer_id=event.answer_id,
            answer_version=event.answer_version,
            agent_id=event.author_id,
            channel=ticket.channel,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            pending_since=now,
            correlation_id=correlation_id_var.get(),
            traceparent=traceparent_var.get(),
        )
    )
    await repo.add_timeline(
        ticket.id,
        "answer_published",
        at=now,
        actor="review",
        message_id=message.id,
        answer_id=event.answer_id,
        answer_version=event.answer_version,
        reviewer_id=event.reviewer_id,
    )
    await uow.commit()


async def _outbound(uow: UnitOfWork, delivery: Delivery) -> OutboundAnswer:
    ticket = await uow.session.get_one(Ticket, delivery.ticket_id)
    message = await uow.session.get_one(Message, delivery.message_id)
    customer = await uow.session.get_one(Customer, ticket.customer_id)
    # Everything already in the thread (the customer's original email, their replies, our earlier
    # answers), oldest first, so the customer's mail client threads this answer under them.
    earlier = await uow.session.scalars(
        select(EmailThreadId.message_id)
        .where(EmailThreadId.ticket_id == ticket.id, EmailThreadId.message_id != message.email_message_id)
        .order_by(EmailThreadId.created_at, EmailThreadId.message_id)
    )
    return OutboundAnswer(
        delivery_id=delivery.id,
        ticket_id=ticket.id,
        ticket_number=ticket.number,
        ticket_subject=ticket.subject,
        channel=Channel(ticket.channel),
        message_id=message.id,
        email_message_id=message.email_message_id or "",
        references=tuple(m for m in earlier if m),
        body=message.body,
        answer_id=delivery.answer_id,
        answer_version=delivery.answer_version,
        to_email=customer.email,
        callback_url=ticket.callback_url,
    )


async def _delivered(uow: UnitOfWork, delivery: Delivery, now: datetime) -> None:
    ticket = await load_ticket(uow, delivery.ticket_id, for_update=True)
    first = not await uow.session.scalar(
        select(exists().where(Delivery.ticket_id == ticket.id, Delivery.status == "delivered"))
    )
    delivery.status, delivery.delivered_at = "delivered", now
    previous = TicketStatus(ticket.status)
    # The customer wrote after this answer (and every other delivered one) was written — while it
    # was in review, say: it never addressed that message, so the ticket is not answered but
    # reopened, as the message would have made it had it come after the delivery.
    follow_up = await unanswered_follow_up(uow, ticket.id)
    ticket.status = status_after_delivery(previous, unanswered_follow_up=follow_up is not None)
    repo = TicketRepository(uow.session)
    await repo.add_timeline(
        ticket.id,
        "answer_delivered",
        at=now,
        actor="intake",
        message_id=delivery.message_id,
        channel=delivery.channel,
        attempts=delivery.attempts,
    )
    if ticket.status != previous and ticket.status != TicketStatus.REOPENED:
        await repo.add_timeline(
            ticket.id, "status_changed", at=now, actor="intake", **{"from": previous, "to": ticket.status}
        )
    # First the delivery (routing frees the agent's slot and pauses the resolution clock), then
    # the reopening (a slot again, the clock resumed): one key, one topic, in this order.
    uow.publish(
        TicketAnswerDelivered(
            ticket_id=ticket.id,
            answer_id=delivery.answer_id,
            answer_version=delivery.answer_version,
            message_id=delivery.message_id,
            channel=Channel(delivery.channel),
            agent_id=delivery.agent_id,
            first_response=first,
            attempts=delivery.attempts,
            delivered_at=now,
        ),
        subject=str(ticket.id),
    )
    if ticket.status == TicketStatus.REOPENED and follow_up is not None:
        await workflow.reopened_by_customer(
            uow, ticket, previous, message_id=follow_up, at=now, actor="intake"
        )


def retry_backoff(attempts: int, settings: IntakeSettings) -> timedelta:
    """The pause after the `attempts`-th failed attempt: doubling from the first, capped."""
    doublings = min(max(attempts - 1, 0), _MAX_DOUBLINGS)
    seconds = settings.delivery_backoff_seconds * 2**doublings
    return timedelta(seconds=min(seconds, settings.delivery_max_backoff_seconds))


def gives_up_at(delivery: Delivery, settings: IntakeSettings) -> datetime:
    """When a delivery still failing is marked failed: once pending this long."""
    since = delivery.pending_since or delivery.created_at
    return since + timedelta(seconds=settings.delivery_give_up_after_seconds)


async def _failed(
    uow: UnitOfWork, delivery: Delivery, error: DeliveryError, now: datetime, settings: IntakeSettings
) -> None:
    # A server's refusal names the mailbox it refused ("<lin@example.com>: User unknown"): kept,
    # and shown in the timeline to roles that see contact data masked, it must not carry it.
    # (Locked, as every path writing the ticket's timeline does: its entries commit in `seq` order.)
    ticket = await load_ticket(uow, delivery.ticket_id, for_update=True)
    customer = await uow.session.get_one(Customer, ticket.customer_id)
    delivery.last_error = redact_contacts(str(error), customer.email, customer.phone)[:2000]
    if error.reason == TICKET_CLOSED:
        # Closed while the delivery waited for its turn (a lead, auto-close): not sent, as an
        # answer published for a closed ticket is not (`record_published_answer`).
        delivery.status = "failed"
        await _not_delivered_to_closed_ticket(
            TicketRepository(uow.session),
            ticket.id,
            at=now,
            actor="intake",
            answer_id=delivery.answer_id,
            answer_version=delivery.answer_version,
            message_id=delivery.message_id,
            delivery_id=delivery.id,
        )
        log.info("answer_not_delivered_ticket_closed", ticket_id=str(ticket.id), delivery_id=str(delivery.id))
        return
    if error.permanent or now >= gives_up_at(delivery, settings):
        delivery.status = "failed"
        await TicketRepository(uow.session).add_timeline(
            delivery.ticket_id,
            "delivery_failed",
            at=now,
            actor="intake",
            message_id=delivery.message_id,
            delivery_id=delivery.id,
            attempts=delivery.attempts,
            error=delivery.last_error,
            reason=error.reason or ("permanent" if error.permanent else "gave_up"),
        )
        log.warning(
            "answer_delivery_failed",
            ticket_id=str(delivery.ticket_id),
            delivery_id=str(delivery.id),
            attempts=delivery.attempts,
            permanent=error.permanent,
            reason=error.reason,
        )
        return
    delivery.next_attempt_at = now + retry_backoff(delivery.attempts, settings)


@dataclass(frozen=True)
class _Claim:
    delivery_id: uuid.UUID
    ticket_id: uuid.UUID
    token: uuid.UUID
    until: datetime
    correlation_id: str | None
    traceparent: str | None


def _claim_seconds(settings: IntakeSettings) -> float:
    return max(_MIN_CLAIM_SECONDS, 4 * settings.delivery_timeout_seconds)


def pass_size(settings: IntakeSettings) -> int:
    """How many deliveries one pass claims at most: `BATCH` for each of its attempt slots."""
    return BATCH * settings.delivery_concurrency


async def deliver_due(uow_factory: UnitOfWorkFactory, sender: AnswerSender, settings: IntakeSettings) -> int:
    """One pass over the deliveries that are due (up to `pass_size`); returns how many were claimed.

    `INTAKE_DELIVERY_CONCURRENCY` attempts run at once, each in a loop of its own: a delivery is
    claimed right before it is sent, then sent and recorded on its own, and the attempt that is
    done claims the next. No transaction (and no ticket lock) is held while a channel takes its
    time, and each attempt uses sessions of its own, one at a time. An answer the channel took is
    recorded at once, so a pass that ends early (the service stopping, a database error) sends
    nothing twice: an attempt that fails so stops the others from claiming more, those already
    sending finish and record their outcome, then the error is raised.
    """
    limit = pass_size(settings)
    claimed = 0
    stopping = False

    async def attempts() -> None:
        nonlocal claimed, stopping
        while not stopping and claimed < limit:
            claimed += 1  # counted before the claim's await: the slots together stay within `limit`
            try:
                claim = await _claim_next(uow_factory, settings)
                if claim is None:
                    claimed -= 1
                    return
                with correlated(claim.correlation_id), traced(continue_trace(claim.traceparent)):
                    await _attempt(uow_factory, sender, settings, claim)
            except BaseException:
                stopping = True
                raise

    # Each slot runs in a task of its own (its own copy of the context: its correlation id and
    # trace are its own). Cancelling the pass cancels every slot and waits for them.
    outcomes = await asyncio.gather(
        *(attempts() for _ in range(settings.delivery_concurrency)), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return claimed


def _due(now: datetime, *criteria: ColumnElement[bool]) -> ColumnElement[uuid.UUID]:
    return (
        select(Delivery.id)
        .where(Delivery.status == "pending", Delivery.next_attempt_at <= now, *criteria)
        .order_by(Delivery.next_attempt_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


async def _claim_next(uow_factory: UnitOfWorkFactory, settings: IntakeSettings) -> _Claim | None:
    """Take the next due delivery (`SKIP LOCKED`: one attempt each), counting the attempt now.

    A fresh one (never attempted: `ix_deliveries_due_fresh`) before any retry, each kind oldest
    due first (`ix_deliveries_due`): retries to a dead callback, overdue for days, would otherwise
    always come first. (PostgreSQL evaluates COALESCE's arguments lazily: the retries are looked
    for only when no fresh one is due.)
    It gets a token of its own and is not due again until the claim runs out, for longer than a
    send may take: if this replica stops mid-send, another sends it once the claim has run out.
    """
    now = datetime.now(UTC)
    until = now + timedelta(seconds=_claim_seconds(settings))
    token = uuid.uuid4()
    due = func.coalesce(_due(now, Delivery.attempts == 0), _due(now))
    async with uow_factory() as uow:
        row = (
            await uow.session.execute(
                update(Delivery)
                .where(Delivery.id == due)
                .values(
                    attempts=Delivery.attempts + 1,
                    claim_token=token,
                    claimed_until=until,
                    next_attempt_at=until,
                )
                .returning(Delivery.id, Delivery.ticket_id, Delivery.correlation_id, Delivery.traceparent)
                .execution_options(synchronize_session=False)
            )
        ).one_or_none()
        await uow.commit()
    if row is None:
        return None
    return _Claim(
        delivery_id=row.id,
        ticket_id=row.ticket_id,
        token=token,
        until=until,
        correlation_id=row.correlation_id,
        traceparent=row.traceparent,
    )


def _held(claim: _Claim) -> tuple[ColumnElement[bool], ...]:
    """The delivery is still pending and still this claim's."""
    return (
        Delivery.id == claim.delivery_id,
        Delivery.status == "pending",
        Delivery.claim_token == claim.token,
    )


async def _attempt(
    uow_factory: UnitOfWorkFactory, sender: AnswerSender, settings: IntakeSettings, claim: _Claim
) -> None:
    failure: DeliveryError | None = None
    try:
        async with uow_factory() as uow:
            delivery = await uow.session.scalar(select(Delivery).where(*_held(claim)))
            if delivery is None:
                log.info("delivery_claim_lost_before_send", delivery_id=str(claim.delivery_id))
                return
            # Closed while the delivery waited (a webhook down for days, say): nothing is sent.
            if await uow.session.scalar(select(Ticket.status).where(Ticket.id == claim.ticket_id)) == (
                TicketStatus.CLOSED
            ):
                raise DeliveryError("the ticket is closed", permanent=True, reason=TICKET_CLOSED)
            answer = await _outbound(uow, delivery)
        # The send ends within the first half of the claim, whatever the channel does: the other
        # half is left to record the outcome before the delivery is anyone else's to claim. The
        # SMTP adapter's thread cannot outlive it: its conversation ends by its own deadline (one
        # send timeout, at most a quarter of the claim, from now), and a timed-out `send` returns
        # only once the thread has ended — so nothing reaches the server once the claim is cleared.
        budget = (claim.until - datetime.now(UTC)).total_seconds() - _claim_seconds(settings) / 2
        if budget <= 0:
            log.warning("delivery_claim_ran_out_before_send", delivery_id=str(claim.delivery_id))
            return
        async with asyncio.timeout(budget):
            await sender.send(answer)
    except DeliveryError as error:
        failure = error
    except TimeoutError:
        failure = DeliveryError("the channel did not take the answer in time")
    except Exception as exc:  # an adapter bug still counts as an attempt, never loops hot
        failure = DeliveryError(repr(exc))
    async with uow_factory() as uow:
        # The ticket before the delivery, as every path locking both (`retry_failed_delivery`,
        # `record_published_answer`) does: none holds a delivery while it waits for the ticket.
        await load_ticket(uow, claim.ticket_id, for_update=True)
        delivery = await uow.session.scalar(select(Delivery).where(*_held(claim)).with_for_update())
        if delivery is None:
            # Its claim ran out and another attempt took it over (and may have delivered it): the
            # outcome is that attempt's to record.
            log.info(
                "delivery_outcome_skipped",
                delivery_id=str(claim.delivery_id),
                outcome="delivered" if failure is None else "failed",
            )
            return
        delivery.claim_token = delivery.claimed_until = None
        now = datetime.now(UTC)
        if failure is None:
            await _delivered(uow, delivery, now)
        else:
            await _failed(uow, delivery, failure, now, settings)
        await uow.commit()


async def ticket_deliveries(uow: UnitOfWork, ticket_id: uuid.UUID) -> Sequence[Delivery]:
    """The ticket's deliveries, oldest first (a 404 problem for an unknown ticket)."""
    await load_ticket(uow, ticket_id)
    return (
        await uow.session.scalars(
            select(Delivery).where(Delivery.ticket_id == ticket_id).order_by(Delivery.created_at, Delivery.id)
        )
    ).all()


async def retry_failed_delivery(
    uow: UnitOfWork, ticket_id: uuid.UUID, delivery_id: uuid.UUID, *, actor: str
) -> Delivery:
    """A failed delivery pending again, due now with its attempts reset and the give-up age
    counted afresh; on the ticket's timeline. 404 for an unknown one (or another ticket's), 409
    unless it failed or when the ticket is closed (nothing is sent to a closed ticket)."""
    # Locked (the ticket before the delivery, as everywhere): the timeline entry commits in order.
    ticket = await load_ticket(uow, ticket_id, for_update=True)
    delivery = await uow.session.scalar(
        select(Delivery).where(Delivery.id == delivery_id, Delivery.ticket_id == ticket_id).with_for_update()
    )
    if delivery is None:
        raise DeliveryNotFound(f"No delivery with id {delivery_id} on ticket {ticket_id}")
    if delivery.status != "failed":
        raise DeliveryNotFailed(
            f"The delivery is {delivery.status}: only a failed one can be retried", status=delivery.status
        )
    if ticket.status == TicketStatus.CLOSED:
        raise DeliveryTicketClosed(f"Ticket {ticket.number} is closed: its answers are not sent")
    now = datetime.now(UTC)
    previous_attempts = delivery.attempts
    delivery.status = "pending"
    delivery.attempts = 0
    delivery.next_attempt_at = delivery.pending_since = now
    delivery.claim_token = delivery.claimed_until = None
    await TicketRepository(uow.session).add_timeline(
        ticket_id,
        "delivery_retried",
        at=now,
        actor=actor,
        message_id=delivery.message_id,
        delivery_id=delivery.id,
        previous_attempts=previous_attempts,
    )
    await uow.commit()
    return delivery


async def delivery_worker(runtime: ServiceRuntime) -> None:
    """Background task of the intake service."""
    settings = runtime.settings
    assert isinstance(settings, IntakeSettings)
    if settings.delivery_max_attempts is not None:
        log.warning(
            "deprecated_setting_ignored",
            setting="INTAKE_DELIVERY_MAX_ATTEMPTS",
            instead="INTAKE_DELIVERY_GIVE_UP_AFTER_SECONDS",
        )
    # No pool limit (the attempts at once bound the connections): no attempt waits for the pool
    # behind others' hung sends, which would cost it its send timeout.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=settings.delivery_concurrency)
    async with httpx.AsyncClient(limits=limits) as client:
        sender = ChannelSender(SmtpSender(settings), WebhookSender(settings, client))
        while True:
            try:
                if await deliver_due(runtime.uow, sender, settings) >= pass_size(settings):
                    continue
            except Exception as exc:  # a database hiccup must not end deliveries for good
                log.warning("delivery_pass_failed", error=repr(exc))
            await asyncio.sleep(settings.delivery_poll_seconds)
