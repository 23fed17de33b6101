"""What follows the model: lead-editable rules, urgency and difficulty (疑難問題).

The decision for one ticket is made in three steps, all pure:

1. **Rules** written by leads (keywords or regular expressions → domain, category, urgent) are
   evaluated first, in their priority order. A rule that names a domain *forces* it with
   confidence 1.0 — leads use rules exactly where they know better than the model (a new
   product name, a regulatory keyword). Rules without a domain only add a category or urgency.
2. **The model** decides the domain when no rule did.
3. **Difficulty and urgency** are judged from the outcome and the ticket's facts. Difficult
   tickets go to the team lead, so every reason is spelled out: two or more domains above
   a threshold (the question spans specialities), a complaint, low model confidence, a VIP
   customer, or a ticket reopened twice. Without a model there is no confidence to judge, so a
   missing model does not make every ticket difficult.

Keywords are compared on normalised text (full-width, Traditional/Simplified and case folded),
so a rule written as 「理賠」 also catches 「理赔」. A regular expression is tried as written on the
original text, and with its Chinese characters simplified on the normalised text; only the
characters are converted (never the whole pattern, whose escapes such as `\\D` must not be
lower-cased), so a pattern written in either script matches text in either script.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import re2

from helpdesk_shared.contracts.enums import Priority, TicketKind
from helpdesk_shared.text import encodable, normalise
from routing_service.domain.classifier import Prediction

MAX_PATTERN_LENGTH = 500
MAX_REASON_LENGTH = 200
KEYWORD_SEPARATOR = "|"


class InvalidPattern(ValueError):
    """A rule's pattern is empty, too long, or not a valid regular expression."""


@dataclass(frozen=True, slots=True)
class Rule:
    """A lead-editable routing rule, evaluated before the model."""

    name: str
    pattern: str
    is_regex: bool = False
    domain: str | None = None
    category: str | None = None
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What the matching rules decided together."""

    domain: str | None = None
    category: str | None = None
    urgent: bool = False
    matched: tuple[str, ...] = ()
    urgent_by: str | None = None


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """What intake told us about the ticket beyond its text."""

    kind: TicketKind = TicketKind.QUESTION
    priority: Priority = Priority.NORMAL
    urgent_detected: bool = False
    customer_vip: bool = False
    reopen_count: int = 0
    category_hint: str | None = None


@dataclass(frozen=True, slots=True)
class DifficultyPolicy:
    multi_domain_score: float = 0.3
    """Each of two or more domains scoring at least this makes a ticket multi-domain."""
    low_confidence: float = 0.5
    """A model confidence below this makes a ticket difficult."""
    reopen_limit: int = 2
    """A ticket reopened this many times is difficult."""


DEFAULT_POLICY = DifficultyPolicy()


@dataclass(frozen=True, slots=True)
class Decision:
    domain: str | None
    confidence: float
    domains: list[tuple[str, float]]
    category: str | None
    urgent: bool
    difficult: bool
    reasons: list[str] = field(default_factory=list)
    source: Literal["rule", "model", "none"] = "none"

    @property
    def informative(self) -> bool:
        """True when routing learnt something intake did not already know."""
        return self.domain is not None or self.category is not None or self.urgent or self.difficult


def validate_pattern(pattern: str, *, is_regex: bool) -> None:
    """Refuse patterns that could never match or would not compile (raised at rule creation)."""
    if not pattern.strip():
        raise InvalidPattern("The pattern is empty")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidPattern(f"The pattern is longer than {MAX_PATTERN_LENGTH} characters")
    if is_regex:
        try:
            re.compile(pattern)  # refuses what RE2 would misread (a repeat count past re's limit)
            _regex(pattern)
            _regex(_simplified(pattern))
        # re raises OverflowError for a repeat count past its limit ("a{4294967296}").
        except (re.error, OverflowError, re2.error, UnicodeEncodeError) as exc:
            raise InvalidPattern(f"Not a valid regular expression (RE2 syntax): {exc}") from exc
    elif not _keywords(pattern):
        raise InvalidPattern("The pattern has no keywords")


def rule_matches(rule: Rule, text: str, normalised: str) -> bool:
    if rule.is_regex:
        return (
            _regex(_simplified(rule.pattern)).search(normalised) is not None
            or _regex(rule.pattern).search(encodable(text)) is not None
        )
    return any(keyword in normalised for keyword in _keywords(rule.pattern))


def apply_rules(rules: Sequence[Rule], text: str, normalised: str | None = None) -> RuleOutcome:
    """Evaluate `rules` in order: the first domain and first category win, any urgent rule counts.

    `normalised`: `normalise(text)`, when the caller has it already."""
    if normalised is None:
        normalised = normalise(text)
    domain = category = urgent_by = None
    matched: list[str] = []
    for rule in rules:
        if not rule_matches(rule, text, normalised):
            continue
        matched.append(rule.name)
        domain = domain or rule.domain
        category = category or rule.category
        if rule.urgent and urgent_by is None:
            urgent_by = rule.name
    return RuleOutcome(
        domain=domain,
        category=category,
        urgent=urgent_by is not None,
        matched=tuple(matched),
        urgent_by=urgent_by,
    )


def decide(
    *,
    rules: RuleOutcome,
    prediction: Prediction | None,
    facts: TicketFacts,
    policy: DifficultyPolicy = DEFAULT_POLICY,
) -> Decision:
    """Combine rules, the model's prediction (None: no model) and the ticket's facts."""
    reasons = [_reason(f"rule: {name}") for name in rules.matched]
    source: Literal["rule", "model", "none"]
    if rules.domain is not None:
        source, domain, confidence = "rule", rules.domain, 1.0
        domains = [(rules.domain, 1.0)]
    elif prediction is not None:
        source, domain, confidence = "model", prediction.domain, prediction.confidence
        domains = list(prediction.domains)
    else:
        source, domain, confidence, domains = "none", None, 0.0, []

    difficult_reasons: list[str] = []
    if source == "model":
        strong = [(d, s) for d, s in domains if s >= policy.multi_domain_score]
        if len(strong) >= 2:
            listed = ", ".join(f"{d} {s:.2f}" for d, s in strong)
            difficult_reasons.append(_reason(f"multi-domain: {listed}"))
        if confidence < policy.low_confidence:
            difficult_reasons.append(f"low confidence: {confidence:.2f} < {policy.low_confidence:.2f}")
    if facts.kind == TicketKind.COMPLAINT:
        difficult_reasons.append("complaint")
    if facts.customer_vip:
        difficult_reasons.append("vip customer")
    if facts.reopen_count >= policy.reopen_limit:
        difficult_reasons.append(f"reopened {facts.reopen_count} times")

    urgent_reasons: list[str] = []
    if facts.priority == Priority.URGENT:
        urgent_reasons.append("urgent: priority")
    if facts.urgent_detected:
        urgent_reasons.append("urgent: detected in the text")
    if rules.urgent_by is not None:
        urgent_reasons.append(_reason(f"urgent: rule {rules.urgent_by}"))

    return Decision(
        domain=domain,
        confidence=confidence,
        domains=domains,
        category=rules.category or facts.category_hint,
        urgent=bool(urgent_reasons),
        difficult=bool(difficult_reasons),
        reasons=reasons + difficult_reasons + urgent_reasons,
        source=source,
    )


def _reason(text: str) -> str:
    return text if len(text) <= MAX_REASON_LENGTH else text[: MAX_REASON_LENGTH - 1] + "…"


@lru_cache(maxsize=1024)
def _keywords(pattern: str) -> tuple[str, ...]:
    return tuple(k for k in (normalise(part) for part in pattern.split(KEYWORD_SEPARATOR)) if k)


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re2._Regexp[str]:
    # RE2 matches in time linear in the text: a backtracking engine on a lead's "(a+)+$" took
    # seconds per ticket, doubling with each character, on every replica's event loop.
    return re2.compile(pattern, _RE2_OPTIONS)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.case_sensitive = False
_RE2_OPTIONS.log_errors = False  # an invalid pattern is refused with a 422, not logged to stderr


@lru_cache(maxsize=1024)
def _simplified(pattern: str) -> str:
    return "".join(normalise(ch) if _is_han(ch) else ch for ch in pattern)


def _is_han(ch: str) -> bool:
    code = ord(ch)
    return 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x3134F
