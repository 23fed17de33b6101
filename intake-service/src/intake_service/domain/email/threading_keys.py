"""Threading rules for the email channel (pure: no I/O).

Message-IDs are handled in one normal form everywhere inside intake: the
``id-left@id-right`` text *without* angle brackets, comments or folding
whitespace (``normalize_message_id``). Only the outbound header helpers
(``make_message_id``, ``reply_headers``) return the bracketed header form.

How intake threads an inbound reply (the caller does the lookups):

1. ``thread_keys(parsed)`` — In-Reply-To first, then References, newest
   reference first after that; the first key that matches a message we sent
   or received names the ticket.
2. Otherwise ``ticket_number_in_subject(parsed.subject)`` — "[HD-000123]".
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from intake_service.domain.email.context import _clean

if TYPE_CHECKING:
    from intake_service.domain.email.model import ParsedEmail

#: RFC 5322 limits a line to 998 octets; a longer "id" is junk. Counted in UTF-8 bytes, so a
#: non-ASCII (RFC 6532) id also stays far below PostgreSQL's btree index row limit (~2,700 bytes).
MAX_MESSAGE_ID_LENGTH = 998
#: How many references are kept from an inbound message, and written on an outbound one.
MAX_REFERENCES = 100
MAX_OUTBOUND_REFERENCES = 20

_BRACKETED = re.compile(r"<([^<>]*)>")
_COMMENT = re.compile(r"\([^()]*\)")
_WHITESPACE = re.compile(r"\s+")
_DOMAIN = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.]+\]$"
)
_DASHES = "-‐‑‒–—―−"


def _clean_id(token: str) -> str:
    """One id in normal form, or "" when unusable (then it is treated as absent).

    Cleaned like the package's other text: a header decoded through a declared charset can carry
    a NUL or a lone surrogate, which the database refuses to store or even to hash.
    """
    token = _clean(_COMMENT.sub("", token))
    token = _WHITESPACE.sub("", token).strip("<>")
    if not token or len(token.encode("utf-8")) > MAX_MESSAGE_ID_LENGTH:
        return ""
    return token


def _dedupe(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for value in values:
        if value and value not in seen:
            seen.add(value)
            out.append(value)
    return out


def message_ids_in(value: str | None) -> list[str]:
    """Every Message-ID in a header value (Message-ID, In-Reply-To, References), normalised.

    Bracketed ids win; a value without any ``<…>`` falls back to bare tokens
    containing "@" (old mailers write ``In-Reply-To: someone@example.com``).
    Obsolete folding inside brackets (``<1234   @   local(blah) .example>``)
    is removed, so both spellings of one id compare equal.
    """
    if not value:
        return []
    found = [_clean_id(token) for token in _BRACKETED.findall(value)]
    if not any(found):
        found = [_clean_id(token) for token in re.split(r"[\s,;]+", value) if "@" in token]
    return _dedupe(found)


def normalize_message_id(value: str | None) -> str | None:
    """The first Message-ID in ``value`` in intake's normal form (no brackets), or None."""
    ids = message_ids_in(value)
    return ids[0] if ids else None


def thread_keys(parsed: ParsedEmail) -> list[str]:
    """Message-IDs an inbound message answers, most specific first, without its own id.

    In-Reply-To comes first, then References from the newest to the oldest
    (the end of References is the message directly answered).
    """
    keys = [parsed.in_reply_to] if parsed.in_reply_to else []
    keys.extend(reversed(parsed.references))
    return [key for key in _dedupe(keys) if key != parsed.message_id]


def ticket_number_in_subject(subject: str | None, prefix: str = "HD") -> str | None:
    """The ticket number ("HD-000123") mentioned anywhere in a subject, or None.

    The subject is NFKC-normalised first, so full-width forms typed with a
    Chinese input method (【ＨＤ－０００１２３】) match too; any dash works.
    Numbers have at least six digits; the prefix is matched case-insensitively
    and returned as given.
    """
    if not subject or not prefix:
        return None
    text = unicodedata.normalize("NFKC", subject)
    pattern = rf"(?<![A-Za-z0-9]){re.escape(prefix)}[{_DASHES}]([0-9]{{6,}})(?![0-9])"
    match = re.search(pattern, text, re.IGNORECASE)
    return f"{prefix}-{match.group(1)}" if match else None


def make_message_id(domain: str) -> str:
    """A fresh, globally unique Message-ID header value for an outbound message: ``<hex@domain>``."""
    host = domain.strip().rstrip(".")
    if host and not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"invalid domain for a Message-ID: {domain!r}") from exc
    if not host or not _DOMAIN.match(host):
        raise ValueError(f"invalid domain for a Message-ID: {domain!r}")
    return f"<{uuid.uuid4().hex}@{host}>"


def reply_headers(original_message_ids: list[str]) -> dict[str, str]:
    """In-Reply-To and References for an outbound answer.

    ``original_message_ids`` is the conversation so far, oldest first, ending
    with the message being answered (bracketed or not; each entry may also
    be a whole References value). References keeps the first id and the
    latest ones (RFC 5322 §3.6.4 allows trimming); empty input → ``{}``.
    """
    ids = _dedupe(mid for value in original_message_ids for mid in message_ids_in(value))
    if not ids:
        return {}
    kept = ids if len(ids) <= MAX_OUTBOUND_REFERENCES else [ids[0], *ids[-(MAX_OUTBOUND_REFERENCES - 1) :]]
    return {
        "In-Reply-To": f"<{ids[-1]}>",
        "References": " ".join(f"<{mid}>" for mid in kept),
    }
