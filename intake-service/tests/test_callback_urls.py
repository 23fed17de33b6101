"""A ticket's own callback_url may point only where answers may go (SSRF): INTAKE_CALLBACK_HOSTS
names the hosts, production wants https and, without a list, no per-ticket URL at all. Checked
when the ticket is created (the lean lane and the declared route alike) and again before each send,
under the settings of then."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from intake_factories import assign, publish_answer
from pydantic import ValidationError
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from intake_service.app import create_app
from intake_service.channels import ChannelSender, SmtpSender, WebhookSender
from intake_service.delivery import deliver_due
from intake_service.models import Delivery, TimelineEntry
from intake_service.settings import IntakeSettings

CHANNEL = auth_headers("channel", sub="callback-portal")
LEAD = auth_headers("lead")
METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
HOSTS = ("hooks.example.com", "*.partner.example")


def settings(intake: ServiceHarness, **overrides: Any) -> IntakeSettings:
    current = intake.settings
    assert isinstance(current, IntakeSettings)
    return current.model_copy(update=overrides)


@pytest.fixture
def configured(intake: ServiceHarness) -> Iterator[Callable[..., None]]:
    """Run the service's requests under settings changed for one test (monkeypatch's undo would
    delete the attribute from Starlette's `State`: restored by hand)."""
    original = intake.app.state.settings

    def configure(**overrides: Any) -> None:
        intake.app.state.settings = settings(intake, **overrides)

    yield configure
    intake.app.state.settings = original


def ticket(callback_url: str | None) -> dict[str, Any]:
    return {
        "channel": "app",
        "kind": "question",
        "subject": "保單借款",
        "description": "可以借多少？",
        "customer": {"external_id": f"cb-{uuid.uuid4()}"},
    } | ({"callback_url": callback_url} if callback_url is not None else {})


async def post(intake: ServiceHarness, body: dict[str, Any], *, lane: bool) -> httpx.Response:
    # application/json with a channel token is the lean lane's; a `+json` type FastAPI's route's.
    content_type = "application/json" if lane else "application/vnd.helpdesk+json"
    return await intake.client.post(
        "/v1/tickets", content=orjson.dumps(body), headers={**CHANNEL, "content-type": content_type}
    )


def refused(response: httpx.Response, reason: str) -> bool:
    problem = response.json()
    [error] = problem["errors"]
    return (
        response.status_code == 422
        and response.headers["content-type"] == "application/problem+json"
        and error["field"] == "body.callback_url"
        and error["type"] == "callback_url_refused"
        and reason in error["message"]
    )


# ---- the setting ----------------------------------------------------------------------------------


def test_callback_hosts_are_read_comma_separated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "INTAKE_CALLBACK_HOSTS", " Hooks.Example.COM. , *.Partner.example,,bücher.example,[::1]"
    )
    parsed = IntakeSettings(database_url="postgresql://helpdesk@127.0.0.1/intake")
    assert parsed.callback_hosts == ("hooks.example.com", "*.partner.example", "xn--bcher-kva.example", "::1")
    monkeypatch.setenv("INTAKE_CALLBACK_HOSTS", "")
    assert IntakeSettings(database_url="postgresql://helpdesk@127.0.0.1/intake").callback_hosts == ()


@pytest.mark.parametrize(
    "entry", ["https://hooks.example.com", "hooks.example.com:8443", "*", "a.*.example", "x/y"]
)
def test_callback_hosts_are_host_names_only(entry: str) -> None:
    with pytest.raises(ValidationError, match="callback_hosts"):
        IntakeSettings(database_url="postgresql://helpdesk@127.0.0.1/intake", callback_hosts=entry)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://hooks.example.com/answers", True),
        ("https://HOOKS.example.com./answers?x=1", True),
        ("https://eu.app.partner.example/a", True),
        ("https://partner.example/a", False),  # `*.` is what is under the domain, not the domain
        ("https://hooks.example.com.evil.test/a", False),
        ("https://evilhooks.example.com/a", False),
        (METADATA, False),
        ("http://hooks.example.com@169.254.169.254/", False),  # the host is after the credentials
        ("http://hooks.example.com\\@169.254.169.254/", False),  # as httpx reads it, and posts it
        ("http://0xa9fea9fe/", False),
        ("http://[::ffff:169.254.169.254]/", False),
    ],
)
def test_only_the_listed_hosts_are_taken(url: str, allowed: bool) -> None:
    listed = IntakeSettings(
        database_url="postgresql://helpdesk@127.0.0.1/intake", callback_hosts=",".join(HOSTS)
    )
    assert (listed.callback_url_refusal(url) is None) is allowed


# ---- when a ticket is created ---------------------------------------------------------------------


@pytest.mark.parametrize("lane", [True, False], ids=["lean-lane", "declared-route"])
async def test_a_callback_url_outside_the_listed_hosts_is_a_422(
    intake: ServiceHarness, configured: Callable[..., None], lane: bool
) -> None:
    configured(callback_hosts=HOSTS)

    response = await post(intake, ticket(METADATA), lane=lane)
    assert refused(response, "'169.254.169.254' is not one of INTAKE_CALLBACK_HOSTS"), response.text

    taken = await post(intake, ticket("http://hooks.example.com/answers"), lane=lane)
    assert taken.status_code == 201, taken.text


@pytest.mark.parametrize("lane", [True, False], ids=["lean-lane", "declared-route"])
async def test_production_wants_https_to_a_listed_host(
    intake: ServiceHarness, configured: Callable[..., None], lane: bool
) -> None:
    configured(environment="production", callback_hosts=HOSTS)

    plain = await post(intake, ticket("http://hooks.example.com/answers"), lane=lane)
    assert refused(plain, "must be https in production"), plain.text

    secure = await post(intake, ticket("https://hooks.example.com/answers"), lane=lane)
    assert secure.status_code == 201, secure.text


@pytest.mark.parametrize("lane", [True, False], ids=["lean-lane", "declared-route"])
async def test_production_without_a_list_takes_no_callback_url_of_a_ticket(
    intake: ServiceHarness, configured: Callable[..., None], lane: bool
) -> None:
    configured(environment="production")

    response = await post(intake, ticket("https://hooks.example.com/answers"), lane=lane)
    assert refused(response, "not accepted in production"), response.text

    # The channel's configured callback is the way: tickets without their own URL are taken.
    without = await post(intake, ticket(None), lane=lane)
    assert without.status_code == 201, without.text


async def test_outside_production_without_a_list_any_http_url_is_taken(intake: ServiceHarness) -> None:
    response = await post(intake, ticket("http://127.0.0.1:9/answers"), lane=True)
    assert response.status_code == 201, response.text


# ---- before each send ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def held(make_service: Any) -> AsyncIterator[ServiceHarness]:
    """An instance whose own worker polls once an hour: the tests drive the passes."""
    async with make_service(
        "intake", IntakeSettings, create_app, label="callback-urls", delivery_poll_seconds=3600
    ) as harness:
        yield harness


async def answered_ticket(intake: ServiceHarness, callback_url: str) -> str:
    created = await post(intake, ticket(callback_url), lane=True)
    assert created.status_code == 201, created.text
    ticket_id: str = created.json()["id"]
    await assign(intake, ticket_id)
    assert await publish_answer(intake, ticket_id, "最多可借保單價值的八成。")
    return ticket_id


async def send_pass(intake: ServiceHarness, **overrides: Any) -> list[httpx.Request]:
    """One pass of the worker through the real webhook adapter, under settings changed since the
    tickets were stored; returns the requests it made (each answered 200)."""
    sent: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    now = settings(intake, **overrides)
    async with httpx.AsyncClient(transport=httpx.MockTransport(receive)) as client:
        await deliver_due(intake.runtime.uow, ChannelSender(SmtpSender(now), WebhookSender(now, client)), now)
    return sent


async def delivery_outcome(intake: ServiceHarness, ticket_id: str) -> tuple[str, dict[str, Any] | None]:
    async with intake.uow() as uow:
        status = await uow.session.scalar(
            select(Delivery.status).where(Delivery.ticket_id == uuid.UUID(ticket_id))
        )
        failed = await uow.session.scalar(
            select(TimelineEntry.data).where(
                TimelineEntry.ticket_id == uuid.UUID(ticket_id), TimelineEntry.kind == "delivery_failed"
            )
        )
    assert status is not None
    return status, failed


@pytest.mark.parametrize(
    ("url", "overrides", "why"),
    [
        (METADATA, {"callback_hosts": HOSTS}, "'169.254.169.254' is not one of INTAKE_CALLBACK_HOSTS"),
        (
            "http://hooks.example.com/a",
            {"callback_hosts": HOSTS, "environment": "production"},
            "must be https",
        ),
        ("https://hooks.example.com/a", {"environment": "production"}, "not accepted in production"),
    ],
    ids=["host-not-listed", "http-in-production", "production-without-a-list"],
)
async def test_a_stored_url_the_settings_now_refuse_fails_the_delivery_at_once(
    held: ServiceHarness, url: str, overrides: dict[str, Any], why: str
) -> None:
    # Stored under the instance's own settings (outside production, no list: any URL) …
    ticket_id = await answered_ticket(held, url)

    # … and sent under stricter ones.
    sent = await send_pass(held, **overrides)

    assert [str(r.url) for r in sent if str(r.url) == url] == []
    status, failed = await delivery_outcome(held, ticket_id)
    assert status == "failed"
    assert failed is not None
    assert failed["reason"] == "callback_url_refused"
    assert failed["error"].startswith("callback URL refused:") and why in failed["error"]
    assert failed["attempts"] == 1  # permanent: not retried


async def test_a_stored_url_the_settings_still_allow_is_posted_to(held: ServiceHarness) -> None:
    ticket_id = await answered_ticket(held, "https://eu.app.partner.example/answers")

    sent = await send_pass(held, callback_hosts=HOSTS, environment="production")

    assert "https://eu.app.partner.example/answers" in [str(r.url) for r in sent]
    assert await delivery_outcome(held, ticket_id) == ("delivered", None)
