"""Urgency detection from the customer's own words (緊急, 加急, urgent, ASAP …)."""

from __future__ import annotations

import re

# Matched against normalised text (`helpdesk_shared.text.normalise`: NFKC, Simplified, lower case),
# which the ticket's search words are cut from anyway: one spelling covers 緊急 and 紧急, URGENT,
# Urgent and ＵＲＧＥＮＴ, and the words share one group (a plain search instead of a
# case-insensitive one over every alternative, ~3 µs instead of ~9 per ticket).
_URGENT_PATTERN = re.compile(
    r"紧急|加急|十万火急|急件|急需|尽快|马上|立刻|立即|\b(?:urgent|asap|emergency|immediately)\b"
)


def detect_urgent(normalised: str) -> bool:
    """Whether normalised text asks for urgency."""
    return _URGENT_PATTERN.search(normalised) is not None
