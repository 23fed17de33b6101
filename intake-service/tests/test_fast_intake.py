"""`POST /v1/tickets` through the lean lane (`api.fast_intake`) and through FastAPI's route.

Requests the lane fully accepts are answered by it; everything else falls through to the
declared route. Both must answer alike: same status, body shape, headers and problems.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message, Receive, Scope, Send

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from intake_service.api.fast_intake import FastTicketIntake

CHANNEL = auth_headers("channel", sub="fast-lane-portal")
# FastAPI reads `+json` media types as JSON; the lane takes only application/json, so this
# content type sends an otherwise identical request down the generic path.
GENERIC = {"content-type": "application/vnd.helpdesk+json"}
JSON = {"content-type": "application/json"}


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "channel": "web",
        "kind": "question",
        "subject": "理賠進度",
        "description": "請問理賠進度如何？",
        "customer": {"external_id": f"fast-{uuid.uuid4()}", "email": "fast@example.com"},
        "tags": [" vip "],
    }
    data.update(overrides)
    return data


async def post(intake: ServiceHarness, data: Any, headers: dict[str, str], *, generic: bool = False) -> Any:
    content = data if isinstance(data, bytes) else orjson.dumps(data)
    return await intake.client.post(
        "/v1/tickets", content=content, headers={**headers, **(GENERIC if generic else JSON)}
    )


def shape(ticket: dict[str, Any]) -> dict[str, Any]:
    """A ticket response without what differs from one ticket to the next."""
    varying = {"id", "number", "customer_id", "created_at", "updated_at"}
    return {k: v for k, v in ticket.items() if k not in varying}


async def test_the_lane_answers_like_the_declared_route(intake: ServiceHarness) -> None:
    fast = await post(intake, body(), CHANNEL)
    generic = await post(intake, body(), CHANNEL, generic=True)

    for response in (fast, generic):
        assert response.status_code == 201, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["location"] == f"/v1/tickets/{response.json()['id']}"
        assert response.headers["x-request-id"]
        assert "idempotent-replayed" not in response.headers
    assert list(fast.json()) == list(generic.json())
    assert shape(fast.json()) == shape(generic.json())
    assert fast.json()["tags"] == ["vip"]
    fetched = await intake.client.get(fast.headers["location"], headers=CHANNEL)
    assert fetched.json() == fast.json()


async def test_a_replay_through_the_lane_returns_the_first_ticket(intake: ServiceHarness) -> None:
    headers = {**CHANNEL, "Idempotency-Key": f"fast-{uuid.uuid4()}"}
    data = body()
    first = await post(intake, data, headers, generic=True)
    retry = await post(intake, data, headers)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"

    other = await post(intake, body(subject="另一個問題"), headers)
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    problem = other.json()
    assert problem["type"].endswith("/idempotency-key-reused")
    assert problem["instance"] == "/v1/tickets"
    assert problem["request_id"] == other.headers["x-request-id"]


async def test_concurrent_posts_with_one_key_make_one_ticket(intake: ServiceHarness) -> None:
    headers = {**CHANNEL, "Idempotency-Key": f"fast-{uuid.uuid4()}"}
    data = body()
    responses = await asyncio.gather(*(post(intake, data, headers) for _ in range(50)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 49


async def test_what_the_lane_does_not_accept_gets_the_usual_problems(intake: ServiceHarness) -> None:
    other_secret = auth_headers("channel", secret="a-different-secret-of-sufficient-length-0123456789")
    cases: list[tuple[Any, dict[str, str], int, str]] = [
        (body(), {}, 401, "unauthorized"),
        (body(), {"Authorization": "Basic abc"}, 401, "unauthorized"),
        (body(), {"Authorization": "Bearer "}, 401, "unauthorized"),
        (body(), other_secret, 401, "unauthorized"),
        (body(), auth_headers("agent"), 403, "forbidden"),
        ({**body(), "subject": ""}, CHANNEL, 422, "validation-error"),
        ({**body(), "unknown": 1}, CHANNEL, 422, "validation-error"),
        ([body()], CHANNEL, 422, "validation-error"),
        (b"{not json", CHANNEL, 422, "validation-error"),
        (b"", CHANNEL, 422, "validation-error"),
        (body(), {**CHANNEL, "Idempotency-Key": "k" * 256}, 422, "invalid-idempotency-key"),
        (body(), {**CHANNEL, "Idempotency-Key": ""}, 422, "invalid-idempotency-key"),
    ]
    for data, headers, status, slug in cases:
        fast = await post(intake, data, headers)
        assert fast.status_code == status, (data, headers, fast.text)
        assert fast.headers["content-type"] == "application/problem+json"
        problem = fast.json()
        assert problem["type"].endswith("/" + slug)
        assert problem["status"] == status
        assert problem["request_id"] == fast.headers["x-request-id"]
        if status == 401:
            assert fast.headers["www-authenticate"] == "Bearer"
        if isinstance(data, dict):  # the generic path words the same problem alike
            generic = await post(intake, data, headers, generic=True)
            assert generic.status_code == status
            assert {k: v for k, v in generic.json().items() if k != "request_id"} == {
                k: v for k, v in problem.items() if k != "request_id"
            }


async def test_validation_problems_name_body_fields(intake: ServiceHarness) -> None:
    data = body(channel="pigeon")
    del data["subject"]
    response = await post(intake, data, CHANNEL)
    assert response.status_code == 422
    assert {"body.subject", "body.channel"} <= {e["field"] for e in response.json()["errors"]}


async def test_missing_content_type_is_not_read_as_json(intake: ServiceHarness) -> None:
    response = await intake.client.post("/v1/tickets", content=orjson.dumps(body()), headers=CHANNEL)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body"


async def test_lane_requests_are_counted_under_the_route_template(intake: ServiceHarness) -> None:
    wanted = {"service": "intake", "method": "POST", "route": "/v1/tickets", "status": "201"}

    async def created() -> float:
        text = (await intake.client.get("/metrics")).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "helpdesk_http_requests_total" and s.labels == wanted:
                    return s.value
        return 0.0

    before = await created()
    assert (await post(intake, body(), CHANNEL)).status_code == 201
    assert await created() - before == 1


async def test_openapi_still_documents_the_route(intake: ServiceHarness) -> None:
    schema = (await intake.client.get("/openapi.json")).json()
    operation = schema["paths"]["/v1/tickets"]["post"]
    assert operation["summary"] == "Accept a ticket from a channel"
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/TicketCreate")
    assert operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/TicketOut"
    )
    assert {"401", "403", "409", "422", "503"} <= set(operation["responses"])
    assert any(p["name"] == "idempotency-key" and p["in"] == "header" for p in operation["parameters"])


class _Recorder:
    """A downstream ASGI app that records what reaches it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = b""
        while True:
            message = await receive()
            chunks += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(chunks)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def test_a_request_the_lane_declines_reaches_the_app_whole() -> None:
    recorder = _Recorder()
    lane = FastTicketIntake(recorder)
    chunks: list[Message] = [
        {"type": "http.request", "body": b'{"sub', "more_body": True},
        {"type": "http.request", "body": b'ject": 1}', "more_body": False},
    ]

    async def receive() -> Message:
        return chunks.pop(0)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/tickets", "headers": [], "app": None}
    await lane(scope, receive, send)  # no token: the declared route answers (here: the recorder)
    assert recorder.bodies == [b'{"subject": 1}']
    assert sent[0]["status"] == 204

    other: Scope = {"type": "http", "method": "GET", "path": "/v1/tickets", "headers": []}
    chunks.append({"type": "http.request", "body": b"", "more_body": False})
    await lane(other, receive, send)
    assert recorder.bodies[-1] == b""
