"""The SMTP adapter against real local servers (aiosmtpd): what it sends, which refusals are
permanent, and that TLS verifies the server (STARTTLS and implicit TLS, a private CA)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpdesk_runtime.procs import free_port
from helpdesk_shared.contracts.enums import Channel
from intake_service.channels import DeliveryError, OutboundAnswer, SmtpSender, header_text
from intake_service.settings import IntakeSettings

URL = "postgresql://helpdesk@127.0.0.1:5432/intake"


class Server:
    """Accepts mail, except: RCPT `busy-…` 450, `bounce-…` 550; MAIL FROM `blocked@…` 550; a body
    holding REFUSE-ME 554, TRY-LATER 451."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("blocked@"):
            return "550 5.7.1 Sender address not allowed"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("busy-"):
            return "450 4.2.1 Mailbox busy, try again later"
        if address.startswith("bounce-"):
            return "550 5.1.1 User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if b"REFUSE-ME" in envelope.content:
            return "554 5.6.0 Message content rejected"
        if b"TRY-LATER" in envelope.content:
            return "451 4.3.0 Temporary local problem"
        self.messages.append(envelope.content)
        return "250 OK"


def answer(**overrides: Any) -> OutboundAnswer:
    base = OutboundAnswer(
        delivery_id=uuid.uuid4(),
        ticket_id=uuid.uuid4(),
        ticket_number="HD-000042",
        ticket_subject="發票抬頭",
        channel=Channel.EMAIL,
        message_id=uuid.uuid4(),
        email_message_id=f"{uuid.uuid4().hex}@helpdesk.local",
        references=(),
        body="您好，已為您更改。",
        answer_id=uuid.uuid4(),
        answer_version=1,
        to_email="wang@example.com",
        callback_url=None,
    )
    return replace(base, **overrides)


def settings(port: int, **overrides: Any) -> IntakeSettings:
    return IntakeSettings(database_url=URL, smtp_port=port, delivery_timeout_seconds=5, **overrides)


@pytest.fixture(scope="module")
def plain() -> Iterator[tuple[Server, int]]:
    server, port = Server(), free_port()
    controller = Controller(server, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield server, port
    finally:
        controller.stop()


# ---- what is sent -----------------------------------------------------------------------------


async def test_an_answer_is_sent_with_a_folded_subject_and_capped_references(
    plain: tuple[Server, int],
) -> None:
    server, port = plain
    thread = tuple(f"m{i}@customer.example" for i in range(50))
    await SmtpSender(settings(port)).send(
        answer(ticket_subject="第一行\r\n第二行\x00", references=thread, to_email="ok-1@example.com")
    )

    mail = message_from_bytes(server.messages[-1], policy=policy.default)
    assert mail["Subject"] == "Re: 第一行 第二行 [HD-000042]"
    assert mail["In-Reply-To"] == "<m49@customer.example>"
    references = mail["References"].split()
    # RFC 5322 allows trimming: the thread's first id and the latest ones, 20 in all.
    assert len(references) == 20
    assert references[0] == "<m0@customer.example>" and references[-1] == "<m49@customer.example>"


def test_header_text_folds_whitespace_and_drops_control_characters() -> None:
    assert header_text("  a\r\n\tb\x0bc\u2028d\x00\x7f ") == "a b c d"
    assert header_text("保單 理賠") == "保單 理賠"


async def test_a_message_that_cannot_be_built_fails_permanently_without_contacting_the_server() -> None:
    # Nothing listens on this port: a retry would only fail the same way, so no connection is tried.
    sender = SmtpSender(settings(free_port()))
    with pytest.raises(DeliveryError, match="could not be composed") as raised:
        await sender.send(answer(to_email="wang@example.com\r\nBcc: everyone@example.com"))
    assert raised.value.permanent
    with pytest.raises(DeliveryError, match="no email address") as missing:
        await sender.send(answer(to_email=None))
    assert missing.value.permanent


# ---- which refusals are permanent ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "from_address", "permanent", "words"),
    [
        ({"to_email": "bounce-1@example.com"}, None, True, "recipient refused"),
        ({"to_email": "busy-1@example.com"}, None, False, "recipient refused"),
        ({"body": "REFUSE-ME"}, None, True, "message refused"),
        ({"body": "TRY-LATER"}, None, False, "message refused"),
        # Our own sender address refused: every answer alike, until the configuration is fixed.
        ({}, "blocked@helpdesk.local", False, "SMTP"),
    ],
)
async def test_5xx_refusals_of_a_message_are_permanent_and_4xx_ones_temporary(
    plain: tuple[Server, int],
    overrides: dict[str, Any],
    from_address: str | None,
    permanent: bool,
    words: str,
) -> None:
    _, port = plain
    config = settings(port, **({"smtp_from": from_address} if from_address else {}))
    with pytest.raises(DeliveryError, match=words) as raised:
        await SmtpSender(config).send(answer(**overrides))
    assert raised.value.permanent is permanent


async def test_a_server_that_is_down_is_a_temporary_failure() -> None:
    with pytest.raises(DeliveryError) as raised:
        await SmtpSender(settings(free_port())).send(answer())
    assert not raised.value.permanent


# ---- TLS verifies the server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: the server's, and the private CA that trusts it."""
    directory = tmp_path_factory.mktemp("smtp-tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "helpdesk test SMTP")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture(scope="module")
def starttls(certificate: tuple[Path, Path]) -> Iterator[tuple[Server, int]]:
    server, port = Server(), free_port()
    controller = Controller(
        server,
        hostname="127.0.0.1",
        port=port,
        tls_context=_server_context(certificate),
        require_starttls=True,
    )
    controller.start()
    try:
        yield server, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def implicit_tls(certificate: tuple[Path, Path]) -> Iterator[tuple[Server, int]]:
    server, port = Server(), free_port()
    controller = Controller(server, hostname="127.0.0.1", port=port, ssl_context=_server_context(certificate))
    controller.start()
    try:
        yield server, port
    finally:
        controller.stop()


async def test_starttls_refuses_a_server_whose_certificate_it_cannot_verify(
    starttls: tuple[Server, int],
) -> None:
    # Without a verifying context anyone on the path could present a certificate and read answers.
    server, port = starttls
    before = len(server.messages)
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED") as raised:
        await SmtpSender(settings(port, smtp_starttls=True)).send(answer())
    assert not raised.value.permanent  # the configuration (a CA file) can be fixed: retried
    assert len(server.messages) == before


async def test_starttls_sends_to_a_server_the_configured_ca_vouches_for(
    starttls: tuple[Server, int], certificate: tuple[Path, Path]
) -> None:
    server, port = starttls
    config = settings(port, smtp_starttls=True, smtp_ca_file=str(certificate[0]))
    await SmtpSender(config).send(answer(to_email="tls@example.com"))
    assert b"tls@example.com" in server.messages[-1]


async def test_implicit_tls_verifies_the_server_too(
    implicit_tls: tuple[Server, int], certificate: tuple[Path, Path]
) -> None:
    server, port = implicit_tls
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        await SmtpSender(settings(port, smtp_tls=True)).send(answer())
    await SmtpSender(settings(port, smtp_tls=True, smtp_ca_file=str(certificate[0]))).send(
        answer(to_email="smtps@example.com")
    )
    assert b"smtps@example.com" in server.messages[-1]


# ---- a slow server: the send ends by its deadline, and a caller giving up waits for it ---------


class SlowServer:
    """Answers every line `delay` seconds late — each step well within the socket timeout, the
    conversation as a whole far past it; notes when each line came and whether a message was
    taken."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lines: list[float] = []
        self.accepted = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _reply(self, conn: socket.socket, line: bytes) -> None:
        time.sleep(self.delay)
        conn.sendall(line + b"\r\n")

    def _session(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            try:
                self._reply(conn, b"220 slow.example ESMTP")
                in_data = False
                for line in lines:
                    self.lines.append(time.monotonic())
                    if in_data:
                        if line.rstrip(b"\r\n") == b".":
                            in_data = False
                            self.accepted += 1
                            self._reply(conn, b"250 OK queued")
                        continue
                    command = line[:4].upper()
                    if command == b"DATA":
                        in_data = True
                        self._reply(conn, b"354 go ahead")
                    elif command == b"QUIT":
                        self._reply(conn, b"221 bye")
                        return
                    else:
                        self._reply(conn, b"250 slow.example")
            except OSError:
                return


async def test_a_slow_server_is_cut_off_at_the_deadline_and_a_timed_out_send_waits_for_it() -> None:
    # Each step answers in 0.3 s (the socket timeout is 1 s), the whole conversation would take
    # 2 s. Formerly the worker's timeout cancelled only its await: the thread went on and the
    # server took the message after the attempt had been recorded as failed (and retried).
    server = SlowServer(delay=0.3)
    threading.Thread(target=server.serve, daemon=True).start()
    try:
        sender = SmtpSender(settings(server.port).model_copy(update={"delivery_timeout_seconds": 1}))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.4):
                await sender.send(answer())
        returned = time.monotonic()
        # The await ended only once the thread had: at the send's own deadline, not the caller's.
        assert returned - started >= 0.9
        await asyncio.sleep(2.5)  # the rest of the conversation, had it gone on
        assert server.accepted == 0
        assert all(at <= returned for at in server.lines)
    finally:
        server.listener.close()
