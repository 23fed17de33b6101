"""Chinese-first text normalisation and segmentation, shared by search and classification.

`normalise` folds the variants a customer may type for the same words: full-width
and half-width forms (NFKC), Traditional and Simplified characters (OpenCC), letter
case and runs of whitespace. `tokens` segments the normalised text with jieba (the
jieba-rs implementation through `rjieba`: the same dictionary and HMM, about twenty times
faster than the pure-Python package, which matters on the ticket-creation path) and
drops punctuation, so 「保單理賠」, 「保单理赔」 and 「ＰＯＬＩＣＹ 保單」 meet the same terms.
"""

from __future__ import annotations

import asyncio
import re
import threading
import unicodedata
from functools import lru_cache

import opencc
import rjieba

_WORD = re.compile(r"\w", re.UNICODE)
_init_lock = threading.Lock()


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


def normalise(text: str) -> str:
    """NFKC without invisible format characters, Traditional → Simplified, lower case, single spaces."""
    try:
        converted = _t2s().convert(_nfkc(text))
    except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"): OpenCC works on UTF-8
        converted = _t2s().convert(_nfkc(encodable(text)))
    # str.split() breaks at runs of exactly what `\s+` matches, in a third of the time.
    return " ".join(converted.split()).lower()


def encodable(text: str) -> str:
    """The text with any lone surrogate (which UTF-8 cannot carry) replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


_SURROGATE = re.compile("[\ud800-\udfff]")


# Nearly every Chinese text has full-width punctuation (，？！：) or the ideographic space, and any
# of them fails CPython's NFKC quick check, sending `normalize` through the whole algorithm
# (~13 µs for a ticket's subject and description). Their NFKC forms are plain ASCII, so folding
# them by table first leaves most texts already in NFKC, which the quick check confirms in well
# under a microsecond; anything else still gets the full NFKC, and the result is the same.
#
# The same pass drops the invisible format characters that text pasted from web pages, WeChat or
# Word carries (zero-width space and joiners, soft hyphen, word joiner, bidi marks, BOM): NFKC keeps
# them and they are not whitespace, so "緊\u200b急" was not urgent and "保\u200b單" not 保单.
_INVISIBLE = [0x00AD, 0x180E, *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2065), 0xFEFF]
_HALF_WIDTH = (
    {chr(code): chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)}
    | {"\u3000": " "}
    | {chr(code): "" for code in _INVISIBLE}
)
_FULL_WIDTH = re.compile("[" + "".join(map(re.escape, _HALF_WIDTH)) + "]")


def _half_width(match: re.Match[str]) -> str:
    return _HALF_WIDTH[match.group()]


def _nfkc(text: str) -> str:
    """NFKC of the text without its invisible format characters."""
    folded = _FULL_WIDTH.sub(_half_width, text)
    return folded if unicodedata.is_normalized("NFKC", folded) else unicodedata.normalize("NFKC", folded)


def warm_up() -> None:
    """Load the dictionaries now instead of on the first request."""
    with _init_lock:
        rjieba.cut("預熱")
        _t2s()


def tokens(text: str, *, for_search: bool = False) -> list[str]:
    """Normalise and segment text into words; `for_search` adds the shorter words inside long ones."""
    return words(normalise(text), for_search=for_search)


def words(normalised: str, *, for_search: bool = False) -> list[str]:
    """`tokens` of text that `normalise` already folded (for callers that need both)."""
    cut = rjieba.cut_for_search(normalised) if for_search else rjieba.cut(normalised)
    found = []
    for piece in cut:
        word = _WORDS.get(piece)
        if word is None:
            word = _word(piece)
        if word:
            found.append(word)
    return found


# Segments seen before → the word they make ("" for spaces and punctuation): the same few
# thousand come back in every text, and a dict look-up is several times cheaper than stripping
# and searching each one again (every new ticket is segmented on its way in). Only short ones:
# jieba returns a run of letters and digits as one piece, and long runs (hashes, tracking URLs,
# signatures) are rarely seen twice — 200,000 pieces of 20,000 characters would be gigabytes.
_WORDS: dict[str, str] = {}
_WORDS_KEPT = 200_000
_LONGEST_KEPT = 32


def _word(piece: str) -> str:
    stripped = piece.strip()
    word = stripped if stripped and _WORD.search(stripped) else ""
    if len(piece) <= _LONGEST_KEPT:
        if len(_WORDS) >= _WORDS_KEPT:
            _WORDS.clear()
        _WORDS[piece] = word
    return word


async def warm_up_in_background(_: object = None) -> None:
    """Background task for services that segment text: load the dictionary off the event loop."""
    await asyncio.to_thread(warm_up)
