"""The email channel end to end in intake: the real corpus, Chinese charsets, threading, redelivery."""

from __future__ import annotations

import asyncio
import base64
import random
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from intake_service import inbound_email
from intake_service.models import InboundEmail

CHANNEL = auth_headers("channel", sub="mail-gateway")
LEAD = auth_headers("lead")
RFC822 = {**CHANNEL, "Content-Type": "message/rfc822"}


def corpus_dir() -> Path:
    for parent in Path(__file__).resolve().parents:
        candidate = parent.parent / "shared" / "data" / "emails"
        if (parent / "services" / "kafka" / "pom.xml").exists():
            assert candidate.is_dir(), f"the email corpus is missing at {candidate}"
            return candidate
    raise AssertionError("repository root not found")


CORPUS = sorted(p for p in corpus_dir().rglob("*") if p.is_file() and not p.name.startswith("."))


def mail(
    subject: str,
    body: str,
    *,
    message_id: str,
    sender: str = "chen@example.com",
    headers: str = "",
    charset: str = "utf-8",
) -> bytes:
    head = (
        f"From: 陳先生 <{sender}>\r\nTo: support@helpdesk.local\r\nSubject: {subject}\r\n"
        f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n{headers}"
        f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return head.encode("utf-8") + body.encode(charset)


async def post(intake: ServiceHarness, raw: bytes) -> dict[str, object]:
    response = await intake.client.post("/v1/channels/email/inbound", content=raw, headers=RFC822)
    assert response.status_code in (200, 201), response.text
    result: dict[str, object] = response.json()
    return result


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(corpus_dir())))
async def test_every_real_message_is_handled_and_never_a_500(intake: ServiceHarness, path: Path) -> None:
    async with intake.uow() as uow:
        before = await uow.session.scalar(select(func.count()).select_from(InboundEmail))

    response = await intake.client.post(
        "/v1/channels/email/inbound", content=await asyncio.to_thread(path.read_bytes), headers=RFC822
    )

    assert response.status_code in (200, 201, 422), response.text
    async with intake.uow() as uow:
        after = await uow.session.scalar(select(func.count()).select_from(InboundEmail))
    if response.status_code == 422:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["inbound_id"]
        assert after == before + 1, "a rejected message must be kept for inspection"
    else:
        assert response.json()["outcome"] in {"created", "threaded", "ignored"}
        assert after in (before, before + 1)  # +0 only for a redelivered Message-ID


async def test_gb18030_ticket_decodes_its_chinese_subject_and_body(intake: ServiceHarness) -> None:
    raw = await asyncio.to_thread((corpus_dir() / "rt" / "new-ticket-from-gb18030").read_bytes)
    raw = raw.replace(b"From:", f"Message-ID: <gb18030-{uuid.uuid4()}@test>\nFrom:".encode(), 1)
    result = await post(intake, raw)
    assert result["outcome"] == "created"
    ticket = (await intake.client.get(f"/v1/tickets/{result['ticket_id']}", headers=LEAD)).json()
    assert ticket["subject"] == "测试"
    assert ticket["channel"] == "email"


async def test_big5_and_gb2312_messages_decode(intake: ServiceHarness) -> None:
    for charset, text in (("big5", "請問保單何時生效"), ("gb2312", "请问保单何时生效")):
        raw = mail(
            f"=?{charset}?B?" + base64.b64encode(text.encode(charset)).decode() + "?=",
            f"{text}？謝謝" if charset == "big5" else f"{text}？谢谢",
            message_id=f"{charset}-{uuid.uuid4()}@test",
            charset=charset,
        )
        result = await post(intake, raw)
        ticket = (await intake.client.get(f"/v1/tickets/{result['ticket_id']}", headers=LEAD)).json()
        assert ticket["subject"] == text


async def test_replies_thread_by_message_id_and_by_ticket_number(intake: ServiceHarness) -> None:
    original_id = f"orig-{uuid.uuid4()}@mail.example.com"
    created = await post(intake, mail("車險理賠", "請問車險理賠要多久？", message_id=original_id))
    assert created["outcome"] == "created"
    ticket_id = created["ticket_id"]
    number = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()["number"]

    by_header = await post(
        intake,
        mail(
            "Re: 車險理賠",
            "補充：事故日期是 11/20。\r\n\r\n在 2026年11月20日 陳先生 寫道：\r\n> 請問車險理賠要多久？\r\n",
            message_id=f"r1-{uuid.uuid4()}@mail.example.com",
            headers=f"In-Reply-To: <{original_id}>\r\n",
        ),
    )
    by_number = await post(
        intake, mail(f"Re: [{number}] 進度？", "還在等回覆。", message_id=f"r2-{uuid.uuid4()}@x")
    )

    assert (by_header["outcome"], by_header["ticket_id"]) == ("threaded", ticket_id)
    assert (by_number["outcome"], by_number["ticket_id"]) == ("threaded", ticket_id)
    timeline = (await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)).json()
    assert [i["kind"] for i in timeline].count("message") == 2
    export = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()
    customer = (
        await intake.client.get(
            f"/v1/customers/{export['customer_id']}/export", headers=auth_headers("admin")
        )
    ).json()
    bodies = [m["body"] for m in customer["messages"] if m["ticket_id"] == ticket_id]
    assert "補充：事故日期是 11/20。" in bodies
    assert all("請問車險理賠要多久" not in b for b in bodies), "quoted history must be stripped"


async def test_a_redelivered_message_does_not_create_a_second_ticket(intake: ServiceHarness) -> None:
    raw = mail("發票問題", "發票抬頭錯了", message_id=f"dup-{uuid.uuid4()}@x")
    first, again = await post(intake, raw), await post(intake, raw)
    assert first["ticket_id"] == again["ticket_id"]
    assert again["reason"] == "already received"


async def test_auto_replies_and_bounces_are_ignored(intake: ServiceHarness) -> None:
    auto = mail(
        "自動回覆：我正在休假",
        "我將於下週一回來。",
        message_id=f"ooo-{uuid.uuid4()}@x",
        headers="Auto-Submitted: auto-replied\r\n",
    )
    result = await post(intake, auto)
    assert (result["outcome"], result["ticket_id"]) == ("ignored", None)


async def test_wrong_media_type_and_missing_token_are_problems(intake: ServiceHarness) -> None:
    raw = mail("x", "y", message_id=f"m-{uuid.uuid4()}@x")
    wrong = await intake.client.post(
        "/v1/channels/email/inbound", content=raw, headers={**CHANNEL, "Content-Type": "text/plain"}
    )
    anonymous = await intake.client.post(
        "/v1/channels/email/inbound", content=raw, headers={"Content-Type": "message/rfc822"}
    )
    garbage = await intake.client.post("/v1/channels/email/inbound", content=b"", headers=RFC822)
    assert wrong.status_code == 415
    assert anonymous.status_code == 401
    assert garbage.status_code == 422
    assert garbage.json()["type"].endswith("/unreadable-email")


async def test_a_parser_failure_keeps_the_message_and_answers_422(
    intake: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(raw: bytes, **options: object) -> None:
        raise UnicodeEncodeError("ascii", "\ufffd", 0, 1, "a parser bug")

    monkeypatch.setattr(inbound_email, "parse_email", broken)
    raw = mail("保單", "內容", message_id=f"m-{uuid.uuid4()}@x")

    response = await intake.client.post("/v1/channels/email/inbound", content=raw, headers=RFC822)

    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/unreadable-email")
    async with intake.uow() as uow:
        kept = (
            await uow.session.execute(
                select(InboundEmail.raw, InboundEmail.outcome).where(
                    InboundEmail.id == uuid.UUID(response.json()["inbound_id"])
                )
            )
        ).one()
    assert kept == (raw, "rejected")


def raw_mail(*headers: bytes, charset: str = "utf-8", body: bytes = b"hello") -> bytes:
    """A message from raw header bytes: ids that only decode through the declared charset."""
    head = b"".join(h + b"\r\n" for h in headers)
    return (
        b"From: chen@example.com\r\nTo: support@helpdesk.local\r\nSubject: "
        + b"id test\r\n"
        + head
        + b"Content-Type: text/plain; charset="
        + charset.encode()
        + b"\r\n\r\n"
        + body
        + b"\r\n"
    )


async def archived(intake: ServiceHarness, inbound_id: object) -> tuple[bytes, str | None, str]:
    async with intake.uow() as uow:
        row = (
            await uow.session.execute(
                select(InboundEmail.raw, InboundEmail.message_id, InboundEmail.outcome).where(
                    InboundEmail.id == uuid.UUID(str(inbound_id))
                )
            )
        ).one()
    return row.raw, row.message_id, row.outcome


@pytest.mark.parametrize(
    ("utf7", "cleaned"), [(b"+2AA-", "\ufffd\ufffd"), (b"+AAA-", "\ufffd")], ids=["surrogate", "nul"]
)
async def test_a_message_id_decoding_to_a_surrogate_or_nul_is_created_and_threaded(
    intake: ServiceHarness, utf7: bytes, cleaned: str
) -> None:
    # Through the declared UTF-7, "+2AA-" is a lone surrogate and "+AAA-" a NUL: the database
    # refused the id (a 503/422 with nothing archived) instead of the message being created.
    local = f"u7-{uuid.uuid4().hex}".encode()
    original = b"<" + local + utf7 + b"\xff@x.example>"
    raw = raw_mail(b"Message-ID: " + original, charset="utf-7")

    created = await post(intake, raw)
    again = await post(intake, raw)
    reply = await post(
        intake,
        raw_mail(
            b"Message-ID: <" + local + b"-reply" + utf7 + b"\xff@x.example>",
            b"In-Reply-To: " + original,
            b"References: " + original,
            charset="utf-7",
            body=b"more",
        ),
    )

    assert created["outcome"] == "created"
    assert (again["ticket_id"], again["reason"]) == (created["ticket_id"], "already received")
    assert (reply["outcome"], reply["ticket_id"]) == ("threaded", created["ticket_id"])
    assert await archived(intake, created["inbound_id"]) == (
        raw,
        f"{local.decode()}{cleaned}@x.example",
        "created",
    )


async def test_a_message_id_too_long_for_the_index_is_created_threaded_and_archived(
    intake: ServiceHarness,
) -> None:
    # ~950 CJK characters: under the 998-character column, over PostgreSQL's ~2.7 KB index row
    # (54000 at commit: a 500 and nothing archived). Such an id is no id, like a missing one.
    def long_id() -> str:
        rng = random.Random(uuid.uuid4().int)
        return "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(950)) + "@x.example"

    raw = mail("很長的編號", "請問保單何時生效", message_id=long_id())
    created = await post(intake, raw)
    original_id = f"orig-{uuid.uuid4()}@x.example"
    original = await post(intake, mail("車險理賠", "請問車險理賠要多久？", message_id=original_id))
    reply = mail(
        "Re: 車險理賠",
        "補充：事故日期是 11/20。",
        message_id=long_id(),
        headers=f"In-Reply-To: <{long_id()}>\r\nReferences: <{original_id}> <{long_id()}>\r\n",
    )
    threaded = await post(intake, reply)

    assert created["outcome"] == "created"
    assert await archived(intake, created["inbound_id"]) == (raw, None, "created")
    assert (threaded["outcome"], threaded["ticket_id"]) == ("threaded", original["ticket_id"])
    assert await archived(intake, threaded["inbound_id"]) == (reply, None, "threaded")


async def test_a_ticket_number_in_the_subject_threads_only_the_customers_mail(intake: ServiceHarness) -> None:
    # Ticket numbers are sequential, so anyone can guess one: a stranger's mail naming it must not
    # land in another customer's conversation (a reply to our own Message-ID is proof enough).
    sender = f"owner-{uuid.uuid4().hex[:8]}@example.com"
    created = await post(
        intake, mail("理賠進度", "請問進度？", message_id=f"{uuid.uuid4()}@x", sender=sender)
    )
    ticket_id = str(created["ticket_id"])
    number = (await intake.client.get(f"/v1/tickets/{ticket_id}", headers=LEAD)).json()["number"]

    stranger = await post(
        intake,
        mail(
            f"Re: [{number}] 理賠進度", "我也想知道", message_id=f"{uuid.uuid4()}@x", sender="eve@example.net"
        ),
    )
    owner = await post(
        intake,
        mail(f"Re: [{number}] 理賠進度", "還在等。", message_id=f"{uuid.uuid4()}@x", sender=sender.upper()),
    )

    assert stranger["outcome"] == "created" and stranger["ticket_id"] != ticket_id
    assert (owner["outcome"], owner["ticket_id"]) == ("threaded", ticket_id)
    timeline = (await intake.client.get(f"/v1/tickets/{ticket_id}/timeline", headers=LEAD)).json()
    assert "我也想知道" not in str(timeline)


async def test_a_message_over_the_limit_is_refused_with_a_413(intake: ServiceHarness) -> None:
    body = mail("大附件", "x", message_id=f"{uuid.uuid4()}@x") + b"x" * (25 * 1024 * 1024)
    response = await intake.client.post(
        "/v1/channels/email/inbound", content=body, headers={**CHANNEL, "Content-Type": "message/rfc822"}
    )
    assert response.status_code == 413, response.text
    assert response.json()["type"].endswith("/payload-too-large")
