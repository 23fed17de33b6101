"""The service app factory over in-process ASGI: request ids, problem+json, /metrics, /readyz."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from helpdesk_runtime.procs import free_port
from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.testing import migrate, run_service
from helpdesk_shared.chassis.app import ServiceDefinition, UoW, create_service_app, readiness_status
from helpdesk_shared.chassis.db import create_engine
from helpdesk_shared.chassis.logging import correlation_id_var
from helpdesk_shared.chassis.problems import PROBLEM_BASE, PROBLEM_JSON, Conflict
from helpdesk_shared.chassis.settings import ServiceSettings

SERVICE = "chassis-http"
SECRET_TEXT = "password=hunter2 at db-7.internal"

router = APIRouter(prefix="/chassis")
# In range for Python, not once converted to UTC; a lone surrogate has no UTF-8 form.
UNENCODABLE = {"year-one": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), "surrogate": "a\ud800b"}


@router.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, int]:
    if item_id == 409:
        raise Conflict("Item 409 is locked by another agent", holder="agent-7")
    return {"id": item_id}


@router.get("/correlation")
async def correlation() -> dict[str, str | None]:
    return {"correlation_id": correlation_id_var.get()}


@router.get("/crash")
async def crash() -> None:
    raise RuntimeError(SECRET_TEXT)


@router.post("/deadlock")
async def deadlock(uow: UoW) -> None:
    # A real error from PostgreSQL with the deadlock SQLSTATE, as a concurrent transaction causes.
    await uow.session.execute(text("DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '40P01'; END $$"))


@router.post("/nul-text")
async def nul_text(uow: UoW) -> None:
    # What any handler storing a request's text meets: PostgreSQL refuses U+0000 (SQLSTATE 22…).
    await uow.session.execute(text("SELECT CAST(:value AS text)"), {"value": "a\x00b"})


@router.post("/raw-nul-text")
async def raw_nul_text(uow: UoW) -> None:
    # The same on a hot path's plain SQL (the asyncpg connection under the unit of work).
    driver = await uow.driver_connection()
    await driver.fetch("SELECT $1::text", "a\x00b")


@router.post("/unencodable/{value}")
async def unencodable(value: str, uow: UoW) -> None:
    # Values the driver itself cannot send (asyncpg's client-side DataError, which SQLAlchemy
    # wraps as an InterfaceError — the class it also uses for a lost connection).
    cast = "timestamptz" if value == "year-one" else "text"
    await uow.session.execute(text(f"SELECT CAST(:value AS {cast})"), {"value": UNENCODABLE[value]})


@router.post("/raw-unencodable/{value}")
async def raw_unencodable(value: str, uow: UoW) -> None:
    driver = await uow.driver_connection()
    await driver.fetch(f"SELECT $1::{'timestamptz' if value == 'year-one' else 'text'}", UNENCODABLE[value])


@router.post("/raw-deadlock")
async def raw_deadlock(uow: UoW) -> None:
    driver = await uow.driver_connection()
    await driver.execute("DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '40P01'; END $$")


@router.post("/raw-duplicate")
async def raw_duplicate(uow: UoW) -> None:
    driver = await uow.driver_connection()
    await driver.execute("DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '23505'; END $$")


@router.get("/database-down")
async def database_down() -> None:
    engine = create_engine(
        f"postgresql://nobody@127.0.0.1:{free_port()}/nothing", pool_size=1, max_overflow=0
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


@asynccontextmanager
async def service(url: str, bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServiceSettings(
        database_url=url, kafka_bootstrap_servers=bootstrap, service_name=SERVICE, environment="test"
    )

    def create_app(s: ServiceSettings) -> FastAPI:
        return create_service_app(ServiceDefinition(name=SERVICE, settings=s, routers=[router]))

    async with run_service(create_app, settings) as harness:
        # Unhandled errors are re-raised by Starlette after the 500 was sent; read the response instead.
        transport = httpx.ASGITransport(app=harness.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture(scope="module")
async def database(infra: Infra) -> str:
    url = infra.create_database("chassis_http")
    await migrate(url, "intake_service")
    return url


@pytest.fixture(scope="module")
async def client(database: str, infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    async with service(database, infra.kafka_bootstrap) as client:
        yield client


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    sent = await client.get("/chassis/items/1", headers={"X-Request-ID": "req-abc-123"})
    assert sent.status_code == 200
    assert sent.headers["x-request-id"] == "req-abc-123"
    generated = [(await client.get("/chassis/items/1")).headers["x-request-id"] for _ in range(2)]
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in generated)
    assert generated[0] != generated[1]


async def test_a_request_runs_under_the_callers_correlation_id_or_its_own_request_id(
    client: httpx.AsyncClient,
) -> None:
    async def seen(**headers: str) -> tuple[str | None, str]:
        response = await client.get("/chassis/correlation", headers=headers)
        return response.json()["correlation_id"], response.headers["x-request-id"]

    assert await seen(**{"X-Correlation-ID": "corr-7", "X-Request-ID": "req-7"}) == ("corr-7", "req-7")
    assert await seen(**{"X-Request-ID": "req-8"}) == ("req-8", "req-8")
    correlation_id, request_id = await seen()
    assert correlation_id == request_id  # generated
    assert correlation_id_var.get() is None  # not left behind


async def test_a_domain_error_is_a_problem_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/chassis/items/409", headers={"X-Request-ID": "req-conflict"})
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": PROBLEM_BASE + "conflict",
        "title": "Conflict with the current state",
        "status": 409,
        "detail": "Item 409 is locked by another agent",
        "instance": "/chassis/items/409",
        "request_id": "req-conflict",
        "holder": "agent-7",
    }


async def test_a_validation_error_names_the_field(client: httpx.AsyncClient) -> None:
    response = await client.get("/chassis/items/not-a-number")
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["type"] == PROBLEM_BASE + "validation-error"
    assert [e["field"] for e in problem["errors"]] == ["path.item_id"]


async def test_an_unexpected_error_is_a_500_problem_without_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/chassis/crash")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["type"] == PROBLEM_BASE + "internal-error"
    assert problem["title"] == "Internal server error"
    assert problem["status"] == 500
    assert problem["instance"] == "/chassis/crash"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text


async def test_an_unexpected_error_still_carries_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/chassis/crash", headers={"X-Request-ID": "req-crash"})
    assert response.status_code == 500
    assert response.json().get("request_id") == "req-crash"
    assert response.headers.get("x-request-id") == "req-crash"


async def metric_samples(client: httpx.AsyncClient, family: str) -> dict[tuple[str, str, str], float]:
    """Samples of a counter family for this service: (method, route, status or "") → value."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    found: dict[tuple[str, str, str], float] = {}
    for metric in text_string_to_metric_families(response.text):
        if metric.name != family:
            continue
        for sample in metric.samples:
            if sample.name == family + "_total" and sample.labels["service"] == SERVICE:
                labels = sample.labels
                found[(labels["method"], labels["route"], labels.get("status", ""))] = sample.value
    return found


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    template = "/chassis/items/{item_id}"
    before = await metric_samples(client, "helpdesk_http_requests")
    errors_before = await metric_samples(client, "helpdesk_http_errors")
    ids = [uuid.uuid4().int % 10_000 + 1000 for _ in range(3)]
    for item_id in ids:
        assert (await client.get(f"/chassis/items/{item_id}")).status_code == 200
    assert (await client.get(f"/chassis/nowhere/{ids[0]}")).status_code == 404
    await client.get("/chassis/crash")

    after = await metric_samples(client, "helpdesk_http_requests")
    assert after[("GET", template, "200")] - before.get(("GET", template, "200"), 0) == 3
    assert after[("GET", "unmatched", "404")] - before.get(("GET", "unmatched", "404"), 0) == 1
    assert after[("GET", "/chassis/crash", "500")] - before.get(("GET", "/chassis/crash", "500"), 0) == 1
    assert not [key for key in after if str(ids[0]) in key[1]]
    errors_after = await metric_samples(client, "helpdesk_http_errors")
    key = ("GET", "/chassis/crash", "")
    assert errors_after[key] - errors_before.get(key, 0) == 1
    assert ("GET", template, "") not in errors_after


async def test_readyz_reports_ok_when_database_and_kafka_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "kafka": "ok"}}


async def test_readyz_stays_200_but_degraded_when_kafka_cannot_be_reached(database: str) -> None:
    # Requests are still served (their events wait in the outbox): the replica stays in its Service.
    async with service(database, f"127.0.0.1:{free_port()}") as client:
        response = await client.get("/readyz")
        healthz = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["kafka"].startswith("unavailable")
    assert healthz.status_code == 200


def dependency_up(metrics_text: str) -> dict[str, float]:
    return {
        sample.labels["dependency"]: sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == "helpdesk_dependency_up"
        for sample in family.samples
        if sample.labels["service"] == SERVICE
    }


async def test_a_scrape_reports_whether_each_dependency_was_reached(database: str, infra: Infra) -> None:
    # Shown on a quiet system too: no relay error is needed for a broker outage to appear.
    async with service(database, f"127.0.0.1:{free_port()}") as client:
        without_kafka = dependency_up((await client.get("/metrics")).text)
    async with service(database, infra.kafka_bootstrap) as client:
        with_kafka = dependency_up((await client.get("/metrics")).text)
    assert without_kafka == {"database": 1.0, "kafka": 0.0}
    assert with_kafka == {"database": 1.0, "kafka": 1.0}


async def test_readyz_is_503_when_the_database_cannot_be_reached(database: str, infra: Infra) -> None:
    settings = ServiceSettings(
        database_url=database,
        kafka_bootstrap_servers=infra.kafka_bootstrap,
        service_name=SERVICE,
        environment="test",
    )

    def create_app(s: ServiceSettings) -> FastAPI:
        return create_service_app(ServiceDefinition(name=SERVICE, settings=s, routers=[router]))

    async with run_service(create_app, settings) as harness:
        runtime = harness.app.state.runtime
        working = runtime.engine
        runtime.engine = create_engine(
            f"postgresql://nobody@127.0.0.1:{free_port()}/nothing", pool_size=1, max_overflow=0
        )
        try:
            response = await harness.client.get("/readyz")
        finally:
            await runtime.engine.dispose()
            runtime.engine = working
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"].startswith("unavailable")
    assert body["checks"]["kafka"] == "ok"


@pytest.mark.parametrize(
    ("checks", "verdict"),
    [
        ({"database": "ok", "kafka": "ok"}, ("ready", 200)),
        ({"database": "ok", "kafka": "unavailable: KafkaConnectionError"}, ("degraded", 200)),
        ({"database": "unavailable: OSError", "kafka": "ok"}, ("not_ready", 503)),
        (
            {"database": "unavailable: OSError", "kafka": "unavailable: KafkaConnectionError"},
            ("not_ready", 503),
        ),
    ],
)
def test_only_the_database_decides_readiness(checks: dict[str, str], verdict: tuple[str, int]) -> None:
    assert readiness_status(checks) == verdict


@pytest.mark.parametrize("path", ["/chassis/deadlock", "/chassis/raw-deadlock"])
async def test_a_deadlock_is_a_503_to_retry_not_a_500(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(path)
    assert response.status_code == 503
    assert response.json()["type"] == PROBLEM_BASE + "concurrent-update"
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("path", ["/chassis/nul-text", "/chassis/raw-nul-text"])
async def test_a_value_the_database_refuses_is_a_422_not_a_500(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(path)
    assert response.status_code == 422
    assert response.json()["type"] == PROBLEM_BASE + "invalid-data"
    assert "a\x00b" not in response.text  # the refused value is not echoed


@pytest.mark.parametrize("value", list(UNENCODABLE))
@pytest.mark.parametrize("path", ["/chassis/unencodable", "/chassis/raw-unencodable"])
async def test_a_value_the_driver_cannot_send_is_a_422_not_a_503(
    client: httpx.AsyncClient, path: str, value: str
) -> None:
    response = await client.post(f"{path}/{value}")
    assert response.status_code == 422
    assert response.json()["type"] == PROBLEM_BASE + "invalid-data"
    assert "retry-after" not in response.headers


async def test_a_conflict_on_a_hot_paths_plain_sql_is_a_409_not_a_500(client: httpx.AsyncClient) -> None:
    response = await client.post("/chassis/raw-duplicate")
    assert response.status_code == 409
    assert response.json()["type"] == PROBLEM_BASE + "conflict"


async def test_an_unreachable_database_is_a_503(client: httpx.AsyncClient) -> None:
    response = await client.get("/chassis/database-down")
    assert response.status_code == 503
    assert response.json()["type"] == PROBLEM_BASE + "database-unavailable"


@pytest.mark.parametrize(("flag", "on"), [(None, False), ("true", True)])
def test_native_opentelemetry_is_off_unless_asked_for(
    flag: str | None, on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if flag is not None:
        monkeypatch.setenv("HELPDESK_OPENTELEMETRY", flag)
    settings = ServiceSettings(database_url="postgresql://unused/unused", environment="test")
    app = create_service_app(ServiceDefinition(name=SERVICE, settings=settings, routers=[router]))
    # What FastAPI checks on every request before wrapping it in OpenTelemetry.
    assert (app._telemetry["tracing"], app._telemetry["metrics"], app._telemetry["logs"]) == (on, on, on)


@pytest.mark.parametrize("freeze", [True, False])
async def test_a_started_service_exempts_what_it_loaded_and_sets_its_young_collection_threshold(
    freeze: bool, database: str, infra: Infra
) -> None:
    settings = ServiceSettings(
        database_url=database,
        kafka_bootstrap_servers=infra.kafka_bootstrap,
        service_name=SERVICE,
        environment="test",
        gc_freeze=freeze,
        gc_young_threshold=12_345,
    )
    app = create_service_app(ServiceDefinition(name=SERVICE, settings=settings, routers=[router]))
    gc.unfreeze()
    thresholds = gc.get_threshold()
    loaded = _SelfReferencing()
    try:
        async with app.router.lifespan_context(app):
            await asyncio.sleep(0)  # the background tasks begin (stopping them unbegun warns)
            tracked = any(candidate is loaded for candidate in gc.get_objects())
            running = gc.get_threshold()
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert tracked is not freeze
    # The young generation's threshold is the service's; the older generations' are kept.
    assert running == ((12_345, *thresholds[1:]) if freeze else thresholds)


class _SelfReferencing:
    def __init__(self) -> None:
        self.me = self
