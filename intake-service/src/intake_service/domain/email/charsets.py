"""Charsets: label aliases, guessing undeclared 8-bit data, mojibake repair, never-raising decoding.

GB2312/GBK labels decode as GB18030, Big5 as CP950 then Big5-HKSCS, Shift_JIS
as CP932, KS C 5601 as CP949; Latin-1/ASCII labels give way to valid UTF-8.
"""

from __future__ import annotations

import codecs
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from intake_service.domain.email.context import _Ctx

_GB = ("gb18030",)
_BIG5 = ("cp950", "big5hkscs")
_CHARSET_ALIASES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        (
            "gb2312",
            "gb_2312",
            "gb_2312-80",
            "csgb2312",
            "euc-cn",
            "euccn",
            "x-euc-cn",
            "gbk",
            "x-gbk",
            "cp936",
            "ms936",
            "windows-936",
            "gb18030",
            "gb-18030",
            "chinese",
            "iso-ir-58",
            "csiso58gb231280",
        ),
        _GB,
    ),
    "hz-gb-2312": ("hz",),
    **dict.fromkeys(
        (
            "big5",
            "big-5",
            "big5-hkscs",
            "big5hkscs",
            "cn-big5",
            "x-x-big5",
            "csbig5",
            "cp950",
            "x-big5",
            "windows-950",
            "ms950",
        ),
        _BIG5,
    ),
    **dict.fromkeys(
        (
            "shift_jis",
            "shift-jis",
            "sjis",
            "x-sjis",
            "ms_kanji",
            "csshiftjis",
            "windows-31j",
            "cp932",
            "ms932",
        ),
        ("cp932", "shift_jis_2004"),
    ),
    **dict.fromkeys(("euc-jp", "eucjp", "x-euc-jp", "cseucpkdfmtjapanese"), ("euc_jp", "euc_jis_2004")),
    **dict.fromkeys(
        ("iso-2022-jp", "csiso2022jp", "iso2022jp"), ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2")
    ),
    **dict.fromkeys(
        (
            "ks_c_5601-1987",
            "ks_c_5601",
            "ks_c_5601-1989",
            "ksc5601",
            "euc-kr",
            "euckr",
            "korean",
            "cp949",
            "windows-949",
            "csksc56011987",
            "iso-ir-149",
        ),
        ("cp949",),
    ),
    **dict.fromkeys(("utf-8", "utf8", "unicode-1-1-utf-8", "x-unicode20utf8"), ("utf-8",)),
    **dict.fromkeys(("utf-7", "unicode-1-1-utf-7", "csunicode11utf7"), ("utf-7",)),
    "iso-8859-8-i": ("iso8859_8",),
    "iso-8859-6-i": ("iso8859_6",),
    **dict.fromkeys(("tis-620", "windows-874"), ("cp874",)),
}
#: Labels that promise little: trust valid UTF-8 over them.
_WEAK_ASCII = frozenset(("us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "7bit", "8bit", "us", "default"))
_WEAK_LATIN = frozenset(
    (
        "iso-8859-1",
        "iso8859-1",
        "iso_8859-1",
        "latin1",
        "latin-1",
        "l1",
        "cp819",
        "windows-1252",
        "cp1252",
        "x-cp1252",
    )
)
_CJK_CODECS = frozenset(
    ("gb18030", "cp950", "big5hkscs", "cp932", "shift_jis_2004", "euc_jp", "euc_jis_2004", "cp949")
)
_NOT_A_CHARSET = frozenset(
    ("unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined", "mbcs", "oem", "utf_8_sig")
)
_UNDECLARED = ("", "none", "unknown", "unknown-8bit", "x-unknown", "x-user-defined", "charset")


def _charset_label(charset: str | None) -> str:
    label = (charset or "").strip().strip("\"'").strip().lower()
    return label.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en


def _codecs_for(label: str) -> tuple[str, ...] | None:
    """Python codecs to try for a charset label; () when undeclared, None when unknown."""
    if label in _UNDECLARED or label in _WEAK_ASCII:
        return ()
    if label in _WEAK_LATIN:
        return ("cp1252", "latin-1")
    if label in _CHARSET_ALIASES:
        return _CHARSET_ALIASES[label]
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_A_CHARSET:
        return None
    if info.name == "gb2312" or info.name == "gbk":
        return _GB
    if info.name in ("big5", "big5hkscs", "cp950"):
        return _BIG5
    return (info.name,)


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (
        0x4E00 <= o <= 0x9FFF
        or 0x3400 <= o <= 0x4DBF
        or 0x3000 <= o <= 0x30FF
        or 0xFF00 <= o <= 0xFFEF
        or 0xAC00 <= o <= 0xD7AF
        or 0x20000 <= o <= 0x2FFFF
        or 0xF900 <= o <= 0xFAFF
    )


def _mostly_cjk(text: str) -> bool:
    high = [ch for ch in text if ord(ch) > 0x7F]
    if not high or any(0xE000 <= ord(ch) <= 0xF8FF for ch in high):
        return False
    return sum(_is_cjk(ch) for ch in high) >= 0.9 * len(high)


def _high_runs(data: bytes) -> list[int]:
    return [len(run) for run in re.findall(rb"[\x80-\xff]+", data)]


def _high_runs_even(data: bytes) -> bool:
    """Do bytes >= 0x80 come in pairs, as double-byte CJK text does (single-byte accents come alone)?"""
    runs = _high_runs(data)
    return bool(runs) and sum(1 for n in runs if n % 2 == 0) >= 0.9 * len(runs)


def _lossy_utf8(data: bytes) -> str | None:
    """UTF-8 with a few broken bytes (a truncated character, one stray byte) is still UTF-8."""
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - data.count("\ufffd".encode())
    good = sum(1 for ch in text if ord(ch) > 0x7F and ch != "\ufffd")
    return text if good >= 2 and good >= 4 * bad else None


def _cyrillic(data: bytes) -> tuple[str, str] | None:
    """Undeclared KOI8-R or Windows-1251: whole words of high bytes that read as mostly lowercase Cyrillic."""
    runs = _high_runs(data)
    if sum(runs) < 6 or sum(runs) < 3 * len(runs):
        return None
    best: tuple[int, str, str] | None = None
    for codec in ("koi8_r", "cp1251"):
        text = data.decode(codec, errors="replace")
        high = [ch for ch in text if ord(ch) > 0x7F]
        letters = [ch for ch in high if "\u0410" <= ch <= "\u044f" or ch in "Ёё"]
        if len(letters) < 0.95 * len(high):
            continue
        lower = sum(1 for ch in letters if ch.islower())
        if best is None or lower > best[0]:
            best = (lower, text, codec)
    return (best[1], best[2]) if best else None


def _guess(data: bytes, prefer: str | None = None) -> tuple[str, str]:
    """Decode undeclared 8-bit data: UTF-8, the charset already guessed for this message,
    Cyrillic, plausible GB18030/Big5, else Windows-1252."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if prefer:
        try:
            return data.decode(prefer), prefer
        except UnicodeDecodeError:
            pass
    lossy = _lossy_utf8(data)
    if lossy is not None:
        return lossy, "utf-8 (damaged bytes replaced)"
    cyrillic = _cyrillic(data)
    if cyrillic is not None:
        return cyrillic
    if _high_runs_even(data):
        for codec in ("gb18030", "cp950"):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                continue
            if _mostly_cjk(text):
                return text, codec
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _repair_mojibake(text: str, codec: str) -> str | None:
    """CJK bytes read as Latin-1/CP1252 and re-encoded as UTF-8: undo it when the round trip is exact.

    Only text whose non-ASCII characters all lie in the Latin-1/CP1252 range,
    number at least four and mostly stand next to each other (double-byte
    characters; Big5 trail bytes may be ASCII) qualifies, and the result must
    read as CJK without private-use characters — so genuine accented text
    ("Grüße", "danglüe") is left alone.
    """
    if any(ord(ch) > 0xFF and ch not in _CP1252_EXTRA for ch in text):
        return None
    for single in ("latin-1", "cp1252"):
        try:
            raw = text.encode(single)
        except UnicodeEncodeError:
            continue
        runs = _high_runs(raw)
        if sum(runs) < 4 or sum(n for n in runs if n >= 2) < 0.5 * sum(runs):
            return None
        try:
            repaired = raw.decode(codec)
        except UnicodeDecodeError:
            continue
        if _mostly_cjk(repaired):
            return repaired
    return None


_CP1252_EXTRA = frozenset(bytes(range(0x80, 0xA0)).decode("cp1252", errors="ignore"))


def _decode_bytes(data: bytes, charset: str | None, ctx: _Ctx, where: str) -> str:
    """Bytes to text for a declared charset, never raising."""
    if not data:
        return ""
    label = _charset_label(charset)
    candidates = _codecs_for(label)
    stateful = (
        bool(candidates) and candidates is not None and candidates[0].startswith(("utf-7", "hz", "iso2022"))
    )
    if data.isascii() and not stateful:
        if candidates is None:
            ctx.warn(f"{where}: unknown charset {label!r}")
        return data.decode("ascii")
    if candidates is None:
        text, used = ctx.guess(data)
        ctx.warn(f"{where}: unknown charset {label!r}, decoded as {used}")
        return text
    if not candidates:  # undeclared or ASCII-labelled 8-bit data
        text, used = ctx.guess(data)
        if used != "utf-8" or label not in _UNDECLARED:
            ctx.warn(f"{where}: 8-bit data labelled {label or 'nothing'!r}, decoded as {used}")
        return text
    if candidates[0] == "cp1252":  # Latin-1 labels: valid UTF-8 is almost certainly UTF-8
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            ctx.warn(f"{where}: labelled {label!r} but is UTF-8")
            return text
    if candidates[0] in _CJK_CODECS:
        try:
            as_utf8 = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            repaired = _repair_mojibake(as_utf8, candidates[0])
            if repaired is not None:
                ctx.warn(f"{where}: {label} text was double-encoded as UTF-8; repaired")
                return repaired
    for codec in candidates:
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    if candidates[0] != "utf-8":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            ctx.warn(f"{where}: labelled {label!r} but is UTF-8")
            return text
    ctx.warn(f"{where}: invalid {label} bytes replaced")
    return data.decode(candidates[0], errors="replace")
