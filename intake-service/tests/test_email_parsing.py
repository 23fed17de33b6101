"""The email channel's parser against the real corpus in ../shared/data/emails/.

Pure unit tests (no infrastructure):
    uv run pytest intake-service/tests/test_email_parsing.py -q -p no:helpdesk_infra

Every corpus file is fed to ``parse_email``: it must parse (subject and body
are strings, everything is storable text) or raise ``UnparseableEmail`` —
never any other exception — within a time bound. Which files are not email
at all is pinned below, so a parser regression in either direction fails.
"""

from __future__ import annotations

import base64
import email
import email.policy
import random
import time
from dataclasses import fields
from pathlib import Path

import pytest

from intake_service.domain.email import (
    EmailAttachment,
    ParsedEmail,
    UnparseableEmail,
    classify,
    classify_with_reason,
    parse_email,
    thread_keys,
)

#: Seconds one corpus message may take (the slowest, flanker/enclosed-endless.eml, takes ~0.05 s).
TIME_BOUND = 5.0


def _find_corpus() -> Path | None:
    for folder in Path(__file__).resolve().parents:
        if (folder / "uv.lock").exists() and (folder / "pyproject.toml").exists():
            return (folder.parent / "shared" / "data" / "emails").resolve()
    return None


CORPUS = _find_corpus()

#: Files in the corpus that are not messages at all (only these are not fed to the parser).
NOT_MESSAGES = {".gitattributes"}

#: Files that are not email and must raise UnparseableEmail (the API answers 4xx and keeps them).
EXPECTED_UNPARSEABLE = {
    "mail-parser/mail_outlook_1.eml": "an Outlook .msg (OLE compound file), binary",
    "mikel-mail/sample_output_multipart": "empty file",
    "rt/lorem-ipsum": "plain text without any header",
}


def _corpus_files() -> list[str]:
    if CORPUS is None or not CORPUS.is_dir():
        return []
    return sorted(
        path.relative_to(CORPUS).as_posix()
        for path in CORPUS.rglob("*")
        if path.is_file() and path.name not in NOT_MESSAGES and not path.name.upper().startswith("README")
    )


CORPUS_FILES = _corpus_files()


def _raw(relative: str) -> bytes:
    assert CORPUS is not None
    return (CORPUS / relative).read_bytes()


def _parse(relative: str) -> ParsedEmail:
    return parse_email(_raw(relative))


def test_corpus_is_present() -> None:
    """Fails (never skips) when ../shared/data/emails is missing or emptied."""
    assert CORPUS is not None, "repository root (uv.lock) not found above the test file"
    assert CORPUS.is_dir(), f"email corpus missing: {CORPUS}"
    assert len(CORPUS_FILES) >= 190, f"only {len(CORPUS_FILES)} corpus files under {CORPUS}"
    for relative in EXPECTED_UNPARSEABLE:
        assert relative in CORPUS_FILES


def _storable(text: str, what: str) -> None:
    assert isinstance(text, str), what
    assert "\x00" not in text, f"{what}: NUL"
    text.encode("utf-8")  # raises on lone surrogates
    assert "\r" not in text, f"{what}: CR"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("relative", CORPUS_FILES or ["<corpus missing>"])
def test_every_corpus_message_parses_or_is_refused(relative: str) -> None:
    assert CORPUS is not None and relative in CORPUS_FILES, f"email corpus missing: {CORPUS}"
    raw = _raw(relative)
    started = time.perf_counter()
    try:
        parsed = parse_email(raw)
    except UnparseableEmail as exc:
        elapsed = time.perf_counter() - started
        assert relative in EXPECTED_UNPARSEABLE, f"{relative} refused: {exc}"
        assert str(exc)
    else:
        elapsed = time.perf_counter() - started
        assert relative not in EXPECTED_UNPARSEABLE, f"{relative} should be refused"
        _storable(parsed.subject, "subject")
        _storable(parsed.text_body, "text_body")
        _storable(parsed.reply_text, "reply_text")
        assert "\n" not in parsed.subject
        for name in (parsed.from_address, parsed.from_name, parsed.message_id, parsed.in_reply_to):
            if name is not None:
                _storable(name, "header")
        for address in [*parsed.to, *parsed.cc, *parsed.reply_to]:
            _storable(address.address, "address")
            _storable(address.name, "address name")
        for attachment in parsed.attachments:
            assert isinstance(attachment, EmailAttachment)
            assert attachment.size >= 0
            assert "/" in attachment.content_type
            if attachment.filename is not None:
                _storable(attachment.filename, "filename")
                assert "/" not in attachment.filename and "\\" not in attachment.filename
        assert len(parsed.attachments) <= 50
        assert parsed.date is None or parsed.date.tzinfo is not None
        assert parsed.classification == classify(parsed) in ("auto_reply", "bounce", "normal")
        assert all(isinstance(w, str) for w in parsed.warnings) and len(parsed.warnings) <= 51
        assert parsed.message_id is None or not parsed.message_id.startswith("<")
        assert all(not key.startswith("<") and key != parsed.message_id for key in thread_keys(parsed))
    assert elapsed < TIME_BOUND, f"{relative} took {elapsed:.2f}s"


# --- Chinese charsets -------------------------------------------------------------------------------


def test_rt_new_ticket_from_gb18030_decodes_subject_and_body() -> None:
    # Subject: =?gb18030?B?suLK1A===?= (one '=' of padding too many) and a base64 gb18030 body.
    parsed = _parse("rt/new-ticket-from-gb18030")
    assert parsed.subject == "测试"
    assert parsed.text_body == "测试"
    assert parsed.reply_text == "测试"
    assert parsed.from_address == "root@localhost"
    assert classify(parsed) == "normal"


def test_gb2312_labelled_headers_decode_as_chinese() -> None:
    # From: =?GB2312?B?1cXPyMn6?=  Subject: =?GB2312?B?tPq/qrj3tdjU9ta1y7C3osax?=
    parsed = _parse("mail-parser/mail_test_12.eml")
    assert parsed.from_name == "张先生"
    assert parsed.from_address == "baoguan@hotmail.com"
    assert parsed.subject == "代开各地增值税发票"
    # The corpus copy of this body is UTF-8 although labelled GB2312 (re-encoded upstream): decoded
    # correctly anyway, with the mislabel recorded.
    assert parsed.text_body.startswith("你好！我公司可代开各类增值税发票，17%专用发票，3%普通发票")
    assert any("labelled 'gb2312' but is UTF-8" in w for w in parsed.warnings)
    assert [a.address for a in parsed.to] == ["danglüe@email.com"]  # raw UTF-8 header, not "repaired"


def test_gb2312_label_with_gbk_only_characters_decodes_as_gb18030() -> None:
    # The subject and the base64 HTML body are labelled gb2312 but contain 0x8CC2 (GBK only):
    # a strict gb2312 decoder fails; the gb18030 superset reads it.
    parsed = _parse("mail-parser/mail_test_9.eml")
    assert parsed.subject.startswith("我把镜头拉近些，你们看看这个是什么")
    assert "这种场合自然少不了" in parsed.subject
    assert "\ufffd" not in parsed.subject
    assert "我把镜头拉近些，你们看看这个是什么" in parsed.text_body
    assert "http://go2buy.com.cn/" in parsed.text_body
    assert "<" not in parsed.text_body  # HTML-only message, converted to text
    assert parsed.html_body is not None and "<HTML>" in parsed.html_body


def test_big5_message_decodes_to_traditional_chinese() -> None:
    # Labelled big5, but the corpus file holds the Big5 bytes read as Latin-1 and saved as UTF-8
    # (mojibake such as "¤j®a»¡­^»y"); the exact round trip is repaired and recorded.
    parsed = _parse("mikel-mail/error_emails/content_transfer_encoding_empty.eml")
    assert parsed.subject == (
        "4d8119\u3000(大補泡麵專賣) 大家說英語 每日聽MP3 (2004年6月份) 繁體中文光碟版 (英語教學)\u30008afb90"
    )
    assert "軟體帝國更新迅速" in parsed.text_body
    assert "Yahoo! 工具列 - 內置防止彈出視窗工能！" in parsed.text_body
    assert any("double-encoded" in w for w in parsed.warnings)


# --- threading ----------------------------------------------------------------------------------------


def test_rt_message_series_are_separate_new_tickets_and_the_digest_links_them() -> None:
    """rt/8859-15-message-series: msg1..msg7 are seven separate messages (the same subject, no
    In-Reply-To/References: RT made a new ticket of each); ``dir`` is a list reply that quotes a
    message and carries all seven as a message/rfc822 digest."""
    series = [_parse(f"rt/8859-15-message-series/msg{i}") for i in range(1, 8)]
    ids = [message.message_id for message in series]
    assert ids[0] == "2147483647.1053972660@[10.0.255.35]"
    assert len(set(ids)) == 7 and all(ids)
    for message in series:
        assert message.subject == "test äöüßÄÖÜß€"  # ISO-8859-15: € is 0xA4
        assert message.text_body == "test nochmal in anderer Queue\ntest äöüßÄÖÜß€"
        assert thread_keys(message) == []  # nothing to thread on: each one is a new ticket

    digest = _parse("rt/8859-15-message-series/dir")
    assert digest.in_reply_to == "2147483647.1053974498@[10.0.255.35]"
    assert digest.references == ["20030523202405.GF23719@fsck.com", "2147483647.1053974498@[10.0.255.35]"]
    assert thread_keys(digest) == ["2147483647.1053974498@[10.0.255.35]", "20030523202405.GF23719@fsck.com"]
    enclosed = [a for a in digest.attachments if a.content_type == "message/rfc822"]
    assert [a.message_id for a in enclosed] == ids
    assert {a.subject for a in enclosed} == {"test äöüßÄÖÜß€"}
    # the reply's own words, flowed text rejoined, the quoted line gone
    assert "these were the only messages after a restart of apache." in digest.text_body
    assert "I attach a digest" not in digest.reply_text
    assert digest.classification == "auto_reply"  # Precedence: bulk (a mailing-list copy)


def _thread(messages: list[ParsedEmail]) -> dict[str, str]:
    """A minimal version of intake's rule: a message joins the ticket of the first known thread key."""
    ticket_of: dict[str, str] = {}
    placed: dict[str, str] = {}
    for number, message in enumerate(messages):
        ticket = next((ticket_of[key] for key in thread_keys(message) if key in ticket_of), f"T{number}")
        assert message.message_id
        ticket_of[message.message_id] = ticket
        placed[message.message_id] = ticket
    return placed


def test_rfc2822_reply_chain_threads_back_to_the_original() -> None:
    original, reply, reply_to_reply = (
        _parse(f"mikel-mail/rfc2822/{name}.eml") for name in ("example01", "example06", "example07")
    )
    assert original.message_id == "1234@local.machine.example"
    assert thread_keys(original) == []
    assert thread_keys(reply) == ["1234@local.machine.example"]
    assert thread_keys(reply_to_reply) == ["3456@example.net", "1234@local.machine.example"]
    placed = _thread([original, reply, reply_to_reply])
    assert set(placed.values()) == {"T0"}


def test_bounce_carries_the_message_id_of_the_bounced_message() -> None:
    bounce = _parse("flanker/bounce/office365.eml")
    original = "20171013111011.20866.254C2F3A4D7AA526@ninomail.com"
    assert thread_keys(bounce) == [original]
    assert [a.message_id for a in bounce.attachments if a.content_type == "message/rfc822"] == [original]


# --- classification -------------------------------------------------------------------------------------


def _folder(name: str) -> list[str]:
    return [relative for relative in CORPUS_FILES if relative.startswith(name + "/")]


@pytest.mark.parametrize("relative", _folder("flanker/bounce") or ["<corpus missing>"])
def test_flanker_bounces_classify_as_bounce(relative: str) -> None:
    parsed = _parse(relative)
    kind, reason = classify_with_reason(parsed)
    assert kind == "bounce", f"{relative}: {kind} ({reason})"


@pytest.mark.parametrize("relative", _folder("flanker/complaints") or ["<corpus missing>"])
def test_arf_complaints_classify_as_bounce(relative: str) -> None:
    """flanker/complaints are ARF spam-complaint reports (multipart/report; report-type=feedback-report)
    from AOL and Yahoo about a message *we* sent: feedback about outbound mail like a DSN, never a
    customer's request, so they are ignored as bounces (the API can unsubscribe the complainant)."""
    parsed = _parse(relative)
    assert parsed.report_type == "feedback-report"
    kind, reason = classify_with_reason(parsed)
    assert kind == "bounce" and "feedback report" in reason
    assert any(a.content_type == "message/feedback-report" for a in parsed.attachments)


@pytest.mark.parametrize(
    "relative",
    [
        *(_folder("mikel-mail/multipart_report_emails") or ["<corpus missing>"]),
        "rt/multipart-report",
        "mail-parser/mail_malformed_2.eml",
    ],
)
def test_delivery_status_reports_classify_as_bounce(relative: str) -> None:
    parsed = _parse(relative)
    assert parsed.report_type == "delivery-status"
    assert classify(parsed) == "bounce"


def test_read_receipt_is_an_auto_reply() -> None:
    parsed = _parse("flanker/disposition-notification.eml")
    assert parsed.report_type == "disposition-notification"
    assert classify_with_reason(parsed) == ("auto_reply", "disposition notification (read receipt)")


def test_bulk_and_junk_precedence_in_the_corpus_are_auto() -> None:
    assert classify_with_reason(_parse("mail-parser/mail_test_16.eml")) == ("auto_reply", "Precedence: junk")
    assert classify(_parse("flanker/from-encoding.eml")) == "auto_reply"  # Precedence: bulk


def test_ordinary_customer_messages_are_normal() -> None:
    for relative in (
        "rt/new-ticket-from-gb18030",
        "mikel-mail/rfc2822/example06.eml",
        "flanker/enclosed.eml",
    ):
        assert classify(_parse(relative)) == "normal", relative


# --- attachments and enclosed messages ------------------------------------------------------------------


def test_attached_pdf_metadata() -> None:
    raw = _raw("flanker/attached-pdf.eml")
    parsed = parse_email(raw)
    assert parsed.subject == "test message via curl - extra content-type (_001_)"
    # the text/foo and text/bar alternatives are neither the body nor attachments
    assert parsed.text_body == "Test - body content"
    assert len(parsed.attachments) == 1
    pdf = parsed.attachments[0]
    assert (pdf.filename, pdf.content_type, pdf.inline) == ("test.pdf", "application/pdf", False)
    # cross-check the size with the stdlib's own full parse of the same bytes
    reference = email.message_from_bytes(raw, policy=email.policy.default)
    payloads = [
        part.get_payload(decode=True) for part in reference.walk() if part.get_filename() == "test.pdf"
    ]
    assert len(payloads) == 1 and isinstance(payloads[0], bytes) and payloads[0].startswith(b"%PDF")
    assert pdf.size == len(payloads[0]) == 6940


def test_enclosed_message_is_an_attachment_and_does_not_replace_the_body() -> None:
    parsed = _parse("flanker/enclosed.eml")
    assert parsed.subject == "Wow"
    assert parsed.text_body == "Hello"
    assert parsed.from_address == "bob@example.net"
    (enclosed,) = parsed.attachments
    assert enclosed.content_type == "message/rfc822"
    assert enclosed.filename == "thanks.eml"
    assert enclosed.subject == "Thanks!"
    assert enclosed.message_id == "BANLkTinHZL1QMDHOv7Ewp+Z5u6SPvYcc+Q@mail.gmail.com"
    assert enclosed.from_address == "dan@example.com"
    inner = base64.b64decode(
        "ZHVkZXMuLi4geW91J3JlIGtpY2tpbmcgYXNzLgrRh9GC0L7QsdGLINGPINCx0LXQtyDQstCw0YEg"
    ).decode("utf-8", "ignore")[:20]
    assert inner.startswith("dudes")
    assert "dudes" not in parsed.text_body and "Mailgun" not in parsed.text_body


def test_endlessly_nested_message_is_bounded() -> None:
    raw = _raw("flanker/enclosed-endless.eml")
    started = time.perf_counter()
    parsed = parse_email(raw)
    assert time.perf_counter() - started < 1.0
    assert parsed.subject == "Wow" and parsed.text_body == "Hello"
    assert [(a.content_type, a.subject) for a in parsed.attachments] == [("message/rfc822", "Thanks!")]


def test_torture_message() -> None:
    parsed = _parse("flanker/torture.eml")
    assert parsed.subject == "Multi-media mail demonstration"
    assert parsed.text_body.startswith(
        "This is a demonstration of multi-part mail with encapsulated messages."
    )
    types = [a.content_type for a in parsed.attachments]
    assert types.count("message/rfc822") >= 4 and "audio/basic" in types
    assert "Re: a MIME-Version misfeature" in {a.subject for a in parsed.attachments}


def test_rfc2231_continued_filename() -> None:
    (attachment,) = _parse("rt/rfc2231-attachment-filename-continuations").attachments
    assert attachment.filename == "新しいテキスト ドキュメント.txt"


def test_dataclass_is_frozen() -> None:
    parsed = _parse("rt/new-ticket-from-gb18030")
    name = fields(parsed)[0].name
    with pytest.raises(AttributeError):
        setattr(parsed, name, "x")


_ODD_BYTES = (
    b"\x00",
    b"\r",
    b"\n\n",
    b"=?",
    b"?=",
    b"=?utf-8?B?",
    b"--",
    b"\xff\xfe",
    b"boundary=",
    b'"',
    b";",
)


def _mutated(rng: random.Random, blobs: list[bytes]) -> bytes:
    """A corpus message damaged as mail in the wild is: bytes flipped, cut short, two messages
    spliced, a stretch repeated, odd tokens inserted."""
    data = bytearray(rng.choice(blobs))
    how = rng.randrange(5)
    if how == 0 and data:
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif how == 1 and data:
        del data[rng.randrange(len(data)) :]
    elif how == 2:
        other = rng.choice(blobs)
        data[rng.randrange(len(data) + 1) :] = other[rng.randrange(len(other) + 1) :]
    elif how == 3 and data:
        start = rng.randrange(len(data))
        end = min(len(data), start + rng.randrange(2000))
        data[end:end] = data[start:end] * rng.randint(1, 50)
    else:
        for _ in range(rng.randint(1, 10)):
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.choice(_ODD_BYTES)
    return bytes(data)


@pytest.mark.timeout(120)
def test_damaged_corpus_messages_parse_or_are_refused_never_anything_else() -> None:
    # A header block ended by a line of raw 8-bit text made the parser raise UnicodeEncodeError
    # (a 500 at the inbound endpoint) for ~1 in 13 damaged messages.
    assert CORPUS is not None and CORPUS_FILES, f"email corpus missing: {CORPUS}"
    blobs = [_raw(relative) for relative in CORPUS_FILES if (CORPUS / relative).stat().st_size < 200_000]
    rng = random.Random(20261206)
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(400):
        try:
            parsed = parse_email(_mutated(rng, blobs))
        except UnparseableEmail:
            outcomes["refused"] += 1
        else:
            outcomes["parsed"] += 1
            _storable(parsed.subject, "subject")
            _storable(parsed.text_body, "text_body")
    assert outcomes["parsed"] > 300  # damage mostly leaves a message
