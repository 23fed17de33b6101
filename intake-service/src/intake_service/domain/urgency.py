"""Urgency detection from the customer's own words (緊急, 加急, urgent, ASAP …)."""

from __future__ import annotations

import re

_URGENT_PATTERN = re.compile(
    r"緊急|紧急|加急|十萬火急|十万火急|急件|急需|盡快|尽快|馬上|马上|立刻|立即"
    r"|\burgent\b|\basap\b|\bemergency\b|\bimmediately\b",
    re.IGNORECASE,
)


def detect_urgent(*texts: str) -> bool:
    return any(_URGENT_PATTERN.search(t) for t in texts if t)
