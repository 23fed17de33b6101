"""Service app factory: the one place where a service's parts are wired.

`create_service_app(ServiceDefinition(...))` gives every service the same
shape: problem+json errors, request ids, JSON logs, `/healthz`, `/readyz`
(database + Kafka), `/metrics`, a database engine, a unit-of-work factory,
the outbox relay and the idempotent event consumer, all started and stopped
by the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.middleware import Middleware

from helpdesk_shared.chassis.auth import TokenVerifier
from helpdesk_shared.chassis.consumer import EventConsumer, Handler
from helpdesk_shared.chassis.db import create_engine, create_sessionmaker
from helpdesk_shared.chassis.limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from helpdesk_shared.chassis.logging import configure_logging, get_logger
from helpdesk_shared.chassis.metrics import DEPENDENCY_UP, RequestContextMiddleware, metrics_payload
from helpdesk_shared.chassis.outbox import OutboxRelay
from helpdesk_shared.chassis.problems import install_problem_handlers
from helpdesk_shared.chassis.settings import ServiceSettings
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.topics import DLQ_TOPIC, SERVICE_TOPIC

log = get_logger(__name__)

BackgroundTask = Callable[["ServiceRuntime"], Awaitable[None]]

_READY_TIMEOUT = 2.0
_STOP_TIMEOUT = 10.0


@dataclass
class ServiceDefinition:
    name: str
    settings: ServiceSettings
    routers: Sequence[APIRouter] = ()
    handlers: Mapping[str, Handler] = field(default_factory=dict)
    consumes: Sequence[str] = ()
    background: Sequence[BackgroundTask] = ()
    # ASGI middleware run inside the request context (request id, metrics, logs), outermost
    # first: e.g. a hand-written lane for one hot route ahead of FastAPI's routing.
    middleware: Sequence[Middleware] = ()
    # Request bodies above this are refused with 413 before anything reads them; `larger_bodies`
    # names the routes (exact paths) that take more, e.g. a raw email or a bulk import.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    larger_bodies: Mapping[str, int] = field(default_factory=dict)
    title: str = ""
    description: str = ""
    version: str = "0.1.0"


class ServiceRuntime:
    """Everything a running service holds: engine, relay, consumer, tasks."""

    def __init__(self, definition: ServiceDefinition) -> None:
        settings = definition.settings
        self.definition = definition
        self.settings = settings
        self.engine = create_engine(
            settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
        )
        self.sessionmaker = create_sessionmaker(self.engine)
        self.relay = OutboxRelay(settings, self.sessionmaker)
        own_topic = SERVICE_TOPIC.get(definition.name)
        self.topic = settings.topic(own_topic) if own_topic else ""
        self.consumer: EventConsumer | None = None
        if definition.handlers:
            self.consumer = EventConsumer(
                settings=settings,
                topics=[settings.topic(t) for t in definition.consumes],
                dead_letter_topic=settings.topic(DLQ_TOPIC[definition.name]),
                handlers=dict(definition.handlers),
                uow_factory=self.uow,
            )
        self._tasks: list[asyncio.Task[None]] = []

    def uow(self) -> UnitOfWork:
        return UnitOfWork(
            self.sessionmaker, source=self.settings.source, topic=self.topic, on_commit=self.relay.wake
        )

    async def start(self) -> None:
        self._spawn("outbox-relay", self.relay.run())
        if self.consumer is not None:
            self._spawn("event-consumer", self.consumer.run())
        for task in self.definition.background:
            self._spawn(getattr(task, "__name__", "background"), task(self))

    def _spawn(self, name: str, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background_task_crashed", task=name)
                raise

        self._tasks.append(asyncio.create_task(guarded(), name=f"{self.definition.name}:{name}"))

    async def stop(self) -> None:
        """Cancel the background tasks and close what they used — bounded: a task stuck in its
        clean-up (a driver waiting for a connection that is never given back, say) is reported
        and left behind rather than holding the shutdown forever."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            done, stuck = await asyncio.wait(self._tasks, timeout=_STOP_TIMEOUT)
            for task in done:
                if not task.cancelled():
                    task.exception()  # logged by `guarded` already; retrieved so asyncio stays quiet
            for task in stuck:
                log.warning("background_task_did_not_stop", task=task.get_name(), timeout=_STOP_TIMEOUT)
        self._tasks.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.relay.stop(), _STOP_TIMEOUT)
        await self.engine.dispose()

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            async with self.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), _READY_TIMEOUT)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        try:
            await asyncio.wait_for(self.relay.check_kafka(), _READY_TIMEOUT)
            checks["kafka"] = "ok"
        except Exception as exc:
            checks["kafka"] = f"unavailable: {type(exc).__name__}"
        for dependency, state in checks.items():
            DEPENDENCY_UP.labels(self.definition.name, dependency).set(1 if state == "ok" else 0)
        return checks


def readiness_status(checks: dict[str, str]) -> tuple[str, int]:
    """`/readyz`'s verdict: ready (200), degraded (200: Kafka unreachable) or not ready (503).

    Only the database decides. Every request needs it, and a replica without it can do nothing.
    Kafka does not: what a service writes while the broker is away waits in its outbox and is
    published when it returns, and its consumers resume from their committed offsets. Failing
    readiness on Kafka would take every replica out of its Service at once, so a broker outage
    would stop intake taking tickets it could have kept. The outbox and consumer-lag alerts
    report the outage instead.
    """
    if checks.get("database") != "ok":
        return "not_ready", 503
    if all(value == "ok" for value in checks.values()):
        return "ready", 200
    return "degraded", 200


def freeze_long_lived() -> None:
    """Collect what is garbage now, then exempt every surviving object from the cyclic garbage
    collector's future passes (`gc.freeze`); called once a service has started.

    A service's long-lived objects — modules, the app, ORM metadata, pydantic models, clients —
    are a couple of hundred thousand containers that every full (generation 2) collection walked,
    stalling the event loop: 100–170 ms every few seconds in routing at 500 tickets/s. Loaded at
    start-up, they never become garbage; after the freeze a full pass walks only what was
    allocated since (10–20 ms in the same benchmark). The exempt objects are still freed by
    reference counting; only a cycle among them dropped later would stay.
    """
    gc.collect()
    gc.freeze()


def collect_young_every(threshold: int) -> None:
    """Run the collector's youngest generation once tracked objects grew by `threshold` (the older
    generations keep their thresholds, counted in young passes)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)


def create_service_app(definition: ServiceDefinition) -> FastAPI:
    settings = definition.settings
    configure_logging(definition.name, settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = ServiceRuntime(definition)
        app.state.runtime = runtime
        await runtime.start()
        if settings.gc_freeze:
            freeze_long_lived()
            collect_young_every(settings.gc_young_threshold)
        log.info("service_started", topics=list(definition.consumes))
        try:
            yield
        finally:
            await runtime.stop()
            log.info("service_stopped")

    app = FastAPI(
        title=definition.title or f"Helpdesk {definition.name} service",
        description=definition.description,
        version=definition.version,
        lifespan=lifespan,
        telemetry=None if settings.opentelemetry else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.token_verifier = TokenVerifier(settings)
    install_problem_handlers(app)
    for middleware in reversed(definition.middleware):
        app.user_middleware.insert(0, middleware)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=definition.max_body_bytes, larger=definition.larger_bodies
    )
    app.add_middleware(RequestContextMiddleware, service=definition.name)
    app.include_router(_ops_router())
    for router in definition.routers:
        app.include_router(router)
    return app


def _ops_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: the database reachable (Kafka reported beside it)")
    async def readyz(request: Request) -> JSONResponse:
        checks = await request.app.state.runtime.readiness()
        status, code = readiness_status(checks)
        return JSONResponse({"status": status, "checks": checks}, status_code=code)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        runtime: ServiceRuntime = request.app.state.runtime
        try:  # fresh backlog even while the relay is stuck on an unreachable broker
            await asyncio.wait_for(runtime.relay.refresh_backlog(), _READY_TIMEOUT)
        except Exception as exc:
            log.warning("outbox_backlog_unavailable", error=repr(exc))
        # Fresh dependency gauges: a broker outage on a quiet system (no events to publish, so no
        # relay errors) still shows, although /readyz stays 200 without Kafka.
        await runtime.readiness()
        body, content_type = metrics_payload()
        return Response(body, media_type=content_type)

    return router


def get_runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


async def get_uow(request: Request) -> AsyncIterator[UnitOfWork]:
    async with get_runtime(request).uow() as uow:
        yield uow


UoW = Annotated[UnitOfWork, Depends(get_uow)]
Runtime = Annotated[ServiceRuntime, Depends(get_runtime)]
