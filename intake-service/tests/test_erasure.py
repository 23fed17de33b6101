"""Erasure on request takes the person out of everything intake holds; masked roles never see a
contact in an external id; the export holds all of the customer's own text."""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from intake_factories import assign, deliver
from sqlalchemy import event, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.auth import Principal
from helpdesk_shared.chassis.db import OUTBOX, asyncpg_url
from helpdesk_shared.chassis.migrations import upgrade_database
from helpdesk_shared.contracts.enums import EscalationReason, Priority, Role
from helpdesk_shared.contracts.routing import TicketEscalated, TicketTransferred
from intake_service import privacy
from intake_service.domain import privacy as rules
from intake_service.domain.privacy import mask_email
from intake_service.models import (
    Attachment,
    ComplaintCase,
    Customer,
    InboundEmail,
    Message,
    Rating,
    Ticket,
    TimelineEntry,
)

CHANNEL = auth_headers("channel", sub="web-portal")
RFC822 = {**auth_headers("channel", sub="mail-gateway"), "Content-Type": "message/rfc822"}
ADMIN = auth_headers("admin")
LEAD = auth_headers("lead")
AGENT = auth_headers("agent")
REVIEWER = auth_headers("reviewer")
NAME = "林小美"


def mobile() -> str:
    """A mainland mobile number no other test uses (search finds it in this test's tickets only)."""
    return f"139{random.randrange(10**8):08d}"


def spaced(number: str) -> str:
    return f"+86 {number[:3]} {number[3:7]} {number[7:]}"


def person(**overrides: str) -> dict[str, str]:
    number = mobile()
    return {
        "external_id": f"c-{uuid.uuid4()}",
        "name": NAME,
        "email": f"lin.{uuid.uuid4().hex[:8]}@example.com",
        "phone": spaced(number),
        **overrides,
    }


async def create(intake: ServiceHarness, customer: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"channel": "app", "kind": "question", "customer": customer, **fields}
    response = await intake.client.post("/v1/tickets", json=body, headers=CHANNEL)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def erase(intake: ServiceHarness, customer_id: str) -> dict[str, Any]:
    response = await intake.client.post(f"/v1/customers/{customer_id}/erase", headers=ADMIN)
    assert response.status_code == 200, response.text
    erased: dict[str, Any] = response.json()
    return erased


async def found_by(intake: ServiceHarness, query: str) -> list[str]:
    response = await intake.client.get("/v1/tickets", params={"q": query, "limit": 100}, headers=LEAD)
    assert response.status_code == 200, response.text
    return [t["id"] for t in response.json()["items"]]


async def rate(intake: ServiceHarness, ticket_id: str, comment: str) -> None:
    await assign(intake, ticket_id)
    assert (await intake.client.post(f"/v1/tickets/{ticket_id}/resolve", headers=LEAD)).status_code == 200
    link = (await intake.client.get(f"/v1/tickets/{ticket_id}/survey-link", headers=CHANNEL)).json()
    assert "token" in link, link
    rated = await intake.client.post(
        f"/v1/tickets/{ticket_id}/satisfaction", json={"token": link["token"], "score": 3, "comment": comment}
    )
    assert rated.status_code == 201, rated.text


def test_names_are_redacted_where_they_stand_as_words_and_never_when_too_short() -> None:
    assert rules.redact_person("林小美您好，請林小美回電", name="林小美") == "[name]您好，請[name]回電"
    assert (
        rules.redact_person("Li called from Lisbon; ask Li.", name="Li")
        == "[name] called from Lisbon; ask [name]."
    )
    # One character is no name to look for: it would take every 林 with it.
    assert rules.redact_person("林先生來電", name="林") == "林先生來電"
    assert rules.redact_person("寄 lin@example.com，打 555 0100", name=None, known=("555 0100",)) == (
        "寄 [email]，打 [phone]"
    )


def test_external_ids_that_are_contacts_are_masked_like_the_contacts() -> None:
    assert rules.mask_external_id("email:lin.xiaomei@example.com") == "email:l**********@example.com"
    assert rules.mask_external_id("lin.xiaomei@example.com") == "l**********@example.com"
    assert rules.mask_external_id("+86 138 0013 8000") == "+** *** **** 8000"
    assert rules.mask_external_id("tel:13800138000") == "tel:*******8000"
    for kept in ("c-42", "crm:100234", "email:unknown:abc123@mail.example.com", None):
        assert rules.mask_external_id(kept) == kept


async def test_erasure_takes_the_customers_contacts_and_name_out_of_every_text(
    intake: ServiceHarness,
) -> None:
    number = mobile()
    customer = person(phone=spaced(number))
    email = customer["email"]
    marker = f"zq{uuid.uuid4().hex[:10]}"  # a word only this ticket has: search must still work after
    ticket = await create(
        intake,
        customer,
        subject=f"{NAME}的保單 {number}",
        description=f"我是{NAME}，手機 {number}，郵件 {email}，另一支 0912-345-678，備註 {marker}",
        attachments=[
            {
                "name": f"{email}-身分證.pdf",
                "content_type": "application/pdf",
                "size_bytes": 10,
                "url": "https://f/1",
            },
            {"name": "保單.pdf", "content_type": "application/pdf", "size_bytes": 10, "url": "https://f/2"},
        ],
    )
    ticket_id, customer_id = ticket["id"], ticket["customer_id"]
    follow_up = await intake.client.post(
        f"/v1/tickets/{ticket_id}/messages",
        headers=CHANNEL,
        json={"body": f"請寄到 {email.upper()} 或打 {number}"},
    )
    assert follow_up.status_code == 201, follow_up.text
    async with intake.uow() as uow:  # an answer addresses the customer by name
        uow.session.add(
            Message(
                ticket_id=uuid.UUID(ticket_id),
                direction="outbound",
                author="agent",
                channel="app",
                body=f"{NAME}您好，已致電 {spaced(number)}",
            )
        )
        await uow.commit()
    await rate(intake, ticket_id, f"{NAME}很滿意，回電 {number}")
    assert await found_by(intake, number) == [ticket_id]

    erased = await erase(intake, customer_id)

    assert (erased["name"], erased["email"], erased["phone"], erased["external_id"]) == (None,) * 4
    assert await found_by(intake, number) == []
    assert await found_by(intake, marker) == [ticket_id]  # the index was rebuilt, not emptied
    async with intake.uow() as uow:
        stored = (
            await uow.session.execute(
                select(Ticket.subject, Ticket.description, Ticket.search_tokens).where(
                    Ticket.id == uuid.UUID(ticket_id)
                )
            )
        ).one()
        bodies = (
            await uow.session.scalars(
                select(Message.body)
                .where(Message.ticket_id == uuid.UUID(ticket_id))
                .order_by(Message.created_at)
            )
        ).all()
        comment = await uow.session.scalar(
            select(Rating.comment).where(Rating.ticket_id == uuid.UUID(ticket_id))
        )
        names = (
            await uow.session.scalars(
                select(Attachment.name).where(Attachment.ticket_id == uuid.UUID(ticket_id))
            )
        ).all()
    assert stored.subject == "[name]的保單 [phone]"
    assert stored.description == f"我是[name]，手機 [phone]，郵件 [email]，另一支 [phone]，備註 {marker}"
    assert bodies == ["請寄到 [email] 或打 [phone]", "[name]您好，已致電 [phone]"]
    assert comment == "[name]很滿意，回電 [phone]"
    assert sorted(names) == sorted(["[email]-身分證.pdf", "保單.pdf"])
    for value in (number, NAME, email.split("@")[0]):
        assert value not in stored.search_tokens


@contextmanager
def statements_on(connection: Connection) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Connection, _cursor: object, statement: str, *_: object) -> None:
        seen.append(statement)

    event.listen(connection, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(connection, "before_cursor_execute", count)


async def statements_to_erase(intake: ServiceHarness, customer_id: str) -> int:
    async with intake.uow() as uow:
        connection = await uow.session.connection()
        with statements_on(connection.sync_connection) as seen:
            await privacy.erase_customer(
                uow, uuid.UUID(customer_id), Principal(subject="admin", roles=frozenset({Role.ADMIN}))
            )
    return len(seen)


async def test_a_customer_with_many_tickets_is_erased_in_as_many_statements_as_one_with_two(
    intake: ServiceHarness,
) -> None:
    counts = []
    for tickets in (2, 40):
        customer = person()
        created = [
            await create(
                intake, customer, subject=f"第 {n} 張", description=f"{NAME} 的電話 {customer['phone']}"
            )
            for n in range(tickets)
        ]
        ids = [uuid.UUID(t["id"]) for t in created]
        counts.append(await statements_to_erase(intake, created[0]["customer_id"]))
        async with intake.uow() as uow:
            descriptions = (
                await uow.session.scalars(select(Ticket.description).where(Ticket.id.in_(ids)))
            ).all()
        assert descriptions == ["[name] 的電話 [phone]"] * tickets
    assert counts[0] == counts[1], counts


async def waiting_for_a_lock(intake: ServiceHarness, seconds: float = 3.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        async with intake.uow() as uow:
            waiting = await uow.session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_erasure_waits_for_an_email_being_threaded_into_the_ticket_and_erases_it_too(
    intake: ServiceHarness,
) -> None:
    ticket = await create(intake, person(), subject="保單", description="請問進度")
    ticket_id, customer_id = uuid.UUID(ticket["id"]), uuid.UUID(ticket["customer_id"])
    raw = b"From: Lin <lin@example.com>\r\nSubject: Re: progress\r\n\r\ncall me on 13912345678\r\n"
    async with intake.uow() as mail:
        # What the email channel does with a reply: the ticket first (its lock) ...
        await mail.session.execute(select(Ticket.id).where(Ticket.id == ticket_id).with_for_update())
        erasure = asyncio.create_task(intake.client.post(f"/v1/customers/{customer_id}/erase", headers=ADMIN))
        assert await waiting_for_a_lock(intake), "erasure must wait for the ticket the email is writing into"
        # ... and, for a reply that opens a follow-up, the customer's row after it: erasure must not
        # be holding it while it waits for the ticket (the two would deadlock).
        await mail.session.execute(text("SET LOCAL lock_timeout = '2s'"))
        await mail.session.execute(select(Customer.id).where(Customer.id == customer_id).with_for_update())
        archived = uuid.uuid4()
        mail.session.add(
            InboundEmail(id=archived, outcome="threaded", ticket_id=ticket_id, size_bytes=len(raw), raw=raw)
        )
        await mail.commit()
    response = await erasure
    assert response.status_code == 200, response.text
    async with intake.uow() as uow:
        assert await uow.session.scalar(select(InboundEmail.raw).where(InboundEmail.id == archived)) == b""


def mail(sender: str, subject: str, body: str, *, message_id: str, headers: str = "") -> bytes:
    return (
        f"From: 陳先生 <{sender}>\r\nTo: support@helpdesk.local\r\nSubject: {subject}\r\n"
        f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n{headers}"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{body}\r\n"
    ).encode()


async def inbound(intake: ServiceHarness, raw: bytes, status: int = 200) -> dict[str, Any]:
    response = await intake.client.post("/v1/channels/email/inbound", content=raw, headers=RFC822)
    assert response.status_code in ((200, 201) if status == 200 else (status,)), response.text
    result: dict[str, Any] = response.json()
    return result


async def raw_of(intake: ServiceHarness, inbound_id: str) -> bytes:
    async with intake.uow() as uow:
        raw = await uow.session.scalar(
            select(InboundEmail.raw).where(InboundEmail.id == uuid.UUID(inbound_id))
        )
    assert raw is not None
    return raw


async def test_ignored_and_rejected_emails_of_the_customer_are_erased_too(intake: ServiceHarness) -> None:
    sender = f"chen.{uuid.uuid4().hex[:8]}@example.com"
    # An address the channel's contact rules refuse (no dot in the domain): only the external id has it.
    local_sender = f"wang.{uuid.uuid4().hex[:8]}@localhost"
    first_id = f"{uuid.uuid4()}@mail.example.com"
    created = await inbound(
        intake, mail(sender, "車險理賠", "請問進度？電話 13912345678", message_id=first_id)
    )
    local = await inbound(intake, mail(local_sender, "發票", "抬頭錯了", message_id=f"{uuid.uuid4()}@x"))
    auto = await inbound(
        intake,
        mail(
            sender.upper(),
            "自動回覆：我正在休假",
            "急事請打 13912345678",
            message_id=f"{uuid.uuid4()}@x",
            headers="Auto-Submitted: auto-replied\r\n",
        ),
    )
    local_auto = await inbound(
        intake,
        mail(
            local_sender,
            "Automatic reply",
            "away",
            message_id=f"{uuid.uuid4()}@x",
            headers="Auto-Submitted: auto-replied\r\n",
        ),
    )
    bounce = await inbound(
        intake,
        mail(
            "MAILER-DAEMON@mx.example.net",
            "Undeliverable: 車險理賠",
            f"Delivery to {sender} failed.",
            message_id=f"{uuid.uuid4()}@mx.example.net",
            headers=f"In-Reply-To: <{first_id}>\r\n",
        ),
    )
    rejected = await inbound(
        intake, f"From: 陳先生 <{sender}>\r\nSubject: 附件\x00\r\n\r\n13912345678\r\n".encode(), status=422
    )
    stranger = await inbound(
        intake,
        mail(
            "eve@example.net",
            "Out of office",
            "back monday",
            message_id=f"{uuid.uuid4()}@x",
            headers="Auto-Submitted: auto-replied\r\n",
        ),
    )
    assert [r["outcome"] for r in (created, local, auto, local_auto, bounce)] == [
        "created",
        "created",
        "ignored",
        "ignored",
        "ignored",
    ]
    customers = []
    for result in (created, local):
        ticket = (await intake.client.get(f"/v1/tickets/{result['ticket_id']}", headers=LEAD)).json()
        customers.append(ticket["customer_id"])
    stranger_raw = await raw_of(intake, stranger["inbound_id"])

    for customer_id in customers:
        await erase(intake, customer_id)

    for result in (created, local, auto, local_auto, bounce, rejected):
        assert await raw_of(intake, result["inbound_id"]) == b"", result
    assert await raw_of(intake, stranger["inbound_id"]) == stranger_raw


async def test_masked_roles_see_an_email_customers_external_id_masked(intake: ServiceHarness) -> None:
    sender = f"chen.{uuid.uuid4().hex[:8]}@example.com"
    created = await inbound(intake, mail(sender, "保單", "請問", message_id=f"{uuid.uuid4()}@x"))
    ticket = (await intake.client.get(f"/v1/tickets/{created['ticket_id']}", headers=LEAD)).json()
    by_email = ticket["customer_id"]
    by_phone = (
        await create(
            intake, person(external_id=f"+86 139 {random.randrange(10**8):08d}"), subject="s", description="d"
        )
    )["customer_id"]

    for headers in (AGENT, REVIEWER, CHANNEL):
        seen = (await intake.client.get(f"/v1/customers/{by_email}", headers=headers)).json()
        assert seen["external_id"] == f"email:{mask_email(sender)}"
        assert sender not in str(seen)
        phone_id = (await intake.client.get(f"/v1/customers/{by_phone}", headers=headers)).json()[
            "external_id"
        ]
        assert phone_id.startswith("+** *** ") and phone_id[-4:].isdigit(), phone_id
    for headers in (LEAD, ADMIN):
        seen = (await intake.client.get(f"/v1/customers/{by_email}", headers=headers)).json()
        assert seen["external_id"] == f"email:{sender}"


async def test_the_export_holds_descriptions_messages_attachments_and_ratings(intake: ServiceHarness) -> None:
    ticket = await create(
        intake,
        person(),
        subject="保單影本",
        description="附上保單，請協助確認保障範圍",
        attachments=[
            {"name": "保單.pdf", "content_type": "application/pdf", "size_bytes": 123, "url": "https://f/a"}
        ],
    )
    photo = {"name": "photo.jpg", "content_type": "image/jpeg", "size_bytes": 2048, "storage_key": "s3/k/1"}
    await intake.client.post(
        f"/v1/tickets/{ticket['id']}/messages",
        headers=CHANNEL,
        json={"body": "補充照片", "attachments": [photo]},
    )
    await rate(intake, ticket["id"], "很滿意")

    export = (await intake.client.get(f"/v1/customers/{ticket['customer_id']}/export", headers=ADMIN)).json()

    assert [(t["id"], t["subject"], t["description"]) for t in export["tickets"]] == [
        (ticket["id"], "保單影本", "附上保單，請協助確認保障範圍")
    ]
    assert [m["body"] for m in export["messages"]] == ["補充照片"]
    message_id = export["messages"][0]["id"]
    assert [(a["ticket_id"], a["message_id"], a["name"], a["size_bytes"]) for a in export["attachments"]] == [
        (ticket["id"], None, "保單.pdf", 123),
        (ticket["id"], message_id, "photo.jpg", 2048),
    ]
    assert [(r["ticket_id"], r["resolution_count"], r["score"], r["comment"]) for r in export["ratings"]] == [
        (ticket["id"], 1, 3, "很滿意")
    ]


def sender_hash(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


_TICKET = (
    "INSERT INTO tickets (id, number, channel, kind, status, priority, urgent_detected, subject, description,"
    " tags, customer_id, reopen_count, resolution_count, search_tokens)"
    " VALUES (:id, :number, 'email', 'question', 'new', 'normal', false, 's', 'd', '{}', :id, 0, 0, '')"
)
_ARCHIVED = (
    "INSERT INTO inbound_emails (id, message_id, outcome, size_bytes, raw)"
    " VALUES (:id, :message_id, :outcome, :size, :raw)"
)
BOUNCE = (
    b"From: MAILER-DAEMON@mx.example.net\r\nMessage-ID: <dsn-1@mx>\r\nSubject: Undeliverable\r\n"
    b"Content-Type: multipart/report; boundary=b\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    b"From: support@helpdesk.local\r\nMessage-ID: <ours-1@helpdesk.local>\r\n\r\n--b--\r\n"
)


async def test_the_migration_records_the_sender_of_emails_archived_before_it(infra: Infra) -> None:
    url = infra.create_database("intake_erasure_backfill")
    await asyncio.to_thread(upgrade_database, url, "intake_service", "0010")
    engine = create_async_engine(asyncpg_url(url))
    ticket_id, ignored, rejected, bounce, nameless = (uuid.uuid4() for _ in range(5))
    archived = [
        (
            ignored,
            None,
            "ignored",
            b"Subject: away\r\nFrom: =?utf-8?B?6Zmz?=\r\n <Chen.X@Example.com>\r\n\r\nbye",
        ),
        (rejected, None, "rejected", b"From: chen.x@example.com\r\nSubject: a\x00b\r\n\r\nx"),
        (bounce, "dsn-1@mx", "ignored", BOUNCE),
        (nameless, None, "rejected", b""),
    ]
    try:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO customers (id) VALUES (:id)"), {"id": ticket_id})
            await conn.execute(text(_TICKET), {"id": ticket_id, "number": f"T-{ticket_id.hex[:8]}"})
            await conn.execute(
                text("INSERT INTO email_thread_ids (message_id, ticket_id) VALUES (:message_id, :id)"),
                {"message_id": "ours-1@helpdesk.local", "id": ticket_id},
            )
            for row_id, message_id, outcome, raw in archived:
                await conn.execute(
                    text(_ARCHIVED),
                    {
                        "id": row_id,
                        "message_id": message_id,
                        "outcome": outcome,
                        "size": len(raw),
                        "raw": raw,
                    },
                )
        await asyncio.to_thread(upgrade_database, url, "intake_service")
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT id, sender_hash, thread_ticket_id FROM inbound_emails"))
            found = {row.id: (row.sender_hash, row.thread_ticket_id) for row in rows}
    finally:
        await engine.dispose()
    assert found == {
        ignored: (sender_hash("chen.x@example.com"), None),
        rejected: (sender_hash("chen.x@example.com"), None),
        bounce: (sender_hash("mailer-daemon@mx.example.net"), ticket_id),
        nameless: (None, None),
    }


async def test_the_migration_runs_again_after_failing_halfway(infra: Infra) -> None:
    # Its columns commit before its backfill and concurrent index builds: an attempt cut short left
    # them (and an invalid index) behind, and the next start runs the migration again.
    url = infra.create_database("intake_erasure_rerun")
    await asyncio.to_thread(upgrade_database, url, "intake_service", "0010")
    engine = create_async_engine(asyncpg_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE inbound_emails ADD COLUMN sender_hash varchar(64)"))
            await conn.execute(text("ALTER TABLE inbound_emails ADD COLUMN thread_ticket_id uuid"))
            await conn.execute(
                text("CREATE INDEX ix_inbound_emails_sender_hash ON inbound_emails (sender_hash)")
            )
            await conn.execute(
                text(
                    "UPDATE pg_index SET indisvalid = false"
                    " WHERE indexrelid = 'ix_inbound_emails_sender_hash'::regclass"
                )
            )
        await asyncio.to_thread(upgrade_database, url, "intake_service")
        async with engine.connect() as conn:
            valid = await conn.scalar(
                text(
                    "SELECT indisvalid FROM pg_index"
                    " WHERE indexrelid = 'ix_inbound_emails_sender_hash'::regclass"
                )
            )
    finally:
        await engine.dispose()
    assert valid is True


async def erased_events(intake: ServiceHarness, customer_id: str) -> list[dict[str, Any]]:
    """The `customer.erased` events of one customer in the outbox, as published (envelope and data)."""
    async with intake.uow() as uow:
        rows = (
            await uow.session.execute(
                select(OUTBOX.c.payload)
                .where(OUTBOX.c.key == customer_id, OUTBOX.c.event_type == "helpdesk.customer.erased.v1")
                .order_by(OUTBOX.c.seq)
            )
        ).scalars()
        return [dict(row) for row in rows]


async def test_erasure_tells_the_other_services_which_tickets_to_forget_one_event_per_batch(
    intake: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(privacy, "ERASURE_BATCH", 2)
    customer = person()
    created = [
        await create(
            intake, customer, subject=f"第 {n} 張", description=f"我是{NAME}，電話 {customer['phone']}"
        )
        for n in range(5)
    ]
    customer_id = created[0]["customer_id"]
    async with intake.uow() as uow:  # a customer intake knows without a ticket: nothing to forget
        ticketless = Customer(external_id=f"c-{uuid.uuid4()}", name=NAME)
        uow.session.add(ticketless)
        await uow.commit()
        ticketless_id = str(ticketless.id)

    await erase(intake, customer_id)
    await erase(intake, ticketless_id)

    events = await erased_events(intake, customer_id)
    assert [e["data"]["ticket_ids"] for e in events] == [
        sorted(t["id"] for t in created)[start : start + 2] for start in (0, 2, 4)
    ]  # erasure's batches: in ticket id order
    assert {(e["subject"], e["data"]["customer_id"]) for e in events} == {(customer_id, customer_id)}
    published = str(events)
    for personal in (NAME, customer["email"], customer["phone"], customer["external_id"]):
        assert personal not in published
    assert await erased_events(intake, ticketless_id) == []


async def test_erasure_takes_the_customer_out_of_the_complaint_case_file_and_the_staff_notes(
    intake: ServiceHarness,
) -> None:
    number = mobile()
    customer = person(phone=spaced(number))
    ticket = await create(intake, customer, kind="complaint", subject="投訴：理賠拖延", description="請處理")
    ticket_id, customer_id = ticket["id"], ticket["customer_id"]
    case = f"/v1/tickets/{ticket_id}/complaint"
    agent = await assign(intake, ticket_id)
    written = {
        # At the column's 200 characters: `[email]` is longer than what it replaces, cut back to fit.
        "responsible_department": "理" * 193 + " a@b.co",
        "plan": f"三日內致電{NAME} {number} 說明",
        "root_cause": f"通知寄錯，{NAME}的手機 {number} 沒收到",
        "corrective_action": f"改由 {customer['email']} 與簡訊通知{NAME}",
    }
    patched = await intake.client.patch(case, headers=LEAD, json=written)
    progress = {"note": f"已致電{NAME} {number}，待回覆"}
    note = await intake.client.post(f"{case}/notes", headers=LEAD, json=progress)
    assert (patched.status_code, note.status_code) == (200, 200), (patched.text, note.text)
    await deliver(
        intake,
        TicketTransferred(
            ticket_id=uuid.UUID(ticket_id),
            transfer_id=uuid.uuid4(),
            from_agent_id=agent,
            to_agent_id=uuid.uuid4(),
            requested_by=agent,
            reason=f"{NAME}要求主管回電 {number}",
            transferred_at=datetime.now(UTC),
        ),
        service="routing",
    )
    await deliver(
        intake,
        TicketEscalated(
            ticket_id=uuid.UUID(ticket_id),
            reason=EscalationReason.MANUAL,
            previous_priority=Priority.NORMAL,
            priority=Priority.HIGH,
            note=f"{NAME}來電兩次 {number}",
            escalated_at=datetime.now(UTC),
        ),
        service="routing",
    )
    resolved = await intake.client.post(
        f"/v1/tickets/{ticket_id}/resolve", headers=LEAD, json={"note": f"已與{NAME}確認賠付，{number}"}
    )
    archived = await intake.client.patch(
        case, headers=LEAD, json={"result": f"已向{NAME}致歉並賠付", "archived": True}
    )
    assert (resolved.status_code, archived.status_code) == (200, 200), (resolved.text, archived.text)
    async with intake.uow() as uow:
        before = (
            await uow.session.execute(
                select(TimelineEntry.seq, TimelineEntry.kind, TimelineEntry.data).where(
                    TimelineEntry.ticket_id == uuid.UUID(ticket_id)
                )
            )
        ).all()

    await erase(intake, customer_id)

    async with intake.uow() as uow:
        stored = (
            await uow.session.execute(
                select(
                    ComplaintCase.responsible_department,
                    ComplaintCase.plan,
                    ComplaintCase.root_cause,
                    ComplaintCase.corrective_action,
                    ComplaintCase.result,
                    ComplaintCase.archived,
                ).where(ComplaintCase.ticket_id == uuid.UUID(ticket_id))
            )
        ).one()
        after = {
            row.seq: row.data
            for row in await uow.session.execute(
                select(TimelineEntry.seq, TimelineEntry.data).where(
                    TimelineEntry.ticket_id == uuid.UUID(ticket_id)
                )
            )
        }
    assert (stored.plan, stored.root_cause, stored.corrective_action, stored.result) == (
        "三日內致電[name] [phone] 說明",
        "通知寄錯，[name]的手機 [phone] 沒收到",
        "改由 [email] 與簡訊通知[name]",
        "已向[name]致歉並賠付",
    )
    assert stored.responsible_department == ("理" * 193 + " [email]")[:200]
    assert stored.archived
    notes = {
        (kind, key): after[seq][key]
        for seq, kind, data in before
        for key in ("note", "reason")
        if isinstance(data.get(key), str) and data[key] != after[seq][key]
    }
    assert notes == {
        ("complaint", "note"): "已致電[name] [phone]，待回覆",
        ("transferred", "reason"): "[name]要求主管回電 [phone]",
        ("escalated", "note"): "[name]來電兩次 [phone]",
        ("status_changed", "note"): "已與[name]確認賠付，[phone]",
    }
    # Everything else in the timeline stays as it was: ids, statuses, the routing's reasons.
    for seq, _, data in before:
        assert {k: v for k, v in after[seq].items() if k not in ("note", "reason")} == {
            k: v for k, v in data.items() if k not in ("note", "reason")
        }
    assert str(agent) in str(after.values())
    assert "test" in [data.get("reason") for data in after.values()]  # the assignment's reason
    for value in (NAME, number, customer["email"]):
        assert value not in str(after.values())
