"""Reply extraction (``extract_reply``): quoted history and signatures cut from a message body."""

from __future__ import annotations

import re

from intake_service.domain.email.context import _clean
from intake_service.domain.email.model import MAX_REPLY_LIBRARY_CHARS, MAX_REPLY_LIBRARY_LINE

#: Quote markers and indentation. Atomic groups (Python 3.11+) keep every pattern below linear:
#: adjacent greedy whitespace quantifiers backtrack quadratically on long runs of spaces.
_QUOTE_PREFIX = r"(?>[ \t>]*)"
_TRAILING_WS = r"(?>[ \t]*)"
#: 在 2026年11月20日 …，客服 <a@b> 写道： / … 於 2026年11月20日 週五 寫道：
_ZH_WROTE = re.compile(
    rf"^{_QUOTE_PREFIX}(?:在|於|于)?[^\n]{{0,200}}?(?:写道|寫道|写到|寫到){_TRAILING_WS}[:：]?{_TRAILING_WS}$",
    re.MULTILINE,
)
#: 2026年11月20日(金) 10:00 山田 <a@b>: / …のメール: / …書きました:
_JA_WROTE = re.compile(
    rf"^{_QUOTE_PREFIX}[^\n]{{0,200}}?(?:書きました|のメール){_TRAILING_WS}[:：]{_TRAILING_WS}$", re.MULTILINE
)
#: On Fri, Nov 20, 2026 at 10:00 AM Support <support@example.com> wrote: (Gmail may wrap it once)
_EN_WROTE = re.compile(
    rf"^{_QUOTE_PREFIX}On [^\n]{{0,300}}?(?:\n{_QUOTE_PREFIX}[^\n]{{0,300}}?)?wrote:{_TRAILING_WS}$",
    re.MULTILINE,
)
_SEPARATOR = re.compile(
    rf"^{_QUOTE_PREFIX}-{{2,}}(?>(?:[ \t\xa0]|&nbsp;)*)"
    r"(?:原始邮件|原始郵件|原始信件|原邮件|Original Message)"
    r"(?>(?:[ \t\xa0]|&nbsp;)*)-{2,}(?>[ \t]*)$",
    re.MULTILINE | re.IGNORECASE,
)
#: Outlook's header block: 发件人/寄件者/From: followed within three lines by 发送时间/Sent/Date/To/Subject …
_HEADER_BLOCK = re.compile(
    rf"^{_QUOTE_PREFIX}\*?(?:发件人|發件人|寄件者|寄件人|From)\*?{_TRAILING_WS}[:：][^\n]*\n"
    rf"(?:{_QUOTE_PREFIX}[^\n]*\n){{0,2}}?{_QUOTE_PREFIX}\*?"
    r"(?:发送时间|發送時間|寄件日期|日期|时间|時間|收件人|收件者|主题|主旨|Sent|Date|To|Subject)\*?"
    rf"{_TRAILING_WS}[:：]",
    re.MULTILINE,
)
_SIG_DELIMITER = re.compile(r"^-- ?$", re.MULTILINE)
_SENT_FROM = re.compile(
    r"^(?:发自我的|發自我的|从我的|從我的|Sent from my |Get Outlook for )[^\n]{0,60}$",
    re.MULTILINE | re.IGNORECASE,
)
_QUOTED_LINE = re.compile(r"^[ \t]*>")


def _strip_quoted_edges(text: str) -> str:
    """Drop quoted (">") lines at the end and at the start; quotes interleaved with answers stay."""
    lines = text.split("\n")
    while lines and (not lines[-1].strip() or _QUOTED_LINE.match(lines[-1])):
        lines.pop()
    start = 0
    while start < len(lines) and (not lines[start].strip() or _QUOTED_LINE.match(lines[start])):
        start += 1
    return "\n".join(lines[start:])


def _earliest_quote_header(text: str) -> int | None:
    positions: list[int] = []
    for match in _ZH_WROTE.finditer(text):
        if re.search(r"[0-9０-９@]", match.group()):
            positions.append(match.start())
            break
    for pattern in (_JA_WROTE, _EN_WROTE, _SEPARATOR, _HEADER_BLOCK):
        found = pattern.search(text)
        if found:
            positions.append(found.start())
    return min(positions) if positions else None


def _library_input(text: str) -> str | None:
    """Text safe for mail-parser-reply, or None to skip it.

    Some of its patterns backtrack quadratically (``\\s*^`` over whitespace
    runs, ``On (.+?\\s?.+?) wrote:`` over long lines): lines are stripped (as
    the library does anyway), runs of blank lines and of spaces shortened, and
    long texts or lines skip the library.
    """
    if len(text) > MAX_REPLY_LIBRARY_CHARS:
        return None
    lines = [re.sub(r"[^\S\n]{5,}", "    ", line.strip()) for line in text.split("\n")]
    if any(len(line) > MAX_REPLY_LIBRARY_LINE for line in lines):
        return None
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def _library_reply(text: str) -> str | None:
    """The newest reply per mail-parser-reply (English/Outlook-style headers, signatures)."""
    from mailparser_reply.parser import EmailMessage  # imported lazily: regexes compile on first use

    message = EmailMessage(
        text=text, languages=["en", "zh", "de", "fr", "es", "ja"], keep_hyphen_lists=True
    ).read()
    if not message.replies:
        return None
    reply = message.replies[0]
    signature = str(reply.signatures or "").strip()
    body = str(reply.body if _plausible_signature(signature) else reply.full_body)
    return body.strip()


def _plausible_signature(signature: str) -> bool:
    """Accept the library's signature cut only when it looks like one (a sign-off, not a paragraph)."""
    if not signature:
        return True
    lines = [line for line in signature.split("\n") if line.strip()]
    first = lines[0].strip() if lines else ""
    if re.match(r"^[-_]{2,}$", first) or _SENT_FROM.match(first):
        return True
    return len(first) <= 40 and len(lines) <= 12


def extract_reply(text: str) -> str:
    """The newest part of a message body: quoted history and the signature removed.

    Chinese/Japanese reply headers ("在 …年…月…日 … 写道：", "寫道：", QQ
    Mail's "原始邮件" separator, Outlook's 发件人/发送时间 block) and the
    RFC 3676 "-- " signature delimiter are cut here; English and other
    Outlook/Apple/Gmail headers and sign-offs by ``mail-parser-reply``.
    When everything would be cut (a reply written below the quote), the
    unquoted lines are kept instead.
    """
    text = _clean(text).strip("\n")
    if not text.strip():
        return ""
    cut = text
    position = _earliest_quote_header(cut)
    if position is not None:
        head = cut[:position]
        if head.strip():
            cut = head
        else:  # bottom-posted: drop the header line and the quoted lines
            rest = cut[position:].split("\n", 1)
            cut = "\n".join(
                line
                for line in (rest[1] if len(rest) > 1 else "").split("\n")
                if not _QUOTED_LINE.match(line)
            )
    signature = _SIG_DELIMITER.search(cut)
    if signature is not None and cut[: signature.start()].strip():
        cut = cut[: signature.start()]
    result = cut
    library_input = _library_input(cut)
    if library_input is not None:
        try:
            library = _library_reply(library_input)
        except Exception:  # a regex heuristic library: never let it fail a message
            library = None
        if library:
            result = library
    result = _strip_quoted_edges(result.rstrip())
    sent_from = _SENT_FROM.search(result)
    if sent_from is not None and result[: sent_from.start()].strip():
        result = result[: sent_from.start()]
    result = _tidy_blank_lines(result)
    return result or _tidy_blank_lines(text)


def _tidy_blank_lines(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in text.split("\n"))).strip()
