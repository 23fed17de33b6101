"""Public types and limits of inbound email parsing: ``ParsedEmail`` and its parts, ``UnparseableEmail``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

DEFAULT_MAX_ATTACHMENTS = 50
DEFAULT_MAX_BYTES = 25 * 1024 * 1024
#: Levels of multipart nesting walked; deeper containers become opaque attachments.
MAX_DEPTH = 10
#: MIME parts looked at in total (enclosed messages count as one part).
MAX_PARTS = 500
#: Text kept per body part and for the whole body; HTML markup converted per part. Tickets store far
#: less (the API caps descriptions); the raw message keeps everything.
MAX_TEXT_CHARS = 1_000_000
MAX_HTML_CHARS = 2_000_000
#: Warnings kept per message; the rest are counted in one closing warning.
MAX_WARNINGS = 50
#: Above this many characters reply extraction keeps the simple cuts only (the library is regex-heavy).
MAX_REPLY_LIBRARY_CHARS = 50_000
#: Lines longer than this keep reply extraction to this module's own (linear) patterns.
MAX_REPLY_LIBRARY_LINE = 400

EmailKind = Literal["auto_reply", "bounce", "normal"]


class UnparseableEmail(ValueError):
    """The input is not an email message at all; the API answers 4xx and keeps the raw bytes."""


@dataclass(frozen=True, slots=True)
class EmailAddress:
    address: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class EmailAttachment:
    filename: str | None
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = False
    # Enclosed messages (message/rfc822, text/rfc822-headers) only:
    subject: str | None = None
    message_id: str | None = None
    from_address: str | None = None
    # The decoded bytes (what a download of the attachment returns); not shown in reprs.
    data: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ParsedEmail:
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    subject: str
    from_address: str | None
    from_name: str | None
    to: list[EmailAddress]
    cc: list[EmailAddress]
    reply_to: list[EmailAddress]
    date: datetime | None
    text_body: str
    reply_text: str
    html_body: str | None
    attachments: list[EmailAttachment]
    attachments_omitted: int
    content_type: str
    report_type: str | None
    auto_headers: dict[str, str]
    classification: EmailKind
    classification_reason: str
    warnings: list[str] = field(default_factory=list)

    @property
    def is_auto_submitted(self) -> bool:
        return self.classification != "normal"
