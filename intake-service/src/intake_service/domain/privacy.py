"""Masking of customer contact data for people who do not need to see it (保密)."""

from __future__ import annotations

import re

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


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# International numbers, Chinese mobiles (with or without +86) and landlines with an area code.
_PHONE = re.compile(
    r"(?<![A-Za-z0-9+])(?:\+\d{1,3}[\s-]?)?(?:1[3-9]\d(?:[\s-]?\d){8}|0\d{2,3}[\s-]?\d{7,8}|\(\d{2,4}\)\s?\d{3,4}[\s-]?\d{4})(?!\d)"
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
