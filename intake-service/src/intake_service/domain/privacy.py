"""Masking of customer contact data for people who do not need to see it (保密)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache

from pydantic import BaseModel

_DIGIT = re.compile(r"\d")


def mask_email(email: str | None) -> str | None:
    """`lin.xiaomei@example.com` → `l**********@example.com` (the domain helps triage, the name not)."""
    if not email or "@" not in email:
        return email
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'*' * max(len(local) - 1, 1)}@{domain}"


def mask_phone(phone: str | None) -> str | None:
    """Every digit but the last four hidden: `+86 138 0013 8000` → `+** *** **** 8000`."""
    if not phone:
        return phone
    digits = len(_DIGIT.findall(phone))
    seen = 0

    def hide(match: re.Match[str]) -> str:
        nonlocal seen
        seen += 1
        return match.group(0) if seen > digits - 4 else "*"

    return _DIGIT.sub(hide, phone)


def mask_name(name: str | None) -> str | None:
    """Keep the first character (the family name in Chinese): `林小美` → `林**`."""
    if not name:
        return name
    return name[:1] + "*" * max(len(name) - 1, 1)


# ASCII letters only: `\w` also matches Chinese, so an address written against Chinese text
# ("請寄到lin@example.com謝謝") took the words around it too.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# International numbers, and (with or without a country code) mainland, Taiwan and Hong Kong numbers
# as people write them, grouped by spaces or dashes. A number with a letter, `+` or digit before it
# is not one (P0912345678 is a policy number); dates (2026-12-06), times and amounts have no
# leading-0 area code and no 4+4 grouping, so they stay.
_PHONE = re.compile(
    r"(?<![A-Za-z0-9+])(?:\+\d{1,3}[\s-]?)?(?:"
    r"1[3-9]\d(?:[\s-]?\d){8}"  # mainland mobile: 138 0013 8000
    r"|09\d{2}[\s-]?\d{3}[\s-]?\d{3}"  # Taiwan mobile: 0912-345-678
    r"|0\d{1,3}[\s-]?\d{3,4}[\s-]?\d{4}"  # area code + number: 021-62345678, 02-2345-6789, 0755-8888 6666
    r"|\(\d{2,4}\)\s?\d{3,4}[\s-]?\d{4}"  # (02)2345-6789
    r"|[2-9]\d{3} \d{4}"  # Hong Kong: 9123 4567 (a space only: 5000-8000 is a range)
    r")(?!\d)"
    r"|\+\d[\d\s-]{7,}\d"
)


def redact_contacts(text: str, *known: str | None) -> str:
    """Contact details a customer typed into free text, replaced before the text leaves intake.

    The stored ticket keeps the original for the people allowed to see it; events (read by
    every other service) get `[email]` / `[phone]` instead. The customer's own email and phone
    are removed however they were typed.
    """
    for value in known:
        if value:
            text = text.replace(value, "[email]" if "@" in value else "[phone]")
    if "@" in text:  # the pattern scans every run of word characters (all of a Chinese text) for one
        text = _EMAIL.sub("[email]", text)
    return _PHONE.sub("[phone]", text)


def redact_to_fit(text: str, limit: int, *known: str | None) -> str:
    """`redact_contacts`, cut to `limit` characters (the event field's max_length).

    `[email]` / `[phone]` can be longer than what they replace (`a@b.c`, a phone such as `123`),
    so text the API accepted at its own limit could outgrow the event's field and fail the request.
    """
    return redact_contacts(text, *known)[:limit]


# The email channel's customers: `email:<address>`, or `email:unknown:<Message-ID>` without a sender.
EMAIL_EXTERNAL_ID = "email:"
UNKNOWN_SENDER = "unknown:"
# A channel's own prefix on an external id (`tel:`, `wechat:`), masked apart from the value.
_SCHEME = re.compile(r"[A-Za-z][\w+.-]{0,30}:")
_ADDRESS = re.compile(r"[^@\s:]+@[^@\s:]+")
_ASCII_WORD = re.compile(r"[A-Za-z0-9]")


def email_in_external_id(external_id: str | None) -> str | None:
    """The sender address the email channel made the customer's external id from, if any."""
    if not external_id or not external_id.startswith(EMAIL_EXTERNAL_ID):
        return None
    address = external_id.removeprefix(EMAIL_EXTERNAL_ID)
    return address if "@" in address and not address.startswith(UNKNOWN_SENDER) else None


def mask_external_id(external_id: str | None) -> str | None:
    """A channel's customer id masked as the contact it is: `email:lin@example.com` →
    `email:l**@example.com`, a phone number as `mask_phone`. Other ids (a CRM's own) stay."""
    if not external_id:
        return external_id
    if (address := email_in_external_id(external_id)) is not None:
        return f"{EMAIL_EXTERNAL_ID}{mask_email(address)}"
    scheme = _SCHEME.match(external_id)
    prefix = scheme.group() if scheme else ""
    value = external_id[len(prefix) :]
    if _ADDRESS.fullmatch(value):
        return f"{prefix}{mask_email(value)}"
    if _PHONE.fullmatch(value):
        return f"{prefix}{mask_phone(value)}"
    return external_id


@lru_cache(maxsize=64)
def _name_pattern(name: str) -> re.Pattern[str]:
    # A Latin name is a word of its own (`Li` is not in `Lisbon`); Chinese has no spaces between
    # words, so a CJK edge takes no boundary (`林小美您好`).
    before = r"(?<![A-Za-z0-9])" if _ASCII_WORD.match(name[0]) else ""
    after = r"(?![A-Za-z0-9])" if _ASCII_WORD.match(name[-1]) else ""
    return re.compile(before + re.escape(name) + after)


def redact_person(text: str, *, name: str | None, known: Iterable[str | None] = ()) -> str:
    """Free text with a person taken out for good (erasure): every email and phone number, the
    person's own `known` contacts however they were typed, and their name as `[name]`.

    A name of one character (a family name alone) would take every occurrence of a common
    character with it, so it stays.
    """
    text = redact_contacts(text, *known)
    name = (name or "").strip()
    return _name_pattern(name).sub("[name]", text) if len(name) >= 2 else text


def sender_hash(address: str | None) -> str | None:
    """What the email archive keeps to find a sender's messages again (erasure): a digest of
    the address as compared everywhere, lower case."""
    address = (address or "").strip().lower()
    return hashlib.sha256(address.encode("utf-8", "surrogatepass")).hexdigest() if address else None


def field_max_length(model: type[BaseModel], name: str) -> int:
    """The max_length a contract declares for one of its text fields, to cut redacted text to."""
    for constraint in model.model_fields[name].metadata:
        limit = getattr(constraint, "max_length", None)  # pydantic keeps it as annotated_types.MaxLen
        if isinstance(limit, int):
            return limit
    raise LookupError(f"{model.__name__}.{name} declares no max_length")
