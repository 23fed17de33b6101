"""Per-message parsing state (warnings, limits, attachments found) and the small text utilities
every stage uses to make strings safe to store."""

from __future__ import annotations

import re

from intake_service.domain.email.charsets import _guess
from intake_service.domain.email.model import MAX_WARNINGS, EmailAttachment

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
#: ASCII whitespace only: an ideographic space (U+3000) in a Chinese subject is content.
_WS_RUN = re.compile(r"[ \t\n\r\f\v]+")


def _clean(text: str) -> str:
    """Newlines as \\n; no NUL/C0 controls (tab and newline kept), no lone surrogates."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(lambda m: "\ufffd" if "\ud800" <= m.group() <= "\udfff" else "", text)


def _one_line(text: str) -> str:
    return _WS_RUN.sub(" ", _clean(text)).strip()


class _Ctx:
    """Per-message state: warnings and limits."""

    def __init__(self, *, max_attachments: int, max_depth: int, max_parts: int) -> None:
        self.max_attachments = max_attachments
        self.max_depth = max_depth
        self.max_parts = max_parts
        self.parts = 0
        self.attachments: list[EmailAttachment] = []
        self.attachments_omitted = 0
        self.report_type: str | None = None
        self.charset_hint: str | None = None
        self.guessed: str | None = None
        self._warnings: list[str] = []
        self._seen: set[str] = set()
        self._dropped = 0

    def warn(self, message: str) -> None:
        message = _one_line(message)[:300]
        if message in self._seen:
            return
        self._seen.add(message)
        if len(self._warnings) < MAX_WARNINGS:
            self._warnings.append(message)
        else:
            self._dropped += 1

    def guess(self, data: bytes) -> tuple[str, str]:
        """Guess a charset, preferring the one guessed earlier for the same message."""
        text, used = _guess(data, self.guessed)
        if used in ("koi8_r", "cp1251", "gb18030", "cp950"):
            self.guessed = used
        return text, used

    @property
    def warnings(self) -> list[str]:
        extra = [f"{self._dropped} more warnings omitted"] if self._dropped else []
        return [*self._warnings, *extra]
