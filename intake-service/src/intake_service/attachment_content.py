"""Downloading an attachment: where its bytes are depends on how the ticket came in.

Channels that store files themselves give intake a URL (the download redirects there) or
their own storage key (intake cannot fetch it and says so). Email attachments were never
copied out of the message: the archived raw message is the single copy, and the storage
key `inbound-email:<archive id>#<n>` names the n-th attachment the parser finds in it.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from helpdesk_shared.chassis.problems import NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from intake_service.domain.email import parse_email
from intake_service.models import Attachment, InboundEmail
from intake_service.repository import load_ticket

_INBOUND_EMAIL_KEY = re.compile(r"^inbound-email:(?P<archive>[0-9a-f-]{36})#(?P<index>\d{1,4})$")
# Archived messages were accepted at most this big; parsing them again needs the same room.
_MAX_ARCHIVED_BYTES = 64 * 1024 * 1024


def inbound_email_storage_key(archive_id: uuid.UUID, index: int) -> str:
    return f"inbound-email:{archive_id}#{index}"


class AttachmentNotFound(NotFound):
    slug, title = "attachment-not-found", "Attachment not found"


class ContentHeldByChannel(NotFound):
    slug, title = "attachment-held-by-channel", "The channel keeps this attachment's bytes"


@dataclass(frozen=True, slots=True)
class AttachmentFile:
    name: str
    content_type: str
    data: bytes


async def attachment_content(
    uow: UnitOfWork, ticket_id: uuid.UUID, attachment_id: uuid.UUID
) -> AttachmentFile | str:
    """The attachment's bytes, or the URL where the channel serves them."""
    await load_ticket(uow, ticket_id)
    attachment = (
        await uow.session.execute(
            select(Attachment).where(Attachment.id == attachment_id, Attachment.ticket_id == ticket_id)
        )
    ).scalar_one_or_none()
    if attachment is None:
        raise AttachmentNotFound(f"Ticket {ticket_id} has no attachment {attachment_id}")
    if attachment.url is not None:
        return attachment.url
    match = _INBOUND_EMAIL_KEY.match(attachment.storage_key or "")
    if match is None:
        raise ContentHeldByChannel(
            f"Stored by the channel under the key {attachment.storage_key!r}; fetch it from there"
        )
    raw = await uow.session.scalar(
        select(InboundEmail.raw).where(InboundEmail.id == uuid.UUID(match["archive"]))
    )
    if raw is None:
        raise AttachmentNotFound("The email that carried this attachment is no longer archived")
    if not raw:
        raise AttachmentNotFound("The email that carried this attachment was erased with the customer's data")
    # Parsing a large message is CPU work: keep it off the event loop.
    parsed = await asyncio.to_thread(parse_email, raw, max_bytes=_MAX_ARCHIVED_BYTES)
    index = int(match["index"])
    if index >= len(parsed.attachments):
        raise AttachmentNotFound("The archived email no longer yields this attachment")
    return AttachmentFile(
        name=attachment.name, content_type=attachment.content_type, data=parsed.attachments[index].data
    )
