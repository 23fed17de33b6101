"""Attachment downloads: email attachments out of the archived message, URLs redirected, roles."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from intake_service.models import InboundEmail

CHANNEL = auth_headers("channel", sub="mail-gateway")
AGENT = auth_headers("agent")
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40


def email_with_attachment(message_id: str) -> bytes:
    encoded = base64.encodebytes(PDF).decode()
    return (
        "From: 陳先生 <chen@example.com>\r\nTo: support@helpdesk.local\r\n"
        f"Subject: =?utf-8?b?{base64.b64encode('理賠單據'.encode()).decode()}?=\r\n"
        f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "附件是醫院的收據，請幫我處理理賠。\r\n"
        "--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment; filename*=UTF-8''%E6%94%B6%E6%93%9A.pdf\r\n\r\n"
        f"{encoded}\r\n--b1--\r\n"
    ).encode()


async def attachments(intake: ServiceHarness, ticket_id: str) -> list[dict[str, Any]]:
    response = await intake.client.get(f"/v1/tickets/{ticket_id}/attachments", headers=AGENT)
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


async def test_an_email_attachment_downloads_byte_for_byte_as_a_file(intake: ServiceHarness) -> None:
    raw = email_with_attachment(f"{uuid.uuid4()}@example.com")
    created = await intake.client.post(
        "/v1/channels/email/inbound", content=raw, headers={**CHANNEL, "Content-Type": "message/rfc822"}
    )
    ticket_id = created.json()["ticket_id"]
    [attachment] = await attachments(intake, ticket_id)
    assert attachment["name"] == "收據.pdf" and attachment["size_bytes"] == len(PDF)

    download = await intake.client.get(
        f"/v1/tickets/{ticket_id}/attachments/{attachment['id']}/content", headers=AGENT
    )
    assert download.status_code == 200
    assert download.content == PDF
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["content-disposition"].startswith("attachment;")
    assert "UTF-8''%E6%94%B6%E6%93%9A.pdf" in download.headers["content-disposition"]
    assert download.headers["x-content-type-options"] == "nosniff"

    # Attachments are personal data: the channel that posted it may not read it back.
    denied = await intake.client.get(
        f"/v1/tickets/{ticket_id}/attachments/{attachment['id']}/content", headers=CHANNEL
    )
    assert denied.status_code == 403


async def test_a_url_attachment_redirects_and_a_channel_key_says_where_it_is(intake: ServiceHarness) -> None:
    body = {
        "channel": "app",
        "kind": "question",
        "subject": "上傳了照片",
        "description": "車損照片在附件",
        "customer": {"external_id": f"c-{uuid.uuid4()}"},
        "attachments": [
            {
                "name": "a.jpg",
                "content_type": "image/jpeg",
                "size_bytes": 5,
                "url": "https://files.example/a.jpg",
            },
            {
                "name": "b.jpg",
                "content_type": "image/jpeg",
                "size_bytes": 5,
                "storage_key": "app-bucket/b.jpg",
            },
        ],
    }
    ticket_id = (await intake.client.post("/v1/tickets", json=body, headers=CHANNEL)).json()["id"]
    by_name = {a["name"]: a for a in await attachments(intake, ticket_id)}

    redirect = await intake.client.get(
        f"/v1/tickets/{ticket_id}/attachments/{by_name['a.jpg']['id']}/content", headers=AGENT
    )
    assert redirect.status_code == 307
    assert redirect.headers["location"] == "https://files.example/a.jpg"

    elsewhere = await intake.client.get(
        f"/v1/tickets/{ticket_id}/attachments/{by_name['b.jpg']['id']}/content", headers=AGENT
    )
    assert elsewhere.status_code == 404
    assert elsewhere.json()["type"].endswith("/attachment-held-by-channel")
    assert "app-bucket/b.jpg" in elsewhere.json()["detail"]

    unknown = await intake.client.get(
        f"/v1/tickets/{ticket_id}/attachments/{uuid.uuid4()}/content", headers=AGENT
    )
    assert unknown.status_code == 404
    assert unknown.json()["type"].endswith("/attachment-not-found")


async def test_erasing_the_customer_empties_their_archived_emails(intake: ServiceHarness) -> None:
    # The raw message names the sender (From: 陳先生 <chen@example.com>): erasure must not leave it.
    message_id = f"{uuid.uuid4()}@example.com"
    raw = email_with_attachment(message_id)
    headers = {**CHANNEL, "Content-Type": "message/rfc822"}
    created = (await intake.client.post("/v1/channels/email/inbound", content=raw, headers=headers)).json()
    ticket = (await intake.client.get(f"/v1/tickets/{created['ticket_id']}", headers=AGENT)).json()
    [attachment] = await attachments(intake, ticket["id"])

    admin = auth_headers("admin")
    erased = await intake.client.post(f"/v1/customers/{ticket['customer_id']}/erase", headers=admin)
    assert erased.status_code == 200

    async with intake.uow() as uow:
        archived = (
            await uow.session.execute(
                select(InboundEmail.raw, InboundEmail.size_bytes).where(InboundEmail.message_id == message_id)
            )
        ).one()
    assert (archived.raw, archived.size_bytes) == (b"", len(raw))
    download = await intake.client.get(
        f"/v1/tickets/{ticket['id']}/attachments/{attachment['id']}/content", headers=AGENT
    )
    assert download.status_code == 404
    assert "erased" in download.json()["detail"]
    # The archive row stays: a redelivery of the same message is still recognised, not a new ticket.
    again = await intake.client.post("/v1/channels/email/inbound", content=raw, headers=headers)
    assert again.json()["ticket_id"] == ticket["id"]
    assert (await intake.client.get(f"/v1/tickets/{ticket['id']}", headers=AGENT)).status_code == 200
