"""The email channel's parser on constructed messages: reply stripping, classification, threading
helpers, charsets, limits and refusal. Pure unit tests:

    uv run pytest intake-service/tests/test_email_parsing_units.py -q -p no:helpdesk_infra
"""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from intake_service.domain.email import (
    MAX_MESSAGE_ID_LENGTH,
    UnparseableEmail,
    classify,
    classify_with_reason,
    extract_reply,
    html_to_text,
    make_message_id,
    message_ids_in,
    normalize_message_id,
    parse_email,
    reply_headers,
    thread_keys,
    ticket_number_in_subject,
)


def message(*headers: str, body: bytes | str = b"hello\n", charset: str = "utf-8") -> bytes:
    head = "".join(line + "\r\n" for line in headers).encode("utf-8")
    data = body.encode(charset) if isinstance(body, str) else body
    return head + b"\r\n" + data


def b_word(text: str, charset: str) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


BASIC = ("From: 张三 <zhang@example.com>", "To: support@example.com", "Subject: hi")


# --- reply stripping --------------------------------------------------------------------------------

CHINESE_REPLY = (
    "您好，问题已经解决了，订单号是 12345。\n"
    "\n"
    "谢谢！\n"
    "-- \n"  # RFC 3676 signature delimiter: dash, dash, space
    "张三\n"
    "某某科技有限公司 销售部\n"
    "\n"
    "在 2026年11月20日 星期五 10:00，客服中心 <support@example.com> 写道：\n"
    "> 请问您的订单号是多少？\n"
    ">\n"
    "> On Thu, Nov 19, 2026 at 9:00 AM Zhang San <zhang@example.com> wrote:\n"
    ">> My order HD-000123 is broken.\n"
)


def test_chinese_reply_with_quote_and_signature_is_stripped() -> None:
    parsed = parse_email(
        message(
            *BASIC[:2],
            "Subject: =?UTF-8?B?" + base64.b64encode("回复：[HD-000123] 订单问题".encode()).decode() + "?=",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
            body=CHINESE_REPLY,
        )
    )
    assert parsed.subject == "回复：[HD-000123] 订单问题"
    assert parsed.text_body == CHINESE_REPLY.strip("\n")
    assert parsed.reply_text == "您好，问题已经解决了，订单号是 12345。\n\n谢谢！"
    assert ticket_number_in_subject(parsed.subject) == "HD-000123"


def test_english_reply_with_on_wrote_block() -> None:
    text = (
        "Thanks, it works now.\n\n- step one\n- step two\n\n"
        "On Fri, Nov 20, 2026 at 10:00 AM Support <support@example.com> wrote:\n"
        "> What is your order number?\n> \n> Regards,\n> Support\n"
    )
    assert extract_reply(text) == "Thanks, it works now.\n\n- step one\n- step two"


def test_gmail_wrapped_on_wrote_line() -> None:
    text = (
        "Still broken.\n\nOn Fri, Nov 20, 2026 at 10:00 AM Support Team <\nsupport@example.com> wrote:\n> ?\n"
    )
    assert extract_reply(text) == "Still broken."


def test_signature_after_dash_dash_space() -> None:
    text = "The printer works again.\n\n-- \nLi Lei\nACME Ltd.\n+86 138 0000 0000\n"
    assert extract_reply(text) == "The printer works again."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "已經收到，謝謝。\n\nSupport <support@example.com> 於 2026年11月20日 週五 上午10:00 寫道：\n"
            "> 請問\n",
            "已經收到，謝謝。",
        ),
        ("好的。\n\n2026年11月20日 10:00，客服 <s@example.com> 写道：\n> 请问\n", "好的。"),
        (
            "好的，明天再试。\n\n------------------&nbsp;原始邮件&nbsp;------------------\n"
            '发件人: "客服" <support@example.com>\n发送时间: 2026年11月20日(星期五) 上午10:00\n',
            "好的，明天再试。",
        ),
        (
            "收到\n\n发件人: 客服中心 <support@example.com>\n发送时间: 2026年11月20日 10:00\n"
            "收件人: 张三 <zhang@example.com>\n主题: [HD-000123] 订单问题\n\n请问您的订单号是多少？\n",
            "收到",
        ),
        (
            "Got it.\n\nFrom: Support <support@example.com>\nSent: Friday, November 20, 2026 10:00 AM\n"
            "To: Me <me@example.com>\nSubject: RE: [HD-000123] issue\n\nWhat is your order number?\n",
            "Got it.",
        ),
        ("OK\n\n发自我的iPhone\n", "OK"),
        (
            "On Fri, Nov 20, 2026 at 10:00 AM Support <s@example.com> wrote:\n> Order?\n\nIt is 12345.\n",
            "It is 12345.",
        ),
        ("My answer\n\n> old quoted\n> stuff\n", "My answer"),
    ],
)
def test_reply_headers_in_other_forms(text: str, expected: str) -> None:
    assert extract_reply(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "文章中写道：这是一个引用。\n请帮忙看看。",  # "写道" in prose, no date or address: not a quote header
        "Line one.\nThanks, but the error still happens when I click save.\nHere is the log: E123",
        "Steps:\n- open the app\n- click save",  # hyphen lists are not signatures
    ],
)
def test_reply_text_keeps_ordinary_content(text: str) -> None:
    assert extract_reply(text) == text


def test_reply_stripping_is_linear_on_hostile_text() -> None:
    hostile = [
        " " * 200_000 + "x",
        ("On " + "a b " * 99 + "\n") * 120,
        ("在 " + "年" * 390 + "\n") * 120,
        (">" * 399 + "\n") * 120,
        ("    \n    x    \n") * 20_000,
        "写道" + " " * 100_000 + "x",
    ]
    for text in hostile:
        started = time.perf_counter()
        extract_reply(text)
        assert time.perf_counter() - started < 3.0, repr(text[:40])


# --- classification ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (("Auto-Submitted: auto-replied",), "auto_reply"),
        (("Auto-Submitted: auto-generated; owner-email=x@example.com",), "auto_reply"),
        (("Auto-Submitted: no",), "normal"),
        (("Precedence: bulk",), "auto_reply"),
        (("Precedence: list",), "auto_reply"),
        (("Precedence: auto_reply",), "auto_reply"),
        (("X-Autoreply: yes",), "auto_reply"),
        (("X-Autorespond: vacation",), "auto_reply"),
        (("Return-Path: <>",), "auto_reply"),
        (("X-Failed-Recipients: a@example.com",), "bounce"),
    ],
)
def test_header_markers(headers: tuple[str, ...], expected: str) -> None:
    assert classify(parse_email(message(*BASIC, *headers))) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Out of Office: back on Monday", "auto_reply"),
        ("Automatic reply: [HD-000123] order", "auto_reply"),
        ("自动回复：我正在休假", "auto_reply"),
        ("自動回覆：[HD-000123] 訂單問題", "auto_reply"),
        ("自動回復: 不在のお知らせ", "auto_reply"),
        ("Undeliverable: your message", "bounce"),
        ("系统退信", "bounce"),
        ("Re: Delivery Status Notification (Failure)", "bounce"),
        ("My order never arrived", "normal"),
        ("为什么我的邮件被退信了？", "normal"),  # a person asking about a bounce is a customer
    ],
)
def test_subject_markers(subject: str, expected: str) -> None:
    raw = message("From: a@example.com", "Subject: " + b_word(subject, "utf-8"))
    assert classify(parse_email(raw)) == expected


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@example.com", "postmaster@example.com"])
def test_daemon_senders_are_bounces(sender: str) -> None:
    assert classify(parse_email(message(f"From: {sender}", "Subject: hi"))) == "bounce"


def test_dsn_and_mdn_content_types() -> None:
    def report(kind: str) -> bytes:
        return message(
            *BASIC,
            f'Content-Type: multipart/report; report-type={kind}; boundary="R"',
            body=(
                "--R\r\nContent-Type: text/plain\r\n\r\nreport\r\n"
                f"--R\r\nContent-Type: message/{kind}\r\n\r\nFinal-Recipient: rfc822; x@example.com\r\n"
                "--R--\r\n"
            ),
        )

    assert classify_with_reason(parse_email(report("delivery-status")))[0] == "bounce"
    assert classify_with_reason(parse_email(report("disposition-notification")))[0] == "auto_reply"


# --- threading helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "number"),
    [
        ("Re: [HD-000123] 订单问题", "HD-000123"),
        ("回复：HD-0001234 still broken", "HD-0001234"),
        ("【ＨＤ－０００１２３】全角", "HD-000123"),
        ("re: hd-000123", "HD-000123"),
        ("HD–000777 en dash", "HD-000777"),
        ("HD-12345 too short", None),
        ("XHD-000123 glued prefix", None),
        ("HD-0001234567890", "HD-0001234567890"),
        ("", None),
    ],
)
def test_ticket_number_in_subject(subject: str, number: str | None) -> None:
    assert ticket_number_in_subject(subject) == number


def test_ticket_number_with_another_prefix() -> None:
    assert ticket_number_in_subject("Re: [CS-004711] x", prefix="CS") == "CS-004711"
    assert ticket_number_in_subject("Re: [HD-004711] x", prefix="CS") is None


def test_thread_keys_and_normalisation() -> None:
    parsed = parse_email(
        message(
            *BASIC,
            "Message-ID: <own@example.com>",
            "In-Reply-To: <b@example.com> (Support's message of Friday)",
            "References: <a@example.com>\r\n <b@example.com>, <own@example.com>",
        )
    )
    assert parsed.message_id == "own@example.com"
    assert parsed.in_reply_to == "b@example.com"
    assert parsed.references == ["a@example.com", "b@example.com", "own@example.com"]
    assert thread_keys(parsed) == ["b@example.com", "a@example.com"]
    assert normalize_message_id("<1234   @   local(blah)  .machine .example>") == "1234@local.machine.example"
    assert normalize_message_id("someone@yahoo.com") == "someone@yahoo.com"
    assert normalize_message_id("") is None


def test_outbound_message_id_and_reply_headers() -> None:
    first, second = make_message_id("helpdesk.example.com"), make_message_id("helpdesk.example.com")
    assert re.fullmatch(r"<[0-9a-f]{32}@helpdesk\.example\.com>", first) and first != second
    assert make_message_id("客服.例子.中国").endswith("@" + "客服.例子.中国".encode("idna").decode() + ">")
    for bad in ("", "bad domain", "a>b", "-x-.com"):
        with pytest.raises(ValueError):
            make_message_id(bad)
    assert reply_headers([]) == {}
    chain = ["<root@c.example>", "mid@c.example", "<last@c.example>"]
    assert reply_headers(chain) == {
        "In-Reply-To": "<last@c.example>",
        "References": "<root@c.example> <mid@c.example> <last@c.example>",
    }
    long_chain = [f"<m{i}@x.example>" for i in range(50)]
    references = reply_headers(long_chain)["References"].split()
    assert len(references) == 20 and references[0] == "<m0@x.example>" and references[-1] == "<m49@x.example>"


def test_outbound_answer_threads_back() -> None:
    """Our answer carries Message-ID/References; the customer's reply names it and finds the ticket."""
    customer = parse_email(message(*BASIC, "Message-ID: <c1@customer.example>"))
    ours = make_message_id("helpdesk.example.com")
    headers = reply_headers([*customer.references, customer.message_id or "", ours])
    reply = parse_email(
        message(*BASIC, f"In-Reply-To: {ours}", f"References: {headers['References']}", body="thanks")
    )
    assert thread_keys(reply)[0] == normalize_message_id(ours)
    assert "c1@customer.example" in thread_keys(reply)


def _storable_id(value: str | None) -> str:
    assert value is not None
    assert "\x00" not in value
    value.encode("utf-8")  # raises on a lone surrogate, as asyncpg does
    return value


@pytest.mark.parametrize(
    ("utf7", "expected"),
    [(b"+2AA-", "\ufffd\ufffd@x.example"), (b"+AAA-", "\ufffd@x.example")],
    ids=["lone-surrogate", "nul"],
)
def test_message_ids_decoding_to_a_surrogate_or_nul_are_cleaned(utf7: bytes, expected: str) -> None:
    # The raw 0xff forces the header through the declared UTF-7, whose replacing decode keeps
    # U+D800 (+2AA-) or U+0000 (+AAA-), which the database refuses to store or hash.
    mid = b"<" + utf7 + b"\xff@x.example>"
    raw = (
        b"From: a@example.com\r\nSubject: hi\r\nMessage-ID: "
        + mid
        + b"\r\nIn-Reply-To: "
        + mid
        + b"\r\nReferences: <root@x.example> "
        + mid
        + b"\r\nContent-Type: text/plain; charset=utf-7\r\n\r\nhello\r\n"
    )
    parsed = parse_email(raw)
    assert _storable_id(parsed.message_id) == expected
    assert _storable_id(parsed.in_reply_to) == expected
    assert [_storable_id(r) for r in parsed.references] == ["root@x.example", expected]
    assert normalize_message_id("<a\x00b\ud800@x.example>") == "ab\ufffd@x.example"
    assert message_ids_in("<a\x00@x.example> <ok\udcff@x.example>") == ["a@x.example", "ok\ufffd@x.example"]


def test_message_ids_are_bounded_by_utf8_bytes() -> None:
    # PostgreSQL's btree refuses index rows over ~2.7 KB: 950 CJK characters are under the
    # 998-character limit but 2.9 KB of UTF-8, which failed the commit (500, nothing archived).
    long_id = "".join(chr(0x4E00 + (i * 7919) % 0x5200) for i in range(950)) + "@x.example"
    assert len(long_id) <= MAX_MESSAGE_ID_LENGTH < len(long_id.encode("utf-8"))
    parsed = parse_email(
        message(
            *BASIC,
            f"Message-ID: <{long_id}>",
            f"In-Reply-To: <{long_id}>",
            f"References: <root@x.example> <{long_id}> <last@x.example>",
        )
    )
    assert (parsed.message_id, parsed.in_reply_to) == (None, None)  # as if the header were missing
    assert parsed.references == ["root@x.example", "last@x.example"]  # dropped one by one
    fits = "界" * ((MAX_MESSAGE_ID_LENGTH - 2) // 3) + "@x"
    assert len(fits.encode("utf-8")) <= MAX_MESSAGE_ID_LENGTH
    assert normalize_message_id(f"<{fits}>") == fits
    assert normalize_message_id(f"<界{fits}>") is None
    ascii_id = "a" * (MAX_MESSAGE_ID_LENGTH - 2) + "@x"
    assert normalize_message_id(f"<{ascii_id}>") == ascii_id  # plain ids: the limit is unchanged
    assert normalize_message_id(f"<a{ascii_id}>") is None


# --- charsets and headers ---------------------------------------------------------------------------


def test_gbk_text_labelled_gb2312() -> None:
    # 镕 and 堃 are GBK, not GB2312: a strict gb2312 codec fails on them.
    text = "朱镕基和王堃的订单"
    with pytest.raises(UnicodeDecodeError):
        text.encode("gbk").decode("gb2312")
    parsed = parse_email(
        message(
            "From: " + b_word("王堃", "gbk").replace("gbk", "gb2312") + " <wang@example.com>",
            "Subject: " + b_word(text, "gbk").replace("gbk", "gb2312"),
            "Content-Type: text/plain; charset=gb2312",
            "Content-Transfer-Encoding: 8bit",
            body=text.encode("gbk"),
        )
    )
    assert (parsed.subject, parsed.text_body, parsed.from_name) == (text, text, "王堃")
    assert parsed.warnings == []


def test_big5_message() -> None:
    subject, body = "繁體中文測試：訂單查詢", "您好，請問我的訂單何時出貨？\n謝謝。"
    parsed = parse_email(
        message(
            "From: " + b_word("陳小姐", "big5") + " <chen@example.com.tw>",
            "Subject: " + b_word(subject, "big5"),
            'Content-Type: text/plain; charset="big5"',
            "Content-Transfer-Encoding: base64",
            body=base64.encodebytes(body.encode("big5")),
        )
    )
    assert (parsed.subject, parsed.text_body, parsed.from_name) == (subject, body, "陳小姐")


def test_multibyte_character_split_across_encoded_words() -> None:
    data = "测试邮件主题".encode()
    words = [data[:4], data[4:11], data[11:]]  # split inside characters
    encoded = "\r\n ".join(f"=?UTF-8?B?{base64.b64encode(w).decode()}?=" for w in words)
    assert parse_email(message("From: a@example.com", "Subject: " + encoded)).subject == "测试邮件主题"


def test_unknown_charset_never_raises() -> None:
    parsed = parse_email(
        message(
            "From: a@example.com",
            "Subject: =?x-no-such-charset?Q?caf=C3=A9?= and =?x-no-such-charset?B?//79?=",
            "Content-Type: text/plain; charset=x-no-such-charset",
            body="Grüße".encode(),
        )
    )
    assert parsed.subject.startswith("café and ")
    assert parsed.text_body == "Grüße"
    assert any("unknown charset 'x-no-such-charset'" in w for w in parsed.warnings)


def test_raw_8bit_headers_and_undeclared_bodies() -> None:
    # RFC 6532 UTF-8 headers; a body without any charset in Latin-1
    parsed = parse_email(
        "From: Jöhn Dœ <jd@example.com>\nSubject: Säying 你好\n\n".encode()
        + "Grüße aus München".encode("latin-1")
    )
    assert (parsed.from_name, parsed.subject) == ("Jöhn Dœ", "Säying 你好")
    assert parsed.text_body == "Grüße aus München"
    assert any("decoded as cp1252" in w for w in parsed.warnings)
    # undeclared GBK: pairs of high bytes that read as common CJK
    gbk = parse_email(b"From: a@example.com\nSubject: x\n\n" + "请尽快处理我的退款申请".encode("gbk"))
    assert gbk.text_body == "请尽快处理我的退款申请"


def test_rfc2047_display_name_with_comma_and_quoted_filename() -> None:
    parsed = parse_email(
        message(
            "From: =?UTF-8?B?" + base64.b64encode("李, 雷".encode()).decode() + "?= <li@example.com>",
            "To: a@example.com, =?UTF-8?Q?B=C3=A9?= <b@example.com>",
            "Subject: x",
            'Content-Type: multipart/mixed; boundary="B"',
            body=(
                "--B\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
                "--B\r\nContent-Type: application/pdf\r\n"
                'Content-Disposition: attachment; filename="=?UTF-8?B?'
                + base64.b64encode("发票.pdf".encode()).decode()
                + '?="\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--B--\r\n'
            ),
        )
    )
    assert (parsed.from_name, parsed.from_address) == ("李, 雷", "li@example.com")
    assert [(a.name, a.address) for a in parsed.to] == [("", "a@example.com"), ("Bé", "b@example.com")]
    (pdf,) = parsed.attachments
    assert (pdf.filename, pdf.content_type, pdf.size) == ("发票.pdf", "application/pdf", 9)


def test_dates() -> None:
    parsed = parse_email(message(*BASIC, "Date: Fri, 20 Nov 2026 10:00:00 +0800"))
    assert parsed.date == datetime(2026, 11, 20, 10, tzinfo=timezone(timedelta(hours=8)))
    assert parse_email(message(*BASIC, "Date: Fri, 20 Nov 2026 10:00:00 -0000")).date == datetime(
        2026, 11, 20, 10, tzinfo=UTC
    )
    broken = parse_email(message(*BASIC, "Date: yesterday-ish"))
    assert broken.date is None and any(w.startswith("date:") for w in broken.warnings)


# --- bodies -------------------------------------------------------------------------------------------------


def test_html_only_body_becomes_text_with_line_breaks() -> None:
    html = (
        "<html><head><title>t</title><style>p{}</style></head><body>"
        "<p>您好，</p><div>订单&nbsp;<b>12345</b>&amp;发票</div>line<br>break"
        "<script>alert(1)</script><table><tr><td>a</td><td>b</td></tr></table></body></html>"
    )
    parsed = parse_email(message(*BASIC, "Content-Type: text/html; charset=utf-8", body=html))
    assert parsed.text_body == "您好，\n\n订单 12345&发票\nline\nbreak\n\na b"
    assert parsed.html_body == html
    assert html_to_text("<p>a<p>b<pre>  x\n  y</pre>") == "a\nb\nx\ny"


def test_plain_text_is_preferred_over_html() -> None:
    parsed = parse_email(
        message(
            *BASIC,
            'Content-Type: multipart/alternative; boundary="A"',
            body=(
                "--A\r\nContent-Type: text/html\r\n\r\n<p>html version</p>\r\n"
                "--A\r\nContent-Type: text/plain\r\n\r\nplain version\r\n--A--\r\n"
            ),
        )
    )
    assert parsed.text_body == "plain version"
    assert parsed.attachments == []


def test_format_flowed_is_rejoined() -> None:
    parsed = parse_email(
        message(
            *BASIC,
            "Content-Type: text/plain; charset=utf-8; format=flowed",
            body="This is a long \r\nparagraph.\r\n> quoted \r\n> on two\r\n-- \r\nsig\r\n",
        )
    )
    assert parsed.text_body == "This is a long paragraph.\n> quoted on two\n-- \nsig"


def test_inline_image_and_related_html() -> None:
    parsed = parse_email(
        message(
            *BASIC,
            'Content-Type: multipart/related; boundary="R"',
            body=(
                '--R\r\nContent-Type: text/html\r\n\r\n<p>see <img src="cid:logo@x"></p>\r\n'
                "--R\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n"
                "Content-Transfer-Encoding: base64\r\n"
                "\r\niVBORw0KGgo=\r\n--R--\r\n"
            ),
        )
    )
    assert parsed.text_body == "see"
    (image,) = parsed.attachments
    assert (image.content_type, image.content_id, image.inline, image.size) == (
        "image/png",
        "logo@x",
        True,
        8,
    )


# --- refusal and limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"  \r\n\r\n ",
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20,
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500,
        b"just some text, no headers\n",
        b"From: a\x00b@example.com\n\nbody",
    ],
)
def test_not_an_email_is_refused(raw: bytes) -> None:
    with pytest.raises(UnparseableEmail):
        parse_email(raw)


def test_unparseable_is_a_value_error_and_size_is_limited() -> None:
    assert issubclass(UnparseableEmail, ValueError)
    raw = message(*BASIC, body=b"x" * 2000)
    with pytest.raises(UnparseableEmail, match="limit"):
        parse_email(raw, max_bytes=1000)
    assert parse_email(raw, max_bytes=len(raw)).text_body == "x" * 2000


def test_malformed_but_email_parses_with_warnings() -> None:
    parsed = parse_email(
        b"\r\n   \r\nFrom: a@example.com\r\nSubject   : obsolete spacing\r\n"
        b'Content-Type: multipart/mixed; boundary="missing"\r\n\r\nno boundaries at all\r\n'
    )
    assert parsed.subject == "obsolete spacing"
    assert parsed.text_body == "no boundaries at all"
    assert len(parsed.warnings) >= 2


def test_a_header_block_ended_by_8bit_text_keeps_the_bytes() -> None:
    # A line that is not a header ends the header block; raw GBK in it (你好) was a 500: the
    # parser's copy of the rest came back with U+FFFD, which cannot be turned back into bytes.
    parsed = parse_email(b"From: a@example.com\r\nSubject: hi\r\n\xc4\xe3\xba\xc3 ok\r\n\r\nbody\r\n")
    assert parsed.subject == "hi"
    assert parsed.text_body == "你好 ok\n\nbody"
    assert "message: header block ended by a line that is not a header" in parsed.warnings


def _multipart(parts: list[str], boundary: str = "B") -> str:
    return "".join(f"--{boundary}\r\n{part}\r\n" for part in parts) + f"--{boundary}--\r\n"


def test_attachment_limit() -> None:
    parts = ["Content-Type: text/plain\r\n\r\nbody"] + [
        f'Content-Type: image/png; name="{i}.png"\r\n\r\nxx' for i in range(60)
    ]
    raw = message(*BASIC, 'Content-Type: multipart/mixed; boundary="B"', body=_multipart(parts))
    parsed = parse_email(raw, max_attachments=50)
    assert len(parsed.attachments) == 50 and parsed.attachments_omitted == 10
    assert parsed.text_body == "body"
    assert any("more than 50 attachments" in w for w in parsed.warnings)


def test_depth_and_part_limits() -> None:
    nested = "".join(
        f'--b{i}\r\nContent-Type: multipart/mixed; boundary="b{i + 1}"\r\n\r\n' for i in range(5000)
    )
    raw = message(
        *BASIC, 'Content-Type: multipart/mixed; boundary="b0"', body=nested + "--b5000\r\n\r\ndeep\r\n"
    )
    started = time.perf_counter()
    parsed = parse_email(raw)
    assert time.perf_counter() - started < 2.0
    assert any("nested deeper than 10 levels" in w for w in parsed.warnings)

    flat = _multipart(
        ["Content-Type: text/plain\r\n\r\nbody"] + ["Content-Type: text/plain\r\n\r\nx"] * 20_000
    )
    started = time.perf_counter()
    parsed = parse_email(message(*BASIC, 'Content-Type: multipart/mixed; boundary="B"', body=flat))
    assert time.perf_counter() - started < 2.0
    assert any("more than 500 MIME parts" in w for w in parsed.warnings)


def test_large_bodies_are_bounded() -> None:
    big_html = "<div><p>hello <b>world</b></p></div>\n" * 150_000  # ~5.5 MB
    started = time.perf_counter()
    parsed = parse_email(message(*BASIC, "Content-Type: text/html", body=big_html))
    assert time.perf_counter() - started < 10.0
    assert parsed.text_body.startswith("hello world")
    assert any("HTML over" in w for w in parsed.warnings)
