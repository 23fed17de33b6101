"""The bounded walk over the MIME tree: body text chunks, attachments and enclosed messages.

``max_depth`` levels of multipart nesting and ``max_parts`` parts in total are
walked; enclosed messages are never descended into (only their headers are read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from typing import Literal

from intake_service.domain.email.charsets import _decode_bytes
from intake_service.domain.email.context import _clean, _Ctx, _one_line
from intake_service.domain.email.headers import _addresses, _header_text, _unstructured
from intake_service.domain.email.html_text import html_to_text
from intake_service.domain.email.mime import (
    _FIRST_HEADER,
    _LEADING_BLANK,
    _decode_transfer,
    _filename,
    _load_part,
    _Part,
    _recover_boundary,
    _split_multipart,
)
from intake_service.domain.email.model import MAX_HTML_CHARS, MAX_TEXT_CHARS, EmailAttachment
from intake_service.domain.email.threading_keys import normalize_message_id

# ---------------------------------------------------------------------------
# Body text
# ---------------------------------------------------------------------------


def _unflow(text: str, delsp: bool) -> str:
    """RFC 3676 format=flowed: rejoin soft-broken lines (same quote depth)."""
    out: list[str] = []
    buffer: str | None = None
    buffer_depth = 0

    def flush() -> None:
        nonlocal buffer
        if buffer is not None:
            out.append((">" * buffer_depth + " " if buffer_depth else "") + buffer)
        buffer = None

    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]
        if content == "-- ":
            flush()
            out.append((">" * depth + " " if depth else "") + content)
            continue
        flowed = content.endswith(" ")
        if flowed and delsp:
            content = content[:-1]
        if buffer is not None and depth == buffer_depth:
            buffer += content
        else:
            flush()
            buffer, buffer_depth = content, depth
        if not flowed:
            flush()
    flush()
    return "\n".join(out)


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


@dataclass
class _Chunk:
    kind: Literal["plain", "html", "other"]
    text: str
    markup: str | None = None


def _text_chunk(part: _Part, ctx: _Ctx, where: str) -> _Chunk | None:
    data = _decode_transfer(part, ctx, where)
    if not data.strip():
        return None
    charset = part.param("charset")
    if part.subtype == "html" and not charset:
        sniffed = _META_CHARSET.search(data[:4096])
        charset = sniffed.group(1).decode("ascii") if sniffed else None
    text = _clean(_decode_bytes(data, charset, ctx, f"{where} body"))
    if part.subtype == "html":
        if len(text) > MAX_HTML_CHARS:
            ctx.warn(f"{where}: HTML over {MAX_HTML_CHARS} characters, the rest not converted")
            text = text[:MAX_HTML_CHARS]
        return _Chunk("html", html_to_text(text)[:MAX_TEXT_CHARS], text)
    if len(text) > MAX_TEXT_CHARS:
        ctx.warn(f"{where}: text over {MAX_TEXT_CHARS} characters, the rest dropped")
        text = text[:MAX_TEXT_CHARS]
    if (part.param("format") or "").lower() == "flowed":
        text = _unflow(text, (part.param("delsp") or "").lower() == "yes")
    kind: Literal["plain", "other"] = "plain" if part.subtype == "plain" else "other"
    return _Chunk(kind, text.strip("\n"))


# ---------------------------------------------------------------------------
# Walking the tree
# ---------------------------------------------------------------------------


def _add_attachment(ctx: _Ctx, attachment: EmailAttachment) -> None:
    if len(ctx.attachments) >= ctx.max_attachments:
        if not ctx.attachments_omitted:
            ctx.warn(f"more than {ctx.max_attachments} attachments, the rest omitted")
        ctx.attachments_omitted += 1
    else:
        ctx.attachments.append(attachment)


def _content_id(part: _Part) -> str | None:
    value = part.content.get("content-id")
    return (_one_line(str(value)).strip("<>") or None) if value else None


def _enclosed(part: _Part, ctx: _Ctx, where: str) -> None:
    """message/rfc822 (or text/rfc822-headers): record as an attachment, reading only its headers."""
    data = _decode_transfer(part, ctx, where)
    subject = message_id = from_address = None
    head = _LEADING_BLANK.sub(b"", data, count=1)
    if head and _FIRST_HEADER.match(head):
        inner = _load_part(head, ctx, where=f"{where} (enclosed)")
        subject = _unstructured(inner.headers.first("subject"), ctx, f"{where} subject")
        message_id = normalize_message_id(_header_text(inner.headers.first("message-id") or "", ctx, where))
        senders = _addresses(inner.headers.all("from")[:1], ctx, f"{where} from")
        from_address = senders[0].address if senders else None
    else:
        ctx.warn(f"{where}: enclosed message without headers")
    disposition = part.disposition()
    _add_attachment(
        ctx,
        EmailAttachment(
            filename=_filename(part, ctx, where),
            content_type=part.content_type,
            size=len(data),
            data=data,
            content_id=_content_id(part),
            inline=disposition == "inline",
            subject=subject,
            message_id=message_id,
            from_address=from_address or None,
        ),
    )


def _leaf(part: _Part, ctx: _Ctx, sink: list[_Chunk], where: str, *, in_alternative: bool) -> None:
    disposition = part.disposition()
    filename = _filename(part, ctx, where)
    is_body = (
        part.maintype == "text"
        and disposition != "attachment"
        and filename is None
        and (part.subtype in ("plain", "html") or (in_alternative and part.subtype != "calendar"))
    )
    if is_body:
        chunk = _text_chunk(part, ctx, where)
        if chunk is not None:
            sink.append(chunk)
        return
    data = _decode_transfer(part, ctx, where)
    content_id = _content_id(part)
    _add_attachment(
        ctx,
        EmailAttachment(
            filename=filename,
            content_type=part.content_type,
            size=len(data),
            data=data,
            content_id=content_id,
            inline=disposition == "inline" or (disposition is None and content_id is not None),
        ),
    )


def _note_report(part: _Part, ctx: _Ctx) -> None:
    if ctx.report_type:
        return
    if part.content_type == "multipart/report":
        ctx.report_type = (part.param("report-type") or "").strip().lower() or None
    elif part.content_type in ("message/delivery-status", "message/global-delivery-status"):
        ctx.report_type = "delivery-status"
    elif part.content_type in ("message/disposition-notification", "message/global-disposition-notification"):
        ctx.report_type = "disposition-notification"
    elif part.content_type == "message/feedback-report":
        ctx.report_type = "feedback-report"


_ENCLOSED_TYPES = frozenset(
    (
        "message/rfc822",
        "message/global",
        "message/news",
        "text/rfc822-headers",
        "message/rfc822-headers",
        "message/global-headers",
    )
)


def _pick_alternative(options: list[list[_Chunk]]) -> list[_Chunk]:
    for kind in ("plain", "html", "other"):
        for chunks in options:
            if chunks and any(chunk.kind == kind for chunk in chunks):
                return chunks
    return []


def _walk(
    part: _Part, ctx: _Ctx, sink: list[_Chunk], depth: int, where: str, *, in_alternative: bool
) -> None:
    ctx.parts += 1
    if ctx.parts > ctx.max_parts:
        if ctx.parts == ctx.max_parts + 1:
            ctx.warn(f"more than {ctx.max_parts} MIME parts, the rest ignored")
        return
    _note_report(part, ctx)
    if part.maintype == "multipart":
        if depth >= ctx.max_depth:
            ctx.warn(f"{where}: nested deeper than {ctx.max_depth} levels, kept as an opaque attachment")
            _add_attachment(
                ctx,
                EmailAttachment(
                    filename=None, content_type=part.content_type, size=len(part.body), data=part.body
                ),
            )
            return
        boundary = part.param("boundary")
        children = _split_multipart(part.body, boundary, ctx, where) if boundary else None
        if children is None:
            recovered = _recover_boundary(part.body)
            if recovered is not None and recovered != boundary:
                ctx.warn(f"{where}: declared boundary not found, used the one in the body")
                children = _split_multipart(part.body, recovered, ctx, where)
        if children is None:
            ctx.warn(
                f"{where}: {part.content_type} without {'usable ' if boundary else ''}boundaries, "
                "read as text"
            )
            fallback = Message()
            fallback["Content-Type"] = "text/plain"
            if part.param("charset"):
                fallback.set_param("charset", part.param("charset") or "")
            _leaf(_Part(part.headers, fallback, part.body), ctx, sink, where, in_alternative=in_alternative)
            return
        default_type = "message/rfc822" if part.subtype == "digest" else "text/plain"
        options: list[list[_Chunk]] = []
        for index, raw_child in enumerate(children, start=1):
            if ctx.parts >= ctx.max_parts:
                ctx.parts += 1
                ctx.warn(f"more than {ctx.max_parts} MIME parts, the rest ignored")
                break
            child_where = f"{where}.{index}"
            child = _load_part(raw_child, ctx, default_type=default_type, where=child_where)
            child_sink: list[_Chunk] = [] if part.subtype == "alternative" else sink
            _walk(
                child, ctx, child_sink, depth + 1, child_where, in_alternative=part.subtype == "alternative"
            )
            if part.subtype == "alternative":
                options.append(child_sink)
        if part.subtype == "alternative":
            sink.extend(_pick_alternative(options))
    elif part.content_type in _ENCLOSED_TYPES:
        _enclosed(part, ctx, where)
    else:
        _leaf(part, ctx, sink, where, in_alternative=in_alternative)
