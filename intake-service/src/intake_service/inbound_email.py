"""The email channel: one raw RFC 5322 message in, a ticket created or threaded, or ignored.

Every message is archived first (`inbound_emails`), whatever happens next, so nothing
received is ever lost and a message that cannot be read stays available for inspection.
Replies are threaded by the Message-IDs we sent or received (In-Reply-To / References)
or by the ticket number in the subject; auto-replies and bounces never create tickets.
A redelivered message (same Message-ID) answers as the first delivery did, even when the
deliveries race each other. A reply to a closed ticket starts a new ticket (closed tickets
are final) that points back to the closed one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import func, select

from helpdesk_shared.chassis.logging import get_logger
from helpdesk_shared.chassis.problems import InvalidInput
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import Channel, TicketKind, TicketStatus
from intake_service.domain.email import (
    ParsedEmail,
    UnparseableEmail,
    classify_with_reason,
    normalize_message_id,
    parse_email,
    thread_keys,
    ticket_number_in_subject,
)
from intake_service.domain.privacy import EMAIL_EXTERNAL_ID, UNKNOWN_SENDER, sender_hash
from intake_service.models import Customer, EmailThreadId, InboundEmail, Ticket
from intake_service.repository import TicketRepository
from intake_service.schemas import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    AttachmentIn,
    CustomerIn,
    MessageCreate,
    TicketCreate,
)
from intake_service.service import stage_ticket
from intake_service.workflow import stage_customer_message

CALLER = "email-channel"
MAX_SUBJECT = 300
MAX_BODY = 20_000
FOLLOW_UP_TAG = "follow-up-of:"
# First key ("EMLI") of the two-key advisory lock taken per Message-ID: its own key space, so
# it cannot collide with the outbox relay's one-key lock or a future user of advisory locks.
_MESSAGE_ID_LOCK_SPACE = 0x454D4C49
# First key ("EMLS") of the lock on a sender's archived messages: erasure takes it too, so an
# email of the customer's being archived while they are erased is either erased or not yet begun.
_SENDER_LOCK_SPACE = 0x454D4C53
# Where a message the parser refused names its sender: the From header of the first header block
# (folded lines included), looked for in as much of the message as any header block needs.
_HEADER_BYTES = 64 * 1024
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FROM_HEADER = re.compile(rb"^from:((?:[^\r\n]|\r?\n[ \t])*)", re.IGNORECASE | re.MULTILINE)
_BRACKETED_ADDRESS = re.compile(r"<([^<>@\s]+@[^<>@\s]+)>")
_BARE_ADDRESS = re.compile(r"[^<>\"'()\s,;:@]+@[^<>\"'()\s,;:@]+")


class UnreadableEmail(InvalidInput):
    slug, title = "unreadable-email", "The message could not be read as an email"


log = get_logger(__name__)


@dataclass(frozen=True)
class InboundResult:
    outcome: str  # created | threaded | ignored
    ticket_id: uuid.UUID | None
    inbound_id: uuid.UUID
    reason: str | None = None


def _archive(
    uow: UnitOfWork,
    raw: bytes,
    message_id: str | None,
    outcome: str,
    reason: str | None,
    ticket_id: uuid.UUID | None = None,
    *,
    sender: str | None,
    thread_ticket_id: uuid.UUID | None = None,
) -> InboundEmail:
    """The archive row. `sender` (a `sender_hash`) and `thread_ticket_id` are how erasure finds
    a message that never reached a ticket: an auto-reply, a bounce, an unreadable message."""
    record = InboundEmail(
        id=uuid.uuid4(),
        message_id=message_id,
        outcome=outcome,
        reason=reason,
        ticket_id=ticket_id,
        size_bytes=len(raw),
        raw=raw,
        sender_hash=sender,
        thread_ticket_id=thread_ticket_id,
    )
    uow.session.add(record)
    return record


async def lock_sender(uow: UnitOfWork, digest: str | None) -> None:
    """Serialise archiving a sender's message with erasing that sender (until commit).

    Always the last lock either side takes, so it never closes a cycle with the ticket and
    customer locks taken before it.
    """
    if digest is not None:
        await uow.session.execute(
            select(func.pg_advisory_xact_lock(_SENDER_LOCK_SPACE, func.hashtext(digest)))
        )


def _sender_in_raw(raw: bytes) -> str | None:
    """The From address of a message the parser refused, found by pattern (best effort)."""
    head = raw[:_HEADER_BYTES]
    if blank := _BLANK_LINE.search(head):
        head = head[: blank.start()]
    header = _FROM_HEADER.search(head)
    if header is None:
        return None
    value = header.group(1).decode("utf-8", "replace")
    if bracketed := _BRACKETED_ADDRESS.search(value):
        return bracketed.group(1)
    bare = _BARE_ADDRESS.search(value)
    return bare.group() if bare else None


async def archive_unreadable(uow: UnitOfWork, raw: bytes, error: str) -> uuid.UUID:
    sender = sender_hash(_sender_in_raw(raw))
    await lock_sender(uow, sender)
    record = _archive(uow, raw, None, "rejected", error, sender=sender)
    await uow.commit()
    return record.id


async def _known_delivery(uow: UnitOfWork, message_id: str | None) -> InboundResult | None:
    """How an earlier delivery of this message was answered, if there was one.

    Mail gateways retry and deliver twice, sometimes at the same moment; without the lock both
    deliveries would miss each other's (uncommitted) archive row and both create a ticket. The
    transaction-scoped lock makes the second wait for the first to commit and then replay it.
    """
    if not message_id:
        return None
    await uow.session.execute(
        select(func.pg_advisory_xact_lock(_MESSAGE_ID_LOCK_SPACE, func.hashtext(message_id)))
    )
    earlier = await uow.session.scalar(
        select(InboundEmail)
        .where(InboundEmail.message_id == message_id, InboundEmail.outcome != "rejected")
        .order_by(InboundEmail.received_at)
        .limit(1)
    )
    if earlier is None:
        return None
    return InboundResult(earlier.outcome, earlier.ticket_id, earlier.id, "already received")


def _message_keys(ids: Iterable[str]) -> list[str]:
    """The Message-IDs as stored in `email_thread_ids`, each once, in the order given."""
    return list(dict.fromkeys(key for key in map(normalize_message_id, ids) if key))


async def _thread_target(uow: UnitOfWork, parsed: ParsedEmail, number_prefix: str) -> Ticket | None:
    """The ticket a reply belongs to (locked), or None for a new conversation.

    A ticket number in the subject threads a message only when it comes from the ticket's customer.
    An open ticket wins over a closed one: once a reply to a closed ticket opened a follow-up,
    the customer's next replies still carry the closed ticket's Message-IDs in References and
    must land in the follow-up, not open yet another ticket. Otherwise the most specific key
    wins (In-Reply-To, then References from the newest).
    """
    keys = _message_keys(thread_keys(parsed))
    if keys:
        known = (
            await uow.session.execute(
                select(EmailThreadId.message_id, EmailThreadId.ticket_id, Ticket.status)
                .join(Ticket, Ticket.id == EmailThreadId.ticket_id)
                .where(EmailThreadId.message_id.in_(keys))
            )
        ).all()
        if known:
            best = min(known, key=lambda row: (row.status == TicketStatus.CLOSED, keys.index(row.message_id)))
            return await TicketRepository(uow.session).get(best.ticket_id, for_update=True)
    number = ticket_number_in_subject(parsed.subject, number_prefix)
    if number and parsed.from_address:
        # Numbers are sequential, so anyone can guess one: only the ticket's own customer threads
        # by it (a reply to one of our Message-IDs, above, needs no such check).
        return (
            await uow.session.execute(
                select(Ticket)
                .join(Customer, Customer.id == Ticket.customer_id)
                .where(Ticket.number == number, func.lower(Customer.email) == parsed.from_address.lower())
                .with_for_update(of=Ticket)
            )
        ).scalar_one_or_none()
    return None


async def _referenced_ticket(uow: UnitOfWork, parsed: ParsedEmail, number_prefix: str) -> uuid.UUID | None:
    """The ticket a message that is not threaded refers to: a bounce encloses the answer we sent,
    an auto-reply answers it.

    Nothing is written into that ticket, so it is not locked for update; the key-share lock only
    makes an erasure of the ticket's customer wait for this message's archive row (or this message
    wait for the erasure), so the row cannot slip past it.
    """
    enclosed = (a.message_id for a in parsed.attachments if a.message_id)
    keys = _message_keys((*thread_keys(parsed), *enclosed))
    found = None
    if keys:
        rows = await uow.session.execute(
            select(EmailThreadId.message_id, EmailThreadId.ticket_id).where(
                EmailThreadId.message_id.in_(keys)
            )
        )
        known = {row.message_id: row.ticket_id for row in rows}
        found = next((known[k] for k in keys if k in known), None)
    if found is not None:
        query = select(Ticket.id).where(Ticket.id == found)
    elif number := ticket_number_in_subject(parsed.subject, number_prefix):
        query = select(Ticket.id).where(Ticket.number == number)
    else:
        return None
    ticket_id: uuid.UUID | None = await uow.session.scalar(query.with_for_update(key_share=True))
    return ticket_id


def _attachments(parsed: ParsedEmail, inbound_id: uuid.UUID) -> list[AttachmentIn]:
    """Metadata only: the bytes stay in the archived raw message, addressed by part number."""
    result = []
    for index, part in enumerate(parsed.attachments[:MAX_ATTACHMENTS]):
        content_type = part.content_type if "/" in part.content_type else "application/octet-stream"
        try:
            result.append(
                AttachmentIn(
                    name=(part.filename or f"attachment-{index + 1}")[:255],
                    content_type=content_type[:255],
                    size_bytes=min(part.size, MAX_ATTACHMENT_BYTES),
                    storage_key=f"inbound-email:{inbound_id}#{index}",
                )
            )
        except ValidationError:
            result.append(
                AttachmentIn(
                    name=f"attachment-{index + 1}",
                    content_type="application/octet-stream",
                    size_bytes=min(part.size, MAX_ATTACHMENT_BYTES),
                    storage_key=f"inbound-email:{inbound_id}#{index}",
                )
            )
    return result


def _customer(parsed: ParsedEmail) -> CustomerIn:
    address = (parsed.from_address or "").strip().lower()
    external = (
        f"{EMAIL_EXTERNAL_ID}{address}"[:200]
        if address
        else f"{EMAIL_EXTERNAL_ID}{UNKNOWN_SENDER}{parsed.message_id or uuid.uuid4()}"
    )
    try:
        return CustomerIn(
            external_id=external,
            name=(parsed.from_name or None) and parsed.from_name[:200],
            email=address or None,
        )
    except ValidationError:  # an address our stricter contact rules refuse: keep it only as the id
        return CustomerIn(external_id=external[:200])


def _ticket_body(parsed: ParsedEmail, inbound_id: uuid.UUID, follow_up_of: Ticket | None) -> TicketCreate:
    subject = " ".join(parsed.subject.split())[:MAX_SUBJECT] or "(no subject)"
    description = parsed.text_body.strip()[:MAX_BODY] or "(empty message)"
    return TicketCreate(
        channel=Channel.EMAIL,
        kind=TicketKind.QUESTION,
        subject=subject,
        description=description,
        customer=_customer(parsed),
        # A tag, not `reference`: that is the customer's order or business number.
        tags=[f"{FOLLOW_UP_TAG}{follow_up_of.number}"] if follow_up_of is not None else [],
        attachments=_attachments(parsed, inbound_id),
    )


async def _link_follow_up(uow: UnitOfWork, closed: Ticket, follow_up: Ticket) -> None:
    """Both timelines say so: agents on either ticket see the conversation continues elsewhere."""
    repo = TicketRepository(uow.session)
    now = follow_up.created_at
    await repo.add_timeline(
        follow_up.id,
        "follow_up_of",
        at=now,
        actor=CALLER,
        original_ticket_id=closed.id,
        original_number=closed.number,
    )
    await repo.add_timeline(
        closed.id,
        "follow_up_opened",
        at=now,
        actor=CALLER,
        follow_up_ticket_id=follow_up.id,
        follow_up_number=follow_up.number,
    )


async def _remember_thread_id(uow: UnitOfWork, message_id: str | None, ticket_id: uuid.UUID) -> None:
    if message_id and await uow.session.get(EmailThreadId, message_id) is None:
        uow.session.add(EmailThreadId(message_id=message_id, ticket_id=ticket_id))


async def receive(uow: UnitOfWork, raw: bytes, *, number_prefix: str, max_bytes: int) -> InboundResult:
    try:
        parsed = parse_email(raw, max_bytes=max_bytes)
    except UnparseableEmail as exc:
        inbound_id = await archive_unreadable(uow, raw, str(exc))
        raise UnreadableEmail(
            f"{exc}; the message was kept for inspection", inbound_id=str(inbound_id)
        ) from exc
    except Exception as exc:  # a parser bug: the message is still kept and answered, never a 500
        log.error("email_parser_failed", error=type(exc).__name__, exc_info=exc)
        inbound_id = await archive_unreadable(uow, raw, f"the parser failed ({type(exc).__name__})")
        raise UnreadableEmail(
            "The message could not be read; it was kept for inspection", inbound_id=str(inbound_id)
        ) from exc
    message_id = normalize_message_id(parsed.message_id) if parsed.message_id else None
    if (earlier := await _known_delivery(uow, message_id)) is not None:
        return earlier
    kind, reason = classify_with_reason(parsed)
    sender = sender_hash(parsed.from_address)
    if kind != "normal":
        referenced = await _referenced_ticket(uow, parsed, number_prefix)
        await lock_sender(uow, sender)
        record = _archive(
            uow,
            raw,
            message_id,
            "ignored",
            f"{kind}: {reason}",
            sender=sender,
            thread_ticket_id=referenced,
        )
        await uow.commit()
        return InboundResult("ignored", None, record.id, record.reason)

    inbound_id = uuid.uuid4()
    target = await _thread_target(uow, parsed, number_prefix)
    if target is not None and target.status != TicketStatus.CLOSED:
        body = MessageCreate(
            body=(parsed.reply_text or parsed.text_body).strip()[:MAX_BODY] or "(empty reply)",
            channel=Channel.EMAIL,
            attachments=_attachments(parsed, inbound_id),
        )
        await stage_customer_message(uow, target, body, caller=CALLER, email_message_id=message_id)
        outcome, ticket_id = "threaded", target.id
    else:
        ticket = await stage_ticket(
            uow, _ticket_body(parsed, inbound_id, target), number_prefix=number_prefix, caller=CALLER
        )
        if target is not None:
            await _link_follow_up(uow, target, ticket)
        outcome, ticket_id = "created", ticket.id
    await _remember_thread_id(uow, message_id, ticket_id)
    await lock_sender(uow, sender)
    record = _archive(uow, raw, message_id, outcome, None, ticket_id, sender=sender)
    record.id = inbound_id
    await uow.commit()
    return InboundResult(outcome, ticket_id, inbound_id)
