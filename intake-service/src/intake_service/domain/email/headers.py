"""Header values: raw 8-bit header text, RFC 2047 encoded words, address lists, dates, and
case-insensitive access to a part's raw headers."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from intake_service.domain.email.charsets import (
    _CJK_CODECS,
    _charset_label,
    _codecs_for,
    _decode_bytes,
    _repair_mojibake,
)
from intake_service.domain.email.context import _FOLD, _Ctx, _one_line
from intake_service.domain.email.model import EmailAddress

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")


def _b_decode(text: str) -> bytes | None:
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text.replace("-", "+").replace("_", "/"))
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return None


def _decode_words(text: str, ctx: _Ctx, where: str) -> str:
    """RFC 2047 encoded words, adjacent words of one charset joined before decoding (split characters)."""
    if "=?" not in text:
        return text
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(_decode_bytes(bytes(pending), pending_charset, ctx, where))
        pending.clear()
        pending_charset = None

    position = 0
    for match in _ENCODED_WORD.finditer(text):
        gap = text[position : match.start()]
        charset, encoding, payload = match.group(1), match.group(2).lower(), match.group(3)
        decoded = (
            _b_decode(payload)
            if encoding == "b"
            else binascii.a2b_qp(payload.encode("utf-8", "surrogateescape"), header=True)
        )
        if decoded is None:
            ctx.warn(f"{where}: undecodable encoded word kept as is")
            flush()
            out.append(gap + match.group(0))
            position = match.end()
            continue
        label = _charset_label(charset)
        if pending_charset is not None and not gap.strip():  # whitespace between encoded words is dropped
            if label != pending_charset:
                flush()
        else:
            flush()
            out.append(gap)
        pending_charset = label
        pending.extend(decoded)
        position = match.end()
    flush()
    out.append(text[position:])
    return "".join(out)


def _header_text(value: str, ctx: _Ctx, where: str) -> str:
    """A raw compat32 header value as text: raw 8-bit bytes decoded, folding removed (no RFC 2047 yet)."""
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        data = value.encode("ascii", "surrogateescape")
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            hint = ctx.charset_hint
            value = _decode_bytes(data, hint, ctx, where) if hint else _guess_warn(data, ctx, where)
        else:
            if ctx.charset_hint:
                hint_codecs = _codecs_for(_charset_label(ctx.charset_hint))
                if hint_codecs and hint_codecs[0] in _CJK_CODECS:
                    repaired = _repair_mojibake(value, hint_codecs[0])
                    if repaired is not None:
                        ctx.warn(f"{where}: double-encoded {ctx.charset_hint} header repaired")
                        value = repaired
    return _FOLD.sub("", value)


def _guess_warn(data: bytes, ctx: _Ctx, where: str) -> str:
    text, used = ctx.guess(data)
    ctx.warn(f"{where}: raw 8-bit header decoded as {used}")
    return text


def _unstructured(value: str | None, ctx: _Ctx, where: str) -> str:
    if value is None:
        return ""
    return _one_line(_decode_words(_header_text(value, ctx, where), ctx, where))


class _Headers:
    """Case-insensitive access to a part's raw header values."""

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self.items = list(items)
        self._index: dict[str, list[str]] = {}
        for name, value in self.items:
            self._index.setdefault(name.strip().lower(), []).append(value)

    def all(self, name: str) -> list[str]:
        return self._index.get(name, [])

    def first(self, name: str) -> str | None:
        values = self._index.get(name)
        return values[0] if values else None

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def __len__(self) -> int:
        return len(self.items)


def _addresses(values: Iterable[str], ctx: _Ctx, where: str) -> list[EmailAddress]:
    out: list[EmailAddress] = []
    for raw in values:
        text = _header_text(raw, ctx, where)
        try:
            pairs = getaddresses([text])
        except Exception:  # the stdlib address parser has had crash bugs on hostile input
            ctx.warn(f"{where}: unparseable address list")
            continue
        for name, address in pairs:
            address = address.strip()
            if address.startswith("=?"):  # the whole "Name <addr>" inside one encoded word
                name, address = parseaddr(_decode_words(address, ctx, where))
            name = _one_line(_decode_words(name, ctx, where)).strip("\"' ")
            address = _one_line(address).strip("<>")
            if address or name:
                out.append(EmailAddress(address=address, name=name))
            if len(out) >= 1000:
                ctx.warn(f"{where}: more than 1000 addresses, rest ignored")
                return out
    return out


def _date(value: str | None, ctx: _Ctx) -> datetime | None:
    if not value:
        return None
    text = _one_line(_header_text(value, ctx, "date"))
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        ctx.warn(f"date: unparseable {text[:80]!r}")
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
