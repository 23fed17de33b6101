"""Delivering approved answers: recorded on `answer.published`, sent by a worker, retried until accepted.

The handler of `answer.published` stores the outbound message and a pending
delivery in one transaction (so an approved answer is never lost); the worker
claims due deliveries with `FOR UPDATE SKIP LOCKED` (safe with several replicas),
sends each through the ticket's channel outside any transaction and, once the channel
accepted, marks the ticket answered and emits `ticket.answer_delivered` — the first
response for SLAs.
Failures back off exponentially and stay visible on the ticket's timeline.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import exists, select

from helpdesk_shared.chassis.app import ServiceRuntime
from helpdesk_shared.chassis.logging import correlated, correlation_id_var, get_logger
from helpdesk_shared.chassis.uow import UnitOfWork, UnitOfWorkFactory
from helpdesk_shared.contracts.enums import Channel, MessageAuthor, TicketStatus
from helpdesk_shared.contracts.intake import TicketAnswerDelivered
from helpdesk_shared.contracts.review import AnswerPublished
from intake_service.channels import (
    AnswerSender,
    ChannelSender,
    DeliveryError,
    OutboundAnswer,
    SmtpSender,
    WebhookSender,
    new_message_id,
)
from intake_service.domain.lifecycle import can_transition
from intake_service.domain.privacy import redact_contacts
from intake_service.models import Customer, Delivery, EmailThreadId, Message, Ticket
from intake_service.repository import TicketRepository, load_ticket
from intake_service.settings import IntakeSettings

log = get_logger(__name__)

BATCH = 10
MAX_BACKOFF = timedelta(minutes=10)
# A claimed delivery is not due again for at least this long (or four send timeouts).
_MIN_CLAIM_SECONDS = 60.0


async def record_published_answer(uow: UnitOfWork, event: AnswerPublished, *, mail_domain: str) -> None:
    ticket = await load_ticket(uow, event.ticket_id, for_update=True)
    repo = TicketRepository(uow.session)
    now = datetime.now(UTC)
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
            correlation_id=correlation_id_var.get(),
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
    if can_transition(previous, TicketStatus.ANSWERED):
        ticket.status = TicketStatus.ANSWERED
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
    if ticket.status != previous:
        await repo.add_timeline(
            ticket.id, "status_changed", at=now, actor="intake", **{"from": previous, "to": ticket.status}
        )
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


async def _failed(
    uow: UnitOfWork, delivery: Delivery, error: DeliveryError, now: datetime, settings: IntakeSettings
) -> None:
    # A server's refusal names the mailbox it refused ("<lin@example.com>: User unknown"): kept,
    # and shown in the timeline to roles that see contact data masked, it must not carry it.
    ticket = await load_ticket(uow, delivery.ticket_id)
    customer = await uow.session.get_one(Customer, ticket.customer_id)
    delivery.last_error = redact_contacts(str(error), customer.email, customer.phone)[:2000]
    if error.permanent or delivery.attempts >= settings.delivery_max_attempts:
        delivery.status = "failed"
        await TicketRepository(uow.session).add_timeline(
            delivery.ticket_id,
            "delivery_failed",
            at=now,
            actor="intake",
            message_id=delivery.message_id,
            attempts=delivery.attempts,
            error=delivery.last_error,
        )
        log.warning("answer_delivery_failed", ticket_id=str(delivery.ticket_id), attempts=delivery.attempts)
        return
    backoff = timedelta(seconds=settings.delivery_backoff_seconds * 2 ** (delivery.attempts - 1))
    delivery.next_attempt_at = now + min(backoff, MAX_BACKOFF)


async def deliver_due(uow_factory: UnitOfWorkFactory, sender: AnswerSender, settings: IntakeSettings) -> int:
    """One pass over the deliveries that are due; returns how many were attempted.

    Each delivery is claimed, sent and recorded on its own: no transaction (and no ticket lock)
    is held while a channel takes its time, and an answer the channel took is recorded at once,
    so a pass that ends early (the service stopping, a database error) sends nothing twice.
    """
    claimed = await _claim_due(uow_factory, settings)
    for delivery_id, correlation_id in claimed:
        with correlated(correlation_id):
            try:
                async with uow_factory() as uow:
                    answer = await _outbound(uow, await uow.session.get_one(Delivery, delivery_id))
                await sender.send(answer)
            except DeliveryError as error:
                failure: DeliveryError | None = error
            except Exception as exc:  # an adapter bug still counts as an attempt, never loops hot
                failure = DeliveryError(repr(exc))
            else:
                failure = None
            async with uow_factory() as uow:
                delivery = await uow.session.get_one(Delivery, delivery_id, with_for_update=True)
                if failure is None:
                    await _delivered(uow, delivery, datetime.now(UTC))
                else:
                    await _failed(uow, delivery, failure, datetime.now(UTC), settings)
                await uow.commit()
    return len(claimed)


async def _claim_due(
    uow_factory: UnitOfWorkFactory, settings: IntakeSettings
) -> list[tuple[uuid.UUID, str | None]]:
    """Take the due deliveries (`SKIP LOCKED`: one replica each), counting the attempt now.

    Until its outcome is recorded a claimed delivery is not due again for longer than a send may
    take: if this replica stops mid-send, another sends it once that claim has run out.
    """
    now = datetime.now(UTC)
    claim_until = now + timedelta(seconds=max(_MIN_CLAIM_SECONDS, 4 * settings.delivery_timeout_seconds))
    async with uow_factory() as uow:
        due = (
            await uow.session.scalars(
                select(Delivery)
                .where(Delivery.status == "pending", Delivery.next_attempt_at <= now)
                .order_by(Delivery.next_attempt_at)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for delivery in due:
            delivery.attempts += 1
            delivery.next_attempt_at = claim_until
        claimed = [(d.id, d.correlation_id) for d in due]
        await uow.commit()
    return claimed


async def delivery_worker(runtime: ServiceRuntime) -> None:
    """Background task of the intake service."""
    settings = runtime.settings
    assert isinstance(settings, IntakeSettings)
    async with httpx.AsyncClient() as client:
        sender = ChannelSender(SmtpSender(settings), WebhookSender(settings, client))
        while True:
            try:
                if await deliver_due(runtime.uow, sender, settings) == BATCH:
                    continue
            except Exception as exc:  # a database hiccup must not end deliveries for good
                log.warning("delivery_pass_failed", error=repr(exc))
            await asyncio.sleep(settings.delivery_poll_seconds)
