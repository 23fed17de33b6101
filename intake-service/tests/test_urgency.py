"""Urgency is read from the customer's words in either script, any case and full width."""

from __future__ import annotations

import pytest

from helpdesk_shared.text import normalise, tokens
from intake_service.domain.urgency import detect_urgent
from intake_service.new_ticket import TicketDraft
from intake_service.schemas import TicketCreate


@pytest.mark.parametrize(
    "text",
    [
        "保單很緊急",
        "保单很紧急",
        "請加急處理",
        "十萬火急！",
        "这是急件",
        "急需理赔款",
        "請盡快回覆",
        "请尽快回复",
        "馬上處理",
        "立刻联系我",
        "立即退款",
        "URGENT: claim",
        "please reply asap",
        "Ｕｒｇｅｎｔ：保單",
        "an Emergency",
        "call me immediately.",
    ],
)
def test_urgent_words_in_any_spelling(text: str) -> None:
    assert detect_urgent(normalise(text))


@pytest.mark.parametrize(
    "text", ["不急，慢慢來", "urgently", "insurgent groups", "緊 急", "保單理賠進度查詢"]
)
def test_calm_text_is_not_urgent(text: str) -> None:
    assert not detect_urgent(normalise(text))


def test_a_draft_reads_urgency_and_search_words_from_subject_and_description() -> None:
    body = TicketCreate.model_validate(
        {
            "channel": "web",
            "kind": "question",
            "subject": "理賠進度",
            "description": "請盡快告訴我結果？",
            "customer": {"external_id": "c-1"},
        }
    )
    draft = TicketDraft(body=body, caller="channel")
    assert draft.urgent_detected is True
    assert draft.search_tokens == " ".join(tokens("理賠進度 請盡快告訴我結果？", for_search=True))
    calm = TicketDraft(body=body.model_copy(update={"description": "告訴我結果"}), caller="channel")
    assert calm.urgent_detected is False
