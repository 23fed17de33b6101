"""The entry point: ``parse_email(raw)`` turns one raw RFC 5322 message into a ``ParsedEmail``."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace

from intake_service.domain.email.classification import _auto_fields, classify_with_reason
from intake_service.domain.email.context import _Ctx
from intake_service.domain.email.headers import _addresses, _date, _header_text, _unstructured
from intake_service.domain.email.mime import _FIRST_HEADER, _LEADING_BLANK, _load_part, _split_head_body
from intake_service.domain.email.model import (
    DEFAULT_MAX_ATTACHMENTS,
    DEFAULT_MAX_BYTES,
    MAX_DEPTH,
    MAX_PARTS,
    MAX_TEXT_CHARS,
    EmailKind,
    ParsedEmail,
    UnparseableEmail,
)
from intake_service.domain.email.reply import extract_reply
from intake_service.domain.email.threading_keys import MAX_REFERENCES, message_ids_in, normalize_message_id
from intake_service.domain.email.walk import _Chunk, _walk


def _prepare(raw: bytes, max_bytes: int, ctx: _Ctx) -> bytes:
    if len(raw) > max_bytes:
        raise UnparseableEmail(f"message is {len(raw)} bytes, over the {max_bytes}-byte limit")
    if not raw.strip():
        raise UnparseableEmail("empty message")
    data = _LEADING_BLANK.sub(b"", raw, count=1)
    if len(data) != len(raw):
        ctx.warn("blank lines or a byte-order mark before the headers skipped")
    if b"\n" not in data and b"\r" in data:
        ctx.warn("bare CR line endings")
        data = data.replace(b"\r", b"\n")
    if not _FIRST_HEADER.match(data):
        raise UnparseableEmail("no RFC 5322 header block at the start of the message")
    head, _ = _split_head_body(data)
    if b"\x00" in head:
        raise UnparseableEmail("NUL bytes in the header block: binary data, not a message")
    return data


def parse_email(
    raw: bytes,
    *,
    max_attachments: int = DEFAULT_MAX_ATTACHMENTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_parts: int = MAX_PARTS,
) -> ParsedEmail:
    """Parse one raw RFC 5322 message. Raises ``UnparseableEmail`` only for non-messages."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError("parse_email expects the raw message as bytes")
    ctx = _Ctx(max_attachments=max_attachments, max_depth=max_depth, max_parts=max_parts)
    data = _prepare(bytes(raw), max_bytes, ctx)
    top = _load_part(data, ctx, where="message")
    if not len(top.headers):
        raise UnparseableEmail("no headers found")
    headers = top.headers
    ctx.charset_hint = top.param("charset") or _first_charset(top.body)

    subjects = headers.all("subject")
    if len(subjects) > 1:
        ctx.warn(f"{len(subjects)} Subject headers, the first one used")
    subject = _unstructured(subjects[0] if subjects else None, ctx, "subject")

    senders = _addresses(headers.all("from"), ctx, "from")
    if len(senders) > 1:
        ctx.warn("several From addresses, the first one used")
    if not senders:
        senders = _addresses(headers.all("sender")[:1], ctx, "sender")
        ctx.warn("no From address" + (", Sender used" if senders else ""))
    sender = senders[0] if senders else None

    message_id = normalize_message_id(_header_text(headers.first("message-id") or "", ctx, "message-id"))
    in_reply_to = normalize_message_id(
        " ".join(_header_text(v, ctx, "in-reply-to") for v in headers.all("in-reply-to"))
    )
    references = message_ids_in(
        " ".join(_header_text(v, ctx, "references") for v in headers.all("references"))
    )
    if len(references) > MAX_REFERENCES:
        ctx.warn(f"{len(references)} references, the first and the latest kept")
        references = [references[0], *references[-(MAX_REFERENCES - 1) :]]

    sink: list[_Chunk] = []
    _walk(top, ctx, sink, 0, "message", in_alternative=False)
    text_body = _tidy_body("\n\n".join(chunk.text for chunk in sink if chunk.text.strip()))
    if len(text_body) > MAX_TEXT_CHARS:
        ctx.warn(f"body over {MAX_TEXT_CHARS} characters, the rest dropped")
        text_body = text_body[:MAX_TEXT_CHARS]
    html_body = next((chunk.markup for chunk in sink if chunk.markup is not None), None)

    parsed = ParsedEmail(
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        subject=subject,
        from_address=(sender.address or None) if sender else None,
        from_name=(sender.name or None) if sender else None,
        to=_addresses(headers.all("to"), ctx, "to"),
        cc=_addresses(headers.all("cc"), ctx, "cc"),
        reply_to=_addresses(headers.all("reply-to"), ctx, "reply-to"),
        date=_date(headers.first("date"), ctx),
        text_body=text_body,
        reply_text=extract_reply(text_body) if text_body else "",
        html_body=html_body,
        attachments=list(ctx.attachments),
        attachments_omitted=ctx.attachments_omitted,
        content_type=top.content_type,
        report_type=ctx.report_type,
        auto_headers=_auto_fields(headers, ctx),
        classification="normal",
        classification_reason="",
    )
    kind, reason = classify_with_reason(parsed)
    return _replace(parsed, kind, reason, ctx.warnings)


def _replace(parsed: ParsedEmail, kind: EmailKind, reason: str, warnings: list[str]) -> ParsedEmail:
    return replace(parsed, classification=kind, classification_reason=reason, warnings=warnings)


def _first_charset(body: bytes) -> str | None:
    match = re.search(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", body[:65536], re.IGNORECASE)
    return match.group(1).decode("ascii") if match else None


def _tidy_body(text: str) -> str:
    text = unicodedata.normalize("NFC", text) if not text.isascii() else text
    return re.sub(r"\n{4,}", "\n\n\n", text).strip("\n")
