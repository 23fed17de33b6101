"""Rules, urgency and difficulty (疑難問題): the pure decision that follows the model."""

from __future__ import annotations

import time

import pytest

from helpdesk_shared.contracts.enums import Priority, TicketKind
from routing_service.classification import announces_classification
from routing_service.domain.classifier import Prediction
from routing_service.domain.difficulty import (
    DifficultyPolicy,
    InvalidPattern,
    Rule,
    RuleOutcome,
    TicketFacts,
    apply_rules,
    decide,
    validate_pattern,
)

CONFIDENT = Prediction("auto-insurance", 0.93, [("auto-insurance", 0.93), ("home-insurance", 0.04)])
SPLIT = Prediction(
    "auto-insurance", 0.48, [("auto-insurance", 0.48), ("home-insurance", 0.41), ("life", 0.05)]
)
NO_RULES = RuleOutcome()


def test_keyword_rules_match_across_scripts_and_width() -> None:
    rule = Rule(name="理賠", pattern="理賠|索赔", domain="claims")
    assert apply_rules([rule], "請問理赔要多久").domain == "claims"  # simplified text, traditional rule
    assert apply_rules([rule], "索賠進度").domain == "claims"  # traditional text, simplified keyword
    assert apply_rules([Rule(name="vip", pattern="ＶＩＰ", category="vip")], "vip 客戶").category == "vip"
    assert apply_rules([rule], "保費怎麼繳").matched == ()


def test_regex_rules_match_the_original_or_the_normalised_text() -> None:
    policy_no = Rule(name="policy number", pattern=r"\bP\d{6}\b", is_regex=True, category="policy")
    assert apply_rules([policy_no], "my policy p123456 lapsed").category == "policy"
    assert apply_rules([policy_no], "no number here").category is None
    traditional = Rule(name="退保", pattern="退保|解約", is_regex=True, domain="cancellation")
    assert apply_rules([traditional], "我想解约").domain == "cancellation"
    escapes = Rule(name="policy no", pattern=r"保單\s?\D?\d{3}", is_regex=True, category="policy")
    assert apply_rules([escapes], "保单 A123 的状态").category == "policy"  # \D and \s survive


def test_rules_in_order_first_domain_and_category_win_any_urgent_counts() -> None:
    rules = [
        Rule(name="urgent words", pattern="緊急|马上", urgent=True),
        Rule(name="car", pattern="車", domain="auto-insurance", category="car"),
        Rule(name="claim", pattern="理賠", domain="claims", category="claims"),
    ]
    outcome = apply_rules(rules, "緊急！車禍理賠")
    assert (outcome.domain, outcome.category, outcome.urgent) == ("auto-insurance", "car", True)
    assert outcome.matched == ("urgent words", "car", "claim")
    assert outcome.urgent_by == "urgent words"


def test_invalid_patterns_are_refused() -> None:
    for pattern, is_regex in (
        ("", False),
        ("  ", True),
        ("|||", False),
        ("(unclosed", True),
        ("a{4294967296}", True),  # re raises OverflowError, not re.error, for this one
        (r"(a)\1", True),  # a back-reference: no linear-time engine matches it
        ("(?=保單)保", True),  # nor a look-around
        ("x" * 501, False),
    ):
        with pytest.raises(InvalidPattern):
            validate_pattern(pattern, is_regex=is_regex)
    validate_pattern(r"保單\d+", is_regex=True)
    validate_pattern("理賠|索賠", is_regex=False)


def test_a_rule_domain_overrides_the_model_with_full_confidence() -> None:
    outcome = apply_rules([Rule(name="claims", pattern="理賠", domain="claims")], "理賠")
    decision = decide(rules=outcome, prediction=SPLIT, facts=TicketFacts())
    assert (decision.domain, decision.confidence, decision.source) == ("claims", 1.0, "rule")
    assert decision.domains == [("claims", 1.0)]
    assert decision.reasons == ["rule: claims"]
    assert not decision.difficult  # the model's doubt no longer matters


def test_a_confident_model_decision_is_neither_difficult_nor_urgent() -> None:
    decision = decide(rules=NO_RULES, prediction=CONFIDENT, facts=TicketFacts())
    assert (decision.domain, decision.source, decision.difficult, decision.urgent) == (
        "auto-insurance",
        "model",
        False,
        False,
    )
    assert decision.reasons == []
    assert decision.informative


def test_two_strong_domains_and_low_confidence_make_it_difficult() -> None:
    decision = decide(rules=NO_RULES, prediction=SPLIT, facts=TicketFacts())
    assert decision.difficult
    assert decision.reasons == [
        "multi-domain: auto-insurance 0.48, home-insurance 0.41",
        "low confidence: 0.48 < 0.50",
    ]
    relaxed = DifficultyPolicy(multi_domain_score=0.45, low_confidence=0.4)
    assert not decide(rules=NO_RULES, prediction=SPLIT, facts=TicketFacts(), policy=relaxed).difficult


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (TicketFacts(kind=TicketKind.COMPLAINT), "complaint"),
        (TicketFacts(customer_vip=True), "vip customer"),
        (TicketFacts(reopen_count=2), "reopened 2 times"),
    ],
)
def test_complaints_vips_and_twice_reopened_tickets_are_difficult(facts: TicketFacts, reason: str) -> None:
    decision = decide(rules=NO_RULES, prediction=CONFIDENT, facts=facts)
    assert decision.difficult
    assert decision.reasons == [reason]


def test_once_reopened_is_not_difficult() -> None:
    assert not decide(rules=NO_RULES, prediction=CONFIDENT, facts=TicketFacts(reopen_count=1)).difficult


def test_urgency_from_priority_detection_or_a_rule() -> None:
    urgent_rule = apply_rules([Rule(name="asap", pattern="asap", urgent=True)], "please ASAP")
    cases = [
        (TicketFacts(priority=Priority.URGENT), NO_RULES, "urgent: priority"),
        (TicketFacts(urgent_detected=True), NO_RULES, "urgent: detected in the text"),
        (TicketFacts(), urgent_rule, "urgent: rule asap"),
    ]
    for facts, rules, reason in cases:
        decision = decide(rules=rules, prediction=CONFIDENT, facts=facts)
        assert decision.urgent
        assert reason in decision.reasons
        assert not decision.difficult
    assert not decide(rules=NO_RULES, prediction=CONFIDENT, facts=TicketFacts(priority=Priority.HIGH)).urgent


def test_without_a_model_nothing_is_guessed_and_nothing_is_difficult_for_it() -> None:
    decision = decide(rules=NO_RULES, prediction=None, facts=TicketFacts())
    assert (decision.domain, decision.confidence, decision.domains, decision.source) == (
        None,
        0.0,
        [],
        "none",
    )
    assert not decision.difficult
    assert not decision.informative
    hinted = decide(rules=NO_RULES, prediction=None, facts=TicketFacts(category_hint="billing"))
    assert hinted.category == "billing"
    assert hinted.informative
    complaint = decide(rules=NO_RULES, prediction=None, facts=TicketFacts(kind=TicketKind.COMPLAINT))
    assert complaint.difficult
    assert complaint.informative


def test_a_ticket_with_sla_clocks_is_announced_even_when_nothing_was_learnt() -> None:
    # ticket.classified is the only event with the clocks' due times: intake shows them.
    plain = decide(rules=NO_RULES, prediction=None, facts=TicketFacts())
    assert not plain.informative
    assert announces_classification(plain, clocks_started=True)
    assert not announces_classification(plain, clocks_started=False)
    hinted = decide(rules=NO_RULES, prediction=None, facts=TicketFacts(category_hint="billing"))
    assert announces_classification(hinted, clocks_started=False)


def test_long_rule_names_are_cut_to_the_reason_limit() -> None:
    outcome = apply_rules([Rule(name="長" * 250, pattern="保", category="c")], "保單")
    (reason,) = decide(rules=outcome, prediction=CONFIDENT, facts=TicketFacts()).reasons
    assert len(reason) == 200
    assert reason.endswith("…")


def test_a_regex_rule_matches_in_linear_time() -> None:
    # With backtracking, (a+)+$ against 40 a's and a "!" never finishes: every replica's event
    # loop stuck on every ticket. A linear-time engine answers at once.
    rule = Rule(name="slow", pattern="(a+)+$", is_regex=True, domain="x")
    validate_pattern(rule.pattern, is_regex=True)
    text = "a" * 40 + "!"
    started = time.perf_counter()
    assert apply_rules([rule], text).domain is None
    assert time.perf_counter() - started < 1.0
    assert apply_rules([rule], "a" * 40).domain == "x"
    assert apply_rules(
        [Rule(name="ci", pattern="URGENT", is_regex=True, urgent=True)], "urgent please"
    ).urgent


def test_text_with_a_lone_surrogate_is_matched_not_an_error() -> None:
    # JSON allows "\ud800"; the rules saw it first and OpenCC refused to encode it (a 500).
    assert (
        apply_rules([Rule(name="claims", pattern="理賠", domain="claims")], "理賠\ud800").domain == "claims"
    )
    validate_pattern("理賠|\ud800", is_regex=False)
