"""Normalisation folds the variants customers type; segmentation yields words, not punctuation."""

from __future__ import annotations

import pytest

from helpdesk_shared import text
from helpdesk_shared.text import normalise, tokens


def test_traditional_simplified_and_full_width_fold_together() -> None:
    assert normalise("臺灣 保單理賠") == normalise("台湾 保单理赔") == "台湾 保单理赔"
    assert normalise("ＡＳＡＰ　１２３") == "asap 123"


def test_tokens_drop_punctuation_and_whitespace() -> None:
    assert tokens("保單理賠進度如何？ ASAP!") == ["保单", "理赔", "进度", "如何", "asap"]


def test_search_tokens_include_the_words_inside_compounds() -> None:
    assert {"人寿", "保险", "人寿保险"} <= set(tokens("人壽保險", for_search=True))


def test_remembered_segments_give_the_same_words_and_the_memory_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(text, "_WORDS", {})
    monkeypatch.setattr(text, "_WORDS_KEPT", 5)
    sentence = "保單理賠進度如何？ ASAP! 理賠，理賠"
    first = tokens(sentence)
    assert first == ["保单", "理赔", "进度", "如何", "asap", "理赔", "理赔"]
    assert tokens(sentence) == first  # answered from memory (cleared when full) alike
    assert 0 < len(text._WORDS) <= 5
    assert tokens("？ ！，") == [] and text._WORDS.get("?") == ""  # (full-width folded by NFKC)
