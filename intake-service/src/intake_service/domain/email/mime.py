"""MIME structure: splitting header block and body, loading a part's headers (stdlib compat32,
headers only), splitting multipart bodies on boundaries, transfer decodings and filenames."""

from __future__ import annotations

import base64
import binascii
import re
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser
from email.utils import collapse_rfc2231_value

from intake_service.domain.email.context import _Ctx, _one_line
from intake_service.domain.email.headers import _decode_words, _header_text, _Headers

_HEAD_END = re.compile(rb"\n\r?\n")
_LEADING_BLANK = re.compile(rb"^(?:\xef\xbb\xbf)?(?:[ \t\r]*\n)+|^\xef\xbb\xbf")
_FIRST_HEADER = re.compile(rb"^(?:>?From |[\x21-\x39\x3b-\x7e]+[ \t]*:)")
#: RFC 5322 obs-optional: "Subject   : hi" (whitespace between the field name and the colon).
_OBS_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]+:", re.MULTILINE)
_CONTENT_HEADERS = ("content-type", "content-disposition", "content-transfer-encoding", "content-id")
_PARSER = BytesParser(policy=email_policy.compat32)


class _Part:
    """One MIME entity: its headers, content headers as a clean stdlib Message, and its raw body."""

    def __init__(self, headers: _Headers, content: Message, body: bytes) -> None:
        self.headers = headers
        self.content = content
        self.body = body
        self.content_type = content.get_content_type().lower()
        self.maintype, _, self.subtype = self.content_type.partition("/")

    def param(self, name: str) -> str | None:
        try:
            value = self.content.get_param(name)
        except Exception:
            return None
        if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
            return collapse_rfc2231_value(value, errors="replace")
        return value if isinstance(value, str) else None

    def disposition(self) -> str | None:
        try:
            return self.content.get_content_disposition()
        except Exception:
            return None


def _split_head_body(data: bytes) -> tuple[bytes, bytes]:
    if data.startswith(b"\n"):
        return b"", data[1:]
    if data.startswith(b"\r\n"):
        return b"", data[2:]
    match = _HEAD_END.search(data)
    if match is None:
        return data, b""
    return data[: match.start() + 1], data[match.end() :]


def _load_part(data: bytes, ctx: _Ctx, *, default_type: str = "text/plain", where: str = "part") -> _Part:
    head, body = _split_head_body(data)
    items: list[tuple[str, str]] = []
    if head and _OBS_FIELD.search(head):
        ctx.warn(f"{where}: obsolete whitespace before a header colon")
        head = _OBS_FIELD.sub(rb"\1:", head)
    if head:
        try:
            message = _PARSER.parsebytes(head, headersonly=True)
        except Exception:  # defensive: the headers-only parser does not raise on anything seen so far
            ctx.warn(f"{where}: unreadable header block")
        else:
            items = list(message.raw_items())
            # The rest as the parser holds it: every byte, non-ASCII ones surrogate-escaped.
            # (`get_payload()` turns those into U+FFFD, which has no way back to the bytes.)
            leftover = vars(message).get("_payload")
            if isinstance(leftover, str) and leftover.strip():
                ctx.warn(f"{where}: header block ended by a line that is not a header")
                body = leftover.encode("ascii", "surrogateescape") + b"\n" + body
    headers = _Headers(items)
    content = Message()
    content.set_default_type(default_type)
    for name in _CONTENT_HEADERS:
        values = headers.all(name)
        if values:
            if len(values) > 1:
                ctx.warn(f"{where}: {len(values)} {name} headers, the first one used")
            content[name] = _one_line(_header_text(values[0], ctx, where))
    return _Part(headers, content, body)


def _boundary_pattern(boundary: str) -> re.Pattern[bytes]:
    token = boundary.encode("utf-8", "surrogateescape")
    return re.compile(rb"^--" + re.escape(token) + rb"(--)?[ \t]*\r?$", re.MULTILINE)


def _split_multipart(body: bytes, boundary: str, ctx: _Ctx, where: str) -> list[bytes] | None:
    """The parts between boundary lines, or None when the body has no opening boundary at all.

    A missing closing boundary ends the last part at the end of the body.
    At most ``ctx.max_parts + 1`` parts are returned (the walk reports the cut).
    """
    parts: list[bytes] = []
    start: int | None = None
    closed = False
    for match in _boundary_pattern(boundary).finditer(body):
        if start is not None:
            end = match.start()
            if end > start and body[end - 1 : end] == b"\n":
                end -= 1
                if end > start and body[end - 1 : end] == b"\r":
                    end -= 1
            parts.append(body[start:end])
            if len(parts) > ctx.max_parts:
                return parts
        if match.group(1):
            closed = True
            break
        start = match.end() + 1
    if not closed and start is not None:
        parts.append(body[start:])
    if not parts:
        return None
    if not closed:
        ctx.warn(f"{where}: multipart without its closing boundary")
    return parts


_BOUNDARY_GUESS = re.compile(
    rb"^--([^\s]{1,200})[ \t]*\r?\n(?=content-[a-z-]+[ \t]*:)", re.MULTILINE | re.IGNORECASE
)


def _recover_boundary(body: bytes) -> str | None:
    """The boundary actually used: the first "--token" line followed by a Content-* header."""
    match = _BOUNDARY_GUESS.search(body[:65536])
    return match.group(1).decode("utf-8", "surrogateescape") if match else None


def _decode_transfer(part: _Part, ctx: _Ctx, where: str) -> bytes:
    raw_cte = part.content.get("content-transfer-encoding")
    cte = str(raw_cte or "").split(";", 1)[0].strip().strip("\"'").lower()
    body = part.body
    if cte in ("", "7bit", "8bit", "binary", "7-bit", "8-bit", "none"):
        return body
    if cte == "base64":
        data = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
        if len(data) % 4 == 1:
            ctx.warn(f"{where}: truncated base64")
            data = data[:-1]
        try:
            return base64.b64decode(data + b"=" * (-len(data) % 4))
        except (binascii.Error, ValueError):
            ctx.warn(f"{where}: undecodable base64 kept raw")
            return body
    if cte in ("quoted-printable", "qp", "quoted_printable"):
        return binascii.a2b_qp(body)
    if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
        return _uudecode(body, ctx, where)
    ctx.warn(f"{where}: unknown transfer encoding {cte[:40]!r}, body kept raw")
    return body


def _uudecode(body: bytes, ctx: _Ctx, where: str) -> bytes:
    out = bytearray()
    inside = False
    for line in body.splitlines():
        if not inside:
            inside = line.startswith(b"begin ")
            continue
        if line.strip() in (b"end", b"`", b""):
            if line.strip() == b"end":
                break
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3 if line else 0
            try:
                out += binascii.a2b_uu(line[:nbytes])
            except binascii.Error:
                ctx.warn(f"{where}: damaged uuencoded line skipped")
    return bytes(out)


def _filename(part: _Part, ctx: _Ctx, where: str) -> str | None:
    try:
        name = part.content.get_filename()
    except Exception:
        name = None
    if not name:
        return None
    name = _decode_words(str(name), ctx, where)
    name = _one_line(re.split(r"[\\/]", name)[-1])
    return name or None
