"""Outbound channel adapters: email over SMTP, everything else as a signed webhook.

`AnswerSender` is the port the delivery worker depends on; tests of the worker
use the real adapters against a local SMTP server and a local HTTP receiver.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import smtplib
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Protocol

import httpx
import orjson

from helpdesk_shared.chassis.logging import correlation_id_var
from helpdesk_shared.contracts.enums import Channel
from intake_service.settings import IntakeSettings

SIGNATURE_HEADER = "X-Helpdesk-Signature"


class DeliveryError(Exception):
    """The channel did not accept the answer; `permanent` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class OutboundAnswer:
    delivery_id: uuid.UUID
    ticket_id: uuid.UUID
    ticket_number: str
    ticket_subject: str
    channel: Channel
    message_id: uuid.UUID
    email_message_id: str
    references: tuple[str, ...]
    body: str
    answer_id: uuid.UUID
    answer_version: int
    to_email: str | None
    callback_url: str | None


class AnswerSender(Protocol):
    async def send(self, answer: OutboundAnswer) -> None: ...


def new_message_id(domain: str) -> str:
    return make_msgid(idstring="helpdesk", domain=domain)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: receivers recompute it and reject old timestamps."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class SmtpSender:
    def __init__(self, settings: IntakeSettings) -> None:
        self._settings = settings

    def _compose(self, answer: OutboundAnswer) -> EmailMessage:
        if not answer.to_email:
            raise DeliveryError("the customer has no email address", permanent=True)
        message = EmailMessage()
        message["From"] = formataddr(("Support", self._settings.smtp_from))
        message["To"] = answer.to_email
        message["Subject"] = f"Re: {answer.ticket_subject} [{answer.ticket_number}]"
        message["Message-ID"] = f"<{answer.email_message_id}>"
        if answer.references:
            message["In-Reply-To"] = f"<{answer.references[-1]}>"
            message["References"] = " ".join(f"<{ref}>" for ref in answer.references)
        message["Auto-Submitted"] = "auto-replied"  # tells mail systems not to auto-reply to us
        message.set_content(answer.body)
        return message

    def _send_blocking(self, message: EmailMessage) -> None:
        s = self._settings
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.delivery_timeout_seconds) as smtp:
            if s.smtp_starttls:
                smtp.starttls()
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password.get_secret_value() if s.smtp_password else "")
            smtp.send_message(message)

    async def send(self, answer: OutboundAnswer) -> None:
        message = self._compose(answer)
        try:
            await asyncio.to_thread(self._send_blocking, message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"recipient refused: {exc.recipients}", permanent=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP: {exc!r}") from exc


class WebhookSender:
    def __init__(self, settings: IntakeSettings, client: httpx.AsyncClient) -> None:
        self._settings = settings
        self._client = client

    async def send(self, answer: OutboundAnswer) -> None:
        url = answer.callback_url or self._settings.channel_callbacks.get(answer.channel)
        if not url:
            raise DeliveryError(f"no callback URL for channel {answer.channel}", permanent=True)
        body = orjson.dumps(
            {
                "type": "answer",
                "ticket_id": str(answer.ticket_id),
                "ticket_number": answer.ticket_number,
                "message_id": str(answer.message_id),
                "answer_id": str(answer.answer_id),
                "answer_version": answer.answer_version,
                "body": answer.body,
                "delivery_id": str(answer.delivery_id),
            }
        )
        signature = sign(self._settings.webhook_secret.get_secret_value(), int(time.time()), body)
        try:
            response = await self._client.post(
                url,
                content=body,
                timeout=self._settings.delivery_timeout_seconds,
                headers={
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: signature,
                    "Idempotency-Key": str(answer.delivery_id),
                    # The id the answer's events and logs carry, for the integration's own.
                    **({"X-Correlation-ID": cid} if (cid := correlation_id_var.get()) else {}),
                },
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook: {exc!r}") from exc
        if not response.is_success:
            raise DeliveryError(
                f"webhook answered {response.status_code}", permanent=response.status_code == 410
            )


class ChannelSender:
    """Email answers go by SMTP; every other channel gets the signed webhook."""

    def __init__(self, email: AnswerSender, webhook: AnswerSender) -> None:
        self._email = email
        self._webhook = webhook

    async def send(self, answer: OutboundAnswer) -> None:
        await (self._email if answer.channel == Channel.EMAIL else self._webhook).send(answer)
