"""Inbound email parsing and threading for the email channel (pure: no I/O, no database).

``parse_email(raw)`` turns one raw RFC 5322 message into a ``ParsedEmail``;
``classify(parsed)`` says whether it is a customer message, an auto-reply or
a bounce. Only input that is not an email at all (empty, no header block,
binary garbage, over the size limit) raises ``UnparseableEmail``; anything
else — broken MIME, unknown or mislabelled charsets, bad dates — parses
best-effort and says what was wrong in ``warnings``. ``thread_keys``,
``ticket_number_in_subject`` and the Message-ID helpers are the threading rules.

Modules
-------
* ``model`` — ``ParsedEmail``, ``EmailAddress``, ``EmailAttachment``, ``UnparseableEmail``,
  ``EmailKind`` and the parsing limits.
* ``context`` — per-message state (warnings, limits) and text cleaning.
* ``charsets`` — charset labels, guessing, mojibake repair.
* ``headers`` — raw 8-bit header text, RFC 2047 encoded words, addresses, dates.
* ``mime`` — header/body and multipart splitting, transfer decodings, filenames.
* ``walk`` — the bounded walk over the MIME tree, body text, attachments, enclosed messages.
* ``html_text`` — ``html_to_text``.
* ``reply`` — ``extract_reply`` and the quote/signature patterns.
* ``classification`` — ``classify``, ``classify_with_reason``.
* ``parse`` — ``parse_email`` and its preparation.
* ``threading_keys`` — Message-ID normal form, thread keys, subject ticket numbers, outbound headers.

Design notes
------------
* The MIME tree is walked by this package, not by ``email.parser``'s full
  parse: the stdlib only parses each part's *header block* (compat32,
  headers-only), bodies are split on boundaries here. That keeps the work
  linear and bounded (``max_depth`` levels of multipart nesting,
  ``max_parts`` parts in total): the stdlib's eager parser is quadratic on
  deeply nested messages such as ``flanker/enclosed-endless.eml``.
* Enclosed messages (message/rfc822, and the text/rfc822-headers of a
  delivery report) are never descended into: only their headers are read and
  they are recorded as attachments with their subject, Message-ID and sender.
  Their bodies and attachments never become the outer message's.
* Charsets: GB2312/GBK labels decode as GB18030 (the superset, mail clients
  routinely send GBK text labelled gb2312), Big5 as CP950 then Big5-HKSCS,
  Shift_JIS as CP932, KS C 5601 as CP949, ISO-8859-1/US-ASCII as UTF-8 when
  the bytes are valid UTF-8, otherwise Windows-1252. Raw 8-bit headers
  (RFC 6532 or plain broken) are tried as UTF-8, then as the message's body
  charset, then guessed. Text that was UTF-8-encoded from the wrong
  single-byte reading of a CJK charset (mojibake) is repaired when the
  round trip is exact. Unknown charsets never raise: a best-effort decode
  with replacement characters and a warning.
* Every string in the result is safe to store: no NUL or other C0 control
  characters (except tab and newline), no lone surrogates, ``\\n`` newlines.
"""

from __future__ import annotations

from intake_service.domain.email.classification import classify, classify_with_reason
from intake_service.domain.email.html_text import html_to_text
from intake_service.domain.email.model import (
    DEFAULT_MAX_ATTACHMENTS,
    DEFAULT_MAX_BYTES,
    MAX_DEPTH,
    MAX_PARTS,
    EmailAddress,
    EmailAttachment,
    EmailKind,
    ParsedEmail,
    UnparseableEmail,
)
from intake_service.domain.email.parse import parse_email
from intake_service.domain.email.reply import extract_reply
from intake_service.domain.email.threading_keys import (
    MAX_MESSAGE_ID_LENGTH,
    MAX_OUTBOUND_REFERENCES,
    MAX_REFERENCES,
    make_message_id,
    message_ids_in,
    normalize_message_id,
    reply_headers,
    thread_keys,
    ticket_number_in_subject,
)

__all__ = [
    "DEFAULT_MAX_ATTACHMENTS",
    "DEFAULT_MAX_BYTES",
    "MAX_DEPTH",
    "MAX_MESSAGE_ID_LENGTH",
    "MAX_OUTBOUND_REFERENCES",
    "MAX_PARTS",
    "MAX_REFERENCES",
    "EmailAddress",
    "EmailAttachment",
    "EmailKind",
    "ParsedEmail",
    "UnparseableEmail",
    "classify",
    "classify_with_reason",
    "extract_reply",
    "html_to_text",
    "make_message_id",
    "message_ids_in",
    "normalize_message_id",
    "parse_email",
    "reply_headers",
    "thread_keys",
    "ticket_number_in_subject",
]
