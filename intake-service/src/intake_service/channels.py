"""Outbound channel adapters: email over SMTP, everything else as a signed webhook.

`AnswerSender` is the port the delivery worker depends on; tests of the worker
use the real adapters against a local SMTP server and a local HTTP receiver.

A `DeliveryError` is permanent when trying again cannot help: the message could not be built
from the ticket's data, the server refused the recipient or the message itself (5xx), the
integration answered 410 Gone, the ticket's own callback URL is not one answers may go to.
Everything else (a server down, a 4xx "try later", our own SMTP login or sender refused until
the configuration is fixed) is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import smtplib
import socket
import ssl
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Protocol

import httpx
import orjson

from helpdesk_shared.chassis.logging import correlation_id_var, traceparent_var
from helpdesk_shared.contracts.enums import Channel
from intake_service.domain.email.threading_keys import reply_headers
from intake_service.settings import IntakeSettings

SIGNATURE_HEADER = "X-Helpdesk-Signature"


class DeliveryError(Exception):
    """The channel did not accept the answer; `permanent` ones are not retried. `reason` names a
    failure the ticket's timeline should tell apart (else it says `permanent` or `gave_up`)."""

    def __init__(self, message: str, *, permanent: bool = False, reason: str | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.reason = reason


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


def header_text(value: str) -> str:
    """Text from a ticket (the customer's subject) made fit for a header: runs of whitespace, line
    breaks included, folded into one space, other control characters dropped. A line break in a
    header value is refused by the email package (and would inject headers if it were not)."""
    return "".join(ch for ch in " ".join(value.split()) if unicodedata.category(ch) != "Cc")


def _smtp_code(exc: smtplib.SMTPException) -> int | None:
    code = getattr(exc, "smtp_code", None)
    return code if isinstance(code, int) else None


def smtp_failure(exc: smtplib.SMTPException | OSError) -> DeliveryError:
    """What an SMTP error means for the delivery.

    Permanent: the server refused the recipient (every one of them) or the message with a 5xx
    reply. Temporary: 4xx replies ("try again later": greylisting, a full mailbox, a busy server),
    connection and TLS failures, and refusals of our own configuration even when 5xx — the login,
    the sender address, the greeting, STARTTLS — which hold for every answer alike: those are
    retried (and shown on the deliveries) until the configuration is fixed, not failed at once.
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return DeliveryError(
            f"recipient refused: {exc.recipients}", permanent=bool(codes) and all(c >= 500 for c in codes)
        )
    if isinstance(exc, smtplib.SMTPDataError):
        code = _smtp_code(exc)
        return DeliveryError(f"message refused: {exc!r}", permanent=code is not None and 500 <= code < 600)
    return DeliveryError(f"SMTP: {exc!r}")


class SmtpSender:
    def __init__(self, settings: IntakeSettings) -> None:
        self._settings = settings
        # Verified against the system's CAs (or INTAKE_SMTP_CA_FILE's): without a context,
        # smtplib's STARTTLS accepts any certificate, so anyone on the path could read the answers.
        self._tls: ssl.SSLContext | None = (
            ssl.create_default_context(cafile=settings.smtp_ca_file)
            if settings.smtp_starttls or settings.smtp_tls
            else None
        )

    def compose(self, answer: OutboundAnswer) -> EmailMessage:
        """The email; a `DeliveryError` (permanent) when the ticket's data cannot make one."""
        if not answer.to_email:
            raise DeliveryError("the customer has no email address", permanent=True)
        try:
            return self._compose(answer)
        except Exception as exc:  # the same data fails the same way on every attempt
            raise DeliveryError(f"the email could not be composed: {exc!r}", permanent=True) from exc

    def _compose(self, answer: OutboundAnswer) -> EmailMessage:
        message = EmailMessage()
        message["From"] = formataddr(("Support", self._settings.smtp_from))
        message["To"] = answer.to_email
        message["Subject"] = header_text(f"Re: {answer.ticket_subject} [{answer.ticket_number}]")
        message["Message-ID"] = f"<{answer.email_message_id}>"
        # In-Reply-To the latest message, References the thread's first and latest ids (capped).
        for name, value in reply_headers(list(answer.references)).items():
            message[name] = value
        message["Auto-Submitted"] = "auto-replied"  # tells mail systems not to auto-reply to us
        message.set_content(answer.body)
        return message

    def _send_blocking(self, message: EmailMessage, deadline: float) -> None:
        """The SMTP conversation, over by `deadline` (`time.monotonic()`) whatever the server does.

        smtplib's timeout bounds each socket operation, not the conversation: a server answering
        every step just in time could keep it going for minutes. Each step gets what is left of
        the deadline as its timeout, and a watchdog shuts the socket down at the deadline (waking
        a read or write blocked in this thread): the next step fails at once.
        """
        s = self._settings

        def left() -> float:
            return max(deadline - time.monotonic(), 0.001)

        timeout = min(s.delivery_timeout_seconds, left())
        smtp = (
            smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=timeout, context=self._tls)
            if s.smtp_tls
            else smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=timeout)
        )
        watchdog = threading.Timer(left(), _cut_off, args=(smtp,))
        watchdog.daemon = True
        watchdog.start()
        try:
            with smtp:
                if s.smtp_starttls:
                    smtp.starttls(context=self._tls)
                if s.smtp_username:
                    smtp.login(s.smtp_username, s.smtp_password.get_secret_value() if s.smtp_password else "")
                smtp.send_message(message)
        finally:
            watchdog.cancel()

    async def send(self, answer: OutboundAnswer) -> None:
        """Sent within `INTAKE_DELIVERY_TIMEOUT_SECONDS` as a whole. A caller that stops waiting
        (the worker's own timeout, cancellation) still waits for the thread to end — by that same
        deadline — so once this returns or raises nothing more reaches the server, and the worker
        records the attempt (and lets the delivery be claimed again) only then."""
        message = self.compose(answer)
        deadline = time.monotonic() + self._settings.delivery_timeout_seconds
        sending = asyncio.ensure_future(asyncio.to_thread(self._send_blocking, message, deadline))
        try:
            await asyncio.shield(sending)
        except asyncio.CancelledError:
            await asyncio.wait({sending})
            if not sending.cancelled():
                sending.exception()  # retrieved: the cancellation is what the caller gets
            raise
        except (smtplib.SMTPException, OSError) as exc:
            raise smtp_failure(exc) from exc


def _cut_off(smtp: smtplib.SMTP) -> None:
    """At the deadline: the socket shut down under whatever step is blocked on it."""
    sock = getattr(smtp, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class WebhookSender:
    def __init__(self, settings: IntakeSettings, client: httpx.AsyncClient) -> None:
        self._settings = settings
        self._client = client

    async def send(self, answer: OutboundAnswer) -> None:
        url = answer.callback_url
        if url:
            # Checked again at each send, under the settings of now: the ticket was stored under
            # those of then (before INTAKE_CALLBACK_HOSTS was set or narrowed, say).
            refusal = self._settings.callback_url_refusal(url)
            if refusal is not None:
                raise DeliveryError(
                    f"callback URL refused: {refusal}", permanent=True, reason="callback_url_refused"
                )
        else:
            url = self._settings.channel_callbacks.get(answer.channel)
        if not url:
            raise DeliveryError(f"no callback URL for channel {answer.channel}", permanent=True)
        try:
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
        except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate: fails the same way every time
            raise DeliveryError(f"the webhook body could not be built: {exc!r}", permanent=True) from exc
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
                    # W3C Trace Context: the attempt's span, a child of the answer's trace.
                    **({"traceparent": trace} if (trace := traceparent_var.get()) else {}),
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
