"""Inbound email parsing for the email channel (pure: no I/O, no database).

``parse_email(raw)`` turns one raw RFC 5322 message into a ``ParsedEmail``;
``classify(parsed)`` says whether it is a customer message, an auto-reply or
a bounce. Only input that is not an email at all (empty, no header block,
binary garbage, over the size limit) raises ``UnparseableEmail``; anything
else — broken MIME, unknown or mislabelled charsets, bad dates — parses
best-effort and says what was wrong in ``warnings``.

Design notes
------------
* The MIME tree is walked by this module, not by ``email.parser``'s full
  parse: the stdlib only parses each part's *header block* (compat32,
  headers-only), bodies are split on boundaries here. That keeps the work
  linear and bounded (``max_depth`` levels of multipart nesting,
  ``max_parts`` parts in total): the stdlib's eager parser is quadratic on
  deeply nested messages such as ``flanker/enclosed-endless.eml``.
* Enclosed messages (message/rfc822, and the text/rfc822-headers of a
  delivery report) are never descended into: only their headers are read and
  they are recorded as attachments with their subject, Message-ID and sender.
  Their bodies and attachments never become the outer message's.
* Charsets: GB2312/GBK labels decode as GB18030 (the superset, mail clients
  routinely send GBK text labelled gb2312), Big5 as CP950 then Big5-HKSCS,
  Shift_JIS as CP932, KS C 5601 as CP949, ISO-8859-1/US-ASCII as UTF-8 when
  the bytes are valid UTF-8, otherwise Windows-1252. Raw 8-bit headers
  (RFC 6532 or plain broken) are tried as UTF-8, then as the message's body
  charset, then guessed. Text that was UTF-8-encoded from the wrong
  single-byte reading of a CJK charset (mojibake) is repaired when the
  round trip is exact. Unknown charsets never raise: a best-effort decode
  with replacement characters and a warning.
* Every string in the result is safe to store: no NUL or other C0 control
  characters (except tab and newline), no lone surrogates, ``\\n`` newlines.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser
from email.utils import collapse_rfc2231_value, getaddresses, parseaddr, parsedate_to_datetime
from html.parser import HTMLParser
from typing import Literal

from intake_service.domain.email_threading import (
    MAX_REFERENCES,
    make_message_id,
    message_ids_in,
    normalize_message_id,
    reply_headers,
    thread_keys,
    ticket_number_in_subject,
)

__all__ = [
    "DEFAULT_MAX_ATTACHMENTS",
    "DEFAULT_MAX_BYTES",
    "MAX_DEPTH",
    "MAX_PARTS",
    "EmailAddress",
    "EmailAttachment",
    "EmailKind",
    "ParsedEmail",
    "UnparseableEmail",
    "classify",
    "classify_with_reason",
    "extract_reply",
    "html_to_text",
    "make_message_id",
    "message_ids_in",
    "normalize_message_id",
    "parse_email",
    "reply_headers",
    "thread_keys",
    "ticket_number_in_subject",
]

DEFAULT_MAX_ATTACHMENTS = 50
DEFAULT_MAX_BYTES = 25 * 1024 * 1024
#: Levels of multipart nesting walked; deeper containers become opaque attachments.
MAX_DEPTH = 10
#: MIME parts looked at in total (enclosed messages count as one part).
MAX_PARTS = 500
#: Text kept per body part and for the whole body; HTML markup converted per part. Tickets store far
#: less (the API caps descriptions); the raw message keeps everything.
MAX_TEXT_CHARS = 1_000_000
MAX_HTML_CHARS = 2_000_000
#: Warnings kept per message; the rest are counted in one closing warning.
MAX_WARNINGS = 50
#: Above this many characters reply extraction keeps the simple cuts only (the library is regex-heavy).
MAX_REPLY_LIBRARY_CHARS = 50_000
#: Lines longer than this keep reply extraction to this module's own (linear) patterns.
MAX_REPLY_LIBRARY_LINE = 400

EmailKind = Literal["auto_reply", "bounce", "normal"]


class UnparseableEmail(ValueError):
    """The input is not an email message at all; the API answers 4xx and keeps the raw bytes."""


@dataclass(frozen=True, slots=True)
class EmailAddress:
    address: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class EmailAttachment:
    filename: str | None
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = False
    # Enclosed messages (message/rfc822, text/rfc822-headers) only:
    subject: str | None = None
    message_id: str | None = None
    from_address: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedEmail:
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    subject: str
    from_address: str | None
    from_name: str | None
    to: list[EmailAddress]
    cc: list[EmailAddress]
    reply_to: list[EmailAddress]
    date: datetime | None
    text_body: str
    reply_text: str
    html_body: str | None
    attachments: list[EmailAttachment]
    attachments_omitted: int
    content_type: str
    report_type: str | None
    auto_headers: dict[str, str]
    classification: EmailKind
    classification_reason: str
    warnings: list[str] = field(default_factory=list)

    @property
    def is_auto_submitted(self) -> bool:
        return self.classification != "normal"


# ---------------------------------------------------------------------------
# Small text utilities
# ---------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
#: ASCII whitespace only: an ideographic space (U+3000) in a Chinese subject is content.
_WS_RUN = re.compile(r"[ \t\n\r\f\v]+")


def _clean(text: str) -> str:
    """Newlines as \\n; no NUL/C0 controls (tab and newline kept), no lone surrogates."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(lambda m: "\ufffd" if "\ud800" <= m.group() <= "\udfff" else "", text)


def _one_line(text: str) -> str:
    return _WS_RUN.sub(" ", _clean(text)).strip()


class _Ctx:
    """Per-message state: warnings and limits."""

    def __init__(self, *, max_attachments: int, max_depth: int, max_parts: int) -> None:
        self.max_attachments = max_attachments
        self.max_depth = max_depth
        self.max_parts = max_parts
        self.parts = 0
        self.attachments: list[EmailAttachment] = []
        self.attachments_omitted = 0
        self.report_type: str | None = None
        self.charset_hint: str | None = None
        self.guessed: str | None = None
        self._warnings: list[str] = []
        self._seen: set[str] = set()
        self._dropped = 0

    def warn(self, message: str) -> None:
        message = _one_line(message)[:300]
        if message in self._seen:
            return
        self._seen.add(message)
        if len(self._warnings) < MAX_WARNINGS:
            self._warnings.append(message)
        else:
            self._dropped += 1

    def guess(self, data: bytes) -> tuple[str, str]:
        """Guess a charset, preferring the one guessed earlier for the same message."""
        text, used = _guess(data, self.guessed)
        if used in ("koi8_r", "cp1251", "gb18030", "cp950"):
            self.guessed = used
        return text, used

    @property
    def warnings(self) -> list[str]:
        extra = [f"{self._dropped} more warnings omitted"] if self._dropped else []
        return [*self._warnings, *extra]


# ---------------------------------------------------------------------------
# Charsets
# ---------------------------------------------------------------------------

_GB = ("gb18030",)
_BIG5 = ("cp950", "big5hkscs")
_CHARSET_ALIASES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        (
            "gb2312",
            "gb_2312",
            "gb_2312-80",
            "csgb2312",
            "euc-cn",
            "euccn",
            "x-euc-cn",
            "gbk",
            "x-gbk",
            "cp936",
            "ms936",
            "windows-936",
            "gb18030",
            "gb-18030",
            "chinese",
            "iso-ir-58",
            "csiso58gb231280",
        ),
        _GB,
    ),
    "hz-gb-2312": ("hz",),
    **dict.fromkeys(
        (
            "big5",
            "big-5",
            "big5-hkscs",
            "big5hkscs",
            "cn-big5",
            "x-x-big5",
            "csbig5",
            "cp950",
            "x-big5",
            "windows-950",
            "ms950",
        ),
        _BIG5,
    ),
    **dict.fromkeys(
        (
            "shift_jis",
            "shift-jis",
            "sjis",
            "x-sjis",
            "ms_kanji",
            "csshiftjis",
            "windows-31j",
            "cp932",
            "ms932",
        ),
        ("cp932", "shift_jis_2004"),
    ),
    **dict.fromkeys(("euc-jp", "eucjp", "x-euc-jp", "cseucpkdfmtjapanese"), ("euc_jp", "euc_jis_2004")),
    **dict.fromkeys(
        ("iso-2022-jp", "csiso2022jp", "iso2022jp"), ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2")
    ),
    **dict.fromkeys(
        (
            "ks_c_5601-1987",
            "ks_c_5601",
            "ks_c_5601-1989",
            "ksc5601",
            "euc-kr",
            "euckr",
            "korean",
            "cp949",
            "windows-949",
            "csksc56011987",
            "iso-ir-149",
        ),
        ("cp949",),
    ),
    **dict.fromkeys(("utf-8", "utf8", "unicode-1-1-utf-8", "x-unicode20utf8"), ("utf-8",)),
    **dict.fromkeys(("utf-7", "unicode-1-1-utf-7", "csunicode11utf7"), ("utf-7",)),
    "iso-8859-8-i": ("iso8859_8",),
    "iso-8859-6-i": ("iso8859_6",),
    **dict.fromkeys(("tis-620", "windows-874"), ("cp874",)),
}
#: Labels that promise little: trust valid UTF-8 over them.
_WEAK_ASCII = frozenset(("us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "7bit", "8bit", "us", "default"))
_WEAK_LATIN = frozenset(
    (
        "iso-8859-1",
        "iso8859-1",
        "iso_8859-1",
        "latin1",
        "latin-1",
        "l1",
        "cp819",
        "windows-1252",
        "cp1252",
        "x-cp1252",
    )
)
_CJK_CODECS = frozenset(
    ("gb18030", "cp950", "big5hkscs", "cp932", "shift_jis_2004", "euc_jp", "euc_jis_2004", "cp949")
)
_NOT_A_CHARSET = frozenset(
    ("unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined", "mbcs", "oem", "utf_8_sig")
)
_UNDECLARED = ("", "none", "unknown", "unknown-8bit", "x-unknown", "x-user-defined", "charset")


def _charset_label(charset: str | None) -> str:
    label = (charset or "").strip().strip("\"'").strip().lower()
    return label.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en


def _codecs_for(label: str) -> tuple[str, ...] | None:
    """Python codecs to try for a charset label; () when undeclared, None when unknown."""
    if label in _UNDECLARED or label in _WEAK_ASCII:
        return ()
    if label in _WEAK_LATIN:
        return ("cp1252", "latin-1")
    if label in _CHARSET_ALIASES:
        return _CHARSET_ALIASES[label]
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_A_CHARSET:
        return None
    if info.name == "gb2312" or info.name == "gbk":
        return _GB
    if info.name in ("big5", "big5hkscs", "cp950"):
        return _BIG5
    return (info.name,)


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (
        0x4E00 <= o <= 0x9FFF
        or 0x3400 <= o <= 0x4DBF
        or 0x3000 <= o <= 0x30FF
        or 0xFF00 <= o <= 0xFFEF
        or 0xAC00 <= o <= 0xD7AF
        or 0x20000 <= o <= 0x2FFFF
        or 0xF900 <= o <= 0xFAFF
    )


def _mostly_cjk(text: str) -> bool:
    high = [ch for ch in text if ord(ch) > 0x7F]
    if not high or any(0xE000 <= ord(ch) <= 0xF8FF for ch in high):
        return False
    return sum(_is_cjk(ch) for ch in high) >= 0.9 * len(high)


def _high_runs(data: bytes) -> list[int]:
    return [len(run) for run in re.findall(rb"[\x80-\xff]+", data)]


def _high_runs_even(data: bytes) -> bool:
    """Do bytes >= 0x80 come in pairs, as double-byte CJK text does (single-byte accents come alone)?"""
    runs = _high_runs(data)
    return bool(runs) and sum(1 for n in runs if n % 2 == 0) >= 0.9 * len(runs)


def _lossy_utf8(data: bytes) -> str | None:
    """UTF-8 with a few broken bytes (a truncated character, one stray byte) is still UTF-8."""
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - data.count("\ufffd".encode())
    good = sum(1 for ch in text if ord(ch) > 0x7F and ch != "\ufffd")
    return text if good >= 2 and good >= 4 * bad else None


def _cyrillic(data: bytes) -> tuple[str, str] | None:
    """Undeclared KOI8-R or Windows-1251: whole words of high bytes that read as mostly lowercase Cyrillic."""
    runs = _high_runs(data)
    if sum(runs) < 6 or sum(runs) < 3 * len(runs):
        return None
    best: tuple[int, str, str] | None = None
    for codec in ("koi8_r", "cp1251"):
        text = data.decode(codec, errors="replace")
        high = [ch for ch in text if ord(ch) > 0x7F]
        letters = [ch for ch in high if "\u0410" <= ch <= "\u044f" or ch in "Ёё"]
        if len(letters) < 0.95 * len(high):
            continue
        lower = sum(1 for ch in letters if ch.islower())
        if best is None or lower > best[0]:
            best = (lower, text, codec)
    return (best[1], best[2]) if best else None


def _guess(data: bytes, prefer: str | None = None) -> tuple[str, str]:
    """Decode undeclared 8-bit data: UTF-8, the charset already guessed for this message,
    Cyrillic, plausible GB18030/Big5, else Windows-1252."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if prefer:
        try:
            return data.decode(prefer), prefer
        except UnicodeDecodeError:
            pass
    lossy = _lossy_utf8(data)
    if lossy is not None:
        return lossy, "utf-8 (damaged bytes replaced)"
    cyrillic = _cyrillic(data)
    if cyrillic is not None:
        return cyrillic
    if _high_runs_even(data):
        for codec in ("gb18030", "cp950"):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                continue
            if _mostly_cjk(text):
                return text, codec
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _repair_mojibake(text: str, codec: str) -> str | None:
    """CJK bytes read as Latin-1/CP1252 and re-encoded as UTF-8: undo it when the round trip is exact.

    Only text whose non-ASCII characters all lie in the Latin-1/CP1252 range,
    number at least four and mostly stand next to each other (double-byte
    characters; Big5 trail bytes may be ASCII) qualifies, and the result must
    read as CJK without private-use characters — so genuine accented text
    ("Grüße", "danglüe") is left alone.
    """
    if any(ord(ch) > 0xFF and ch not in _CP1252_EXTRA for ch in text):
        return None
    for single in ("latin-1", "cp1252"):
        try:
            raw = text.encode(single)
        except UnicodeEncodeError:
            continue
        runs = _high_runs(raw)
        if sum(runs) < 4 or sum(n for n in runs if n >= 2) < 0.5 * sum(runs):
            return None
        try:
            repaired = raw.decode(codec)
        except UnicodeDecodeError:
            continue
        if _mostly_cjk(repaired):
            return repaired
    return None


_CP1252_EXTRA = frozenset(bytes(range(0x80, 0xA0)).decode("cp1252", errors="ignore"))


def _decode_bytes(data: bytes, charset: str | None, ctx: _Ctx, where: str) -> str:
    """Bytes to text for a declared charset, never raising."""
    if not data:
        return ""
    label = _charset_label(charset)
    candidates = _codecs_for(label)
    stateful = (
        bool(candidates) and candidates is not None and candidates[0].startswith(("utf-7", "hz", "iso2022"))
    )
    if data.isascii() and not stateful:
        if candidates is None:
            ctx.warn(f"{where}: unknown charset {label!r}")
        return data.decode("ascii")
    if candidates is None:
        text, used = ctx.guess(data)
        ctx.warn(f"{where}: unknown charset {label!r}, decoded as {used}")
        return text
    if not candidates:  # undeclared or ASCII-labelled 8-bit data
        text, used = ctx.guess(data)
        if used != "utf-8" or label not in _UNDECLARED:
            ctx.warn(f"{where}: 8-bit data labelled {label or 'nothing'!r}, decoded as {used}")
        return text
    if candidates[0] == "cp1252":  # Latin-1 labels: valid UTF-8 is almost certainly UTF-8
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            ctx.warn(f"{where}: labelled {label!r} but is UTF-8")
            return text
    if candidates[0] in _CJK_CODECS:
        try:
            as_utf8 = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            repaired = _repair_mojibake(as_utf8, candidates[0])
            if repaired is not None:
                ctx.warn(f"{where}: {label} text was double-encoded as UTF-8; repaired")
                return repaired
    for codec in candidates:
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    if candidates[0] != "utf-8":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            ctx.warn(f"{where}: labelled {label!r} but is UTF-8")
            return text
    ctx.warn(f"{where}: invalid {label} bytes replaced")
    return data.decode(candidates[0], errors="replace")


# ---------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# MIME structure
# ---------------------------------------------------------------------------

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
            leftover = message.get_payload()
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


# ---------------------------------------------------------------------------
# Body text
# ---------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    (
        "p",
        "div",
        "br",
        "li",
        "tr",
        "table",
        "ul",
        "ol",
        "blockquote",
        "pre",
        "hr",
        "dd",
        "dt",
        "dl",
        "section",
        "article",
        "header",
        "footer",
        "address",
        "center",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "form",
        "fieldset",
        "tbody",
        "thead",
        "tfoot",
        "caption",
        "nav",
        "aside",
        "main",
        "figure",
        "figcaption",
        "details",
        "summary",
    )
)
_SKIP_TAGS = frozenset(("script", "style", "title", "template", "noscript", "head"))
_CELL_TAGS = frozenset(("td", "th"))


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")
            if tag == "pre":
                self.pre += 1
        elif tag in _CELL_TAGS:
            self.out.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br" or tag in _BLOCK_TAGS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        self.out.append(data if self.pre else re.sub(r"[ \t\r\n\f]+", " ", data))


def _tidy_lines(text: str) -> str:
    lines = [line.strip() for line in text.replace("\xa0", " ").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(markup: str) -> str:
    """Visible text of an HTML body: tags dropped, script/style/head skipped, block breaks kept."""
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
        text = "".join(parser.out)
    except Exception:  # html.parser is lenient; this is a last resort for hostile markup
        text = html.unescape(re.sub(r"<[^>]*>", " ", re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", markup)))
    return _tidy_lines(_clean(text))


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
                ctx, EmailAttachment(filename=None, content_type=part.content_type, size=len(part.body))
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


# ---------------------------------------------------------------------------
# Reply extraction
# ---------------------------------------------------------------------------

#: Quote markers and indentation. Atomic groups (Python 3.11+) keep every pattern below linear:
#: adjacent greedy whitespace quantifiers backtrack quadratically on long runs of spaces.
_QUOTE_PREFIX = r"(?>[ \t>]*)"
_TRAILING_WS = r"(?>[ \t]*)"
#: 在 2026年11月20日 …，客服 <a@b> 写道： / … 於 2026年11月20日 週五 寫道：
_ZH_WROTE = re.compile(
    rf"^{_QUOTE_PREFIX}(?:在|於|于)?[^\n]{{0,200}}?(?:写道|寫道|写到|寫到){_TRAILING_WS}[:：]?{_TRAILING_WS}$",
    re.MULTILINE,
)
#: 2026年11月20日(金) 10:00 山田 <a@b>: / …のメール: / …書きました:
_JA_WROTE = re.compile(
    rf"^{_QUOTE_PREFIX}[^\n]{{0,200}}?(?:書きました|のメール){_TRAILING_WS}[:：]{_TRAILING_WS}$", re.MULTILINE
)
#: On Fri, Nov 20, 2026 at 10:00 AM Support <support@example.com> wrote: (Gmail may wrap it once)
_EN_WROTE = re.compile(
    rf"^{_QUOTE_PREFIX}On [^\n]{{0,300}}?(?:\n{_QUOTE_PREFIX}[^\n]{{0,300}}?)?wrote:{_TRAILING_WS}$",
    re.MULTILINE,
)
_SEPARATOR = re.compile(
    rf"^{_QUOTE_PREFIX}-{{2,}}(?>(?:[ \t\xa0]|&nbsp;)*)"
    r"(?:原始邮件|原始郵件|原始信件|原邮件|Original Message)"
    r"(?>(?:[ \t\xa0]|&nbsp;)*)-{2,}(?>[ \t]*)$",
    re.MULTILINE | re.IGNORECASE,
)
#: Outlook's header block: 发件人/寄件者/From: followed within three lines by 发送时间/Sent/Date/To/Subject …
_HEADER_BLOCK = re.compile(
    rf"^{_QUOTE_PREFIX}\*?(?:发件人|發件人|寄件者|寄件人|From)\*?{_TRAILING_WS}[:：][^\n]*\n"
    rf"(?:{_QUOTE_PREFIX}[^\n]*\n){{0,2}}?{_QUOTE_PREFIX}\*?"
    r"(?:发送时间|發送時間|寄件日期|日期|时间|時間|收件人|收件者|主题|主旨|Sent|Date|To|Subject)\*?"
    rf"{_TRAILING_WS}[:：]",
    re.MULTILINE,
)
_SIG_DELIMITER = re.compile(r"^-- ?$", re.MULTILINE)
_SENT_FROM = re.compile(
    r"^(?:发自我的|發自我的|从我的|從我的|Sent from my |Get Outlook for )[^\n]{0,60}$",
    re.MULTILINE | re.IGNORECASE,
)
_QUOTED_LINE = re.compile(r"^[ \t]*>")


def _strip_quoted_edges(text: str) -> str:
    """Drop quoted (">") lines at the end and at the start; quotes interleaved with answers stay."""
    lines = text.split("\n")
    while lines and (not lines[-1].strip() or _QUOTED_LINE.match(lines[-1])):
        lines.pop()
    start = 0
    while start < len(lines) and (not lines[start].strip() or _QUOTED_LINE.match(lines[start])):
        start += 1
    return "\n".join(lines[start:])


def _earliest_quote_header(text: str) -> int | None:
    positions: list[int] = []
    for match in _ZH_WROTE.finditer(text):
        if re.search(r"[0-9０-９@]", match.group()):
            positions.append(match.start())
            break
    for pattern in (_JA_WROTE, _EN_WROTE, _SEPARATOR, _HEADER_BLOCK):
        found = pattern.search(text)
        if found:
            positions.append(found.start())
    return min(positions) if positions else None


def _library_input(text: str) -> str | None:
    """Text safe for mail-parser-reply, or None to skip it.

    Some of its patterns backtrack quadratically (``\\s*^`` over whitespace
    runs, ``On (.+?\\s?.+?) wrote:`` over long lines): lines are stripped (as
    the library does anyway), runs of blank lines and of spaces shortened, and
    long texts or lines skip the library.
    """
    if len(text) > MAX_REPLY_LIBRARY_CHARS:
        return None
    lines = [re.sub(r"[^\S\n]{5,}", "    ", line.strip()) for line in text.split("\n")]
    if any(len(line) > MAX_REPLY_LIBRARY_LINE for line in lines):
        return None
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def _library_reply(text: str) -> str | None:
    """The newest reply per mail-parser-reply (English/Outlook-style headers, signatures)."""
    from mailparser_reply.parser import EmailMessage  # imported lazily: regexes compile on first use

    message = EmailMessage(
        text=text, languages=["en", "zh", "de", "fr", "es", "ja"], keep_hyphen_lists=True
    ).read()
    if not message.replies:
        return None
    reply = message.replies[0]
    signature = str(reply.signatures or "").strip()
    body = str(reply.body if _plausible_signature(signature) else reply.full_body)
    return body.strip()


def _plausible_signature(signature: str) -> bool:
    """Accept the library's signature cut only when it looks like one (a sign-off, not a paragraph)."""
    if not signature:
        return True
    lines = [line for line in signature.split("\n") if line.strip()]
    first = lines[0].strip() if lines else ""
    if re.match(r"^[-_]{2,}$", first) or _SENT_FROM.match(first):
        return True
    return len(first) <= 40 and len(lines) <= 12


def extract_reply(text: str) -> str:
    """The newest part of a message body: quoted history and the signature removed.

    Chinese/Japanese reply headers ("在 …年…月…日 … 写道：", "寫道：", QQ
    Mail's "原始邮件" separator, Outlook's 发件人/发送时间 block) and the
    RFC 3676 "-- " signature delimiter are cut here; English and other
    Outlook/Apple/Gmail headers and sign-offs by ``mail-parser-reply``.
    When everything would be cut (a reply written below the quote), the
    unquoted lines are kept instead.
    """
    text = _clean(text).strip("\n")
    if not text.strip():
        return ""
    cut = text
    position = _earliest_quote_header(cut)
    if position is not None:
        head = cut[:position]
        if head.strip():
            cut = head
        else:  # bottom-posted: drop the header line and the quoted lines
            rest = cut[position:].split("\n", 1)
            cut = "\n".join(
                line
                for line in (rest[1] if len(rest) > 1 else "").split("\n")
                if not _QUOTED_LINE.match(line)
            )
    signature = _SIG_DELIMITER.search(cut)
    if signature is not None and cut[: signature.start()].strip():
        cut = cut[: signature.start()]
    result = cut
    library_input = _library_input(cut)
    if library_input is not None:
        try:
            library = _library_reply(library_input)
        except Exception:  # a regex heuristic library: never let it fail a message
            library = None
        if library:
            result = library
    result = _strip_quoted_edges(result.rstrip())
    sent_from = _SENT_FROM.search(result)
    if sent_from is not None and result[: sent_from.start()].strip():
        result = result[: sent_from.start()]
    result = _tidy_blank_lines(result)
    return result or _tidy_blank_lines(text)


def _tidy_blank_lines(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in text.split("\n"))).strip()


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------

_AUTO_HEADERS = (
    "auto-submitted",
    "precedence",
    "x-autoreply",
    "x-autorespond",
    "x-autogenerated",
    "x-auto-response",
    "x-mail-autoreply",
    "x-autoreply-from",
    "x-fc-machinegenerated",
    "x-failed-recipients",
    "return-path",
    "list-id",
    "x-loop",
)
_BOUNCE_SENDERS = frozenset(("mailer-daemon", "mailerdaemon", "mail-daemon", "postmaster"))
_BOUNCE_SUBJECT = re.compile(
    r"^(?:undeliverable|undelivered mail|undeliverable mail|delivery status notification"
    r"|mail delivery failed|returned mail|delivery failure|failure notice|mail delivery failure"
    r"|non[- ]?delivery|delivery has failed"
    r"|系统退信|退信|邮件退回|郵件退回|无法投递|無法投遞|未能送达|未能送達)",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"(?:out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response)|autoreply"
    r"|vacation reply"
    r"|away from (?:the |my )?office|abwesenheitsnotiz|automatische antwort|réponse automatique"
    r"|respuesta automática|自动回复|自動回覆|自動回复|自動回復|自动答复|自動答覆|不在办公室|休假自动回复)",
    re.IGNORECASE,
)


def _auto_fields(headers: _Headers, ctx: _Ctx) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in _AUTO_HEADERS:
        value = headers.first(name)
        if value is not None:
            out[name] = _one_line(_header_text(value, ctx, name))[:200]
    return out


def classify_with_reason(parsed: ParsedEmail) -> tuple[EmailKind, str]:
    """``classify`` plus the rule that decided, for logs and the stored message."""
    headers = parsed.auto_headers
    report = parsed.report_type
    if report == "delivery-status":
        return "bounce", "delivery status report (DSN)"
    if report == "feedback-report":
        return "bounce", "ARF feedback report (spam complaint about a message we sent)"
    if "x-failed-recipients" in headers:
        return "bounce", "X-Failed-Recipients"
    local = (parsed.from_address or "").split("@", 1)[0].strip().lower()
    if local in _BOUNCE_SENDERS or re.search(r"mail delivery (?:sub)?system", parsed.from_name or "", re.I):
        return "bounce", f"sent by {local or parsed.from_name}"
    if _BOUNCE_SUBJECT.match(
        re.sub(r"^(?:(?:re|fw|fwd|aw|回复|回覆|答复|转发|轉寄)\s*[:：]\s*)+", "", parsed.subject, flags=re.I)
    ):
        return "bounce", "bounce subject"
    if report == "disposition-notification":
        return "auto_reply", "disposition notification (read receipt)"
    auto_submitted = headers.get("auto-submitted", "").split(";", 1)[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return "auto_reply", f"Auto-Submitted: {auto_submitted}"
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply", "auto-reply"):
        return "auto_reply", f"Precedence: {precedence}"
    for name in (
        "x-autoreply",
        "x-autorespond",
        "x-autogenerated",
        "x-auto-response",
        "x-mail-autoreply",
        "x-autoreply-from",
    ):
        if name in headers and headers[name].strip().lower() not in ("no", "false", "0"):
            return "auto_reply", name
    if headers.get("x-fc-machinegenerated", "").strip().lower() == "true":
        return "auto_reply", "x-fc-machinegenerated"
    if _AUTO_SUBJECT.search(parsed.subject):
        return "auto_reply", "out-of-office subject"
    if headers.get("return-path", "").replace(" ", "") == "<>":
        return "auto_reply", "null Return-Path"
    return "normal", "no auto-reply or bounce marker"


def classify(parsed: ParsedEmail) -> EmailKind:
    """ "bounce" (DSN, complaint report, mailer-daemon), "auto_reply" (Auto-Submitted, Precedence,
    out-of-office, read receipts) or "normal" (a person wrote it: create or thread a ticket)."""
    return classify_with_reason(parsed)[0]


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


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
