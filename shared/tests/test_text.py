"""Normalisation folds the variants customers type; segmentation yields words, not punctuation."""

from __future__ import annotations

import random
import unicodedata

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


def test_normalisation_equals_full_nfkc_on_mixed_scripts() -> None:
    """The full-width fast path folds exactly as NFKC does, over the characters where they could
    differ: the full-width block and its neighbours (｟ U+FF5F is not folded to ASCII), half-width
    katakana, combining accents after folded letters, ligatures, circled numbers, Hangul jamo."""
    alphabet = (
        [chr(c) for c in range(0xFF00, 0xFF70)]
        + ["\u3000", "\u3002", "\u3001", " ", "\t"]
        + [chr(c) for c in range(0x0300, 0x0310)]
        + ["ﬁ", "ﬀ", "①", "㈱", "㎏", "ᄀ", "ᅡ", "é", "e", "A", "z", "1", "?"]
        + list("保單理賠進度查詢臺灣人壽保險")
        + list(INVISIBLE)
    )
    rng = random.Random(20261206)
    for _ in range(5000):
        sample = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        visible = "".join(char for char in sample if char not in INVISIBLE)
        assert text._nfkc(sample) == unicodedata.normalize("NFKC", visible), repr(sample)


# Zero-width space, non-joiner and joiner, soft hyphen, word joiner, BOM, bidi marks.
INVISIBLE = "\u200b\u200c\u200d\u00ad\u2060\ufeff\u200e\u200f\u202a\u202c\u180e"


@pytest.mark.parametrize("char", list(INVISIBLE))
def test_invisible_characters_pasted_into_text_do_not_split_words(char: str) -> None:
    # Text pasted from web pages, WeChat or Word carries them: "緊\u200b急" was not urgent.
    assert normalise(f"緊{char}急") == normalise("緊急") == "紧急"
    assert tokens(f"保{char}單理賠") == tokens("保單理賠") == ["保单", "理赔"]


def test_long_segments_are_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    # jieba returns a run of letters and digits as one piece: unique long runs (hashes, tracking
    # URLs) would fill the memory with pieces never seen again.
    monkeypatch.setattr(text, "_WORDS", {})
    long_run = "a1" * 5_000
    assert tokens(f"運單 {long_run} 保單") == ["运单", long_run, "保单"]
    assert set(text._WORDS) >= {"运单", "保单"}
    assert all(len(piece) <= 32 for piece in text._WORDS)


def test_words_of_normalised_text_are_its_tokens() -> None:
    sentence = "保單理賠進度如何？ ＡＳＡＰ！"
    assert text.words(normalise(sentence), for_search=True) == tokens(sentence, for_search=True)
    assert text.words(normalise(sentence)) == tokens(sentence) == ["保单", "理赔", "进度", "如何", "asap"]


def test_every_run_of_whitespace_becomes_one_space_and_the_ends_none() -> None:
    """Every character Python counts as whitespace (line and paragraph separators, the ASCII
    information separators, NBSP, …), alone or in a run, as the `\\s+` collapse it replaced."""
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    assert len(spaces) > 20
    for space in spaces:
        assert normalise(f"{space}保單{space}{space}\t理賠 {space}") == "保单 理赔", hex(ord(space))
