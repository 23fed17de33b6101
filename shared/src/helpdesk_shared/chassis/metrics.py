"""Prometheus metrics shared by every service.

Metric objects are module-level and labelled by service, so several service
apps can live in one process (as they do in tests) without registering a
metric twice.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from helpdesk_shared.chassis.logging import correlation_id_var, request_id_var, traceparent_var
from helpdesk_shared.chassis.problems import unexpected_error_response
from helpdesk_shared.chassis.trace_context import continue_trace

HTTP_REQUESTS = Counter(
    "helpdesk_http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"]
)
HTTP_ERRORS = Counter(
    "helpdesk_http_errors_total", "HTTP responses with status >= 500", ["service", "method", "route"]
)
HTTP_LATENCY = Histogram(
    "helpdesk_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
OUTBOX_BACKLOG = Gauge("helpdesk_outbox_backlog", "Outbox rows not yet acknowledged by Kafka", ["service"])
OUTBOX_PUBLISHED = Counter(
    "helpdesk_outbox_published_total", "Outbox rows acknowledged by Kafka", ["service"]
)
OUTBOX_RELAY_DELAY = Histogram(
    "helpdesk_outbox_relay_delay_seconds",
    "From a commit that wrote events to the start of the relay pass that publishes them (a pass in "
    "progress, or the wake-up interval, is waited for)",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
OUTBOX_ERRORS = Counter("helpdesk_outbox_publish_errors_total", "Failed outbox relay passes", ["service"])
OUTBOX_PARKED = Counter(
    "helpdesk_outbox_parked_total",
    "Outbox rows set aside because the broker can never accept them (see the service log)",
    ["service"],
)
DEPENDENCY_UP = Gauge(
    "helpdesk_dependency_up",
    "1 when the service reached the dependency at its last check (each /readyz and each scrape), else 0",
    ["service", "dependency"],
)
CONSUMER_LAG = Gauge(
    "helpdesk_consumer_lag", "Messages behind the partition high watermark", ["service", "topic", "partition"]
)
EVENTS_CONSUMED = Counter(
    "helpdesk_events_consumed_total", "Events handled, by outcome", ["service", "type", "outcome"]
)


def metrics_payload() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class RequestContextMiddleware:
    """Pure ASGI middleware: request id in and out, correlation id and trace context in, HTTP
    metrics by route template."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        # Labelled children by (method, route, status): `labels()` on every request costs more
        # than the increment itself.
        self._requests: dict[tuple[str, str, str], Any] = {}
        self._latency: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = correlation_id = traceparent = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = request_id or value.decode("latin-1")[:128]
            elif name == b"x-correlation-id":
                correlation_id = correlation_id or value.decode("latin-1")[:128]
            elif name == b"traceparent" and traceparent is None:
                traceparent = value.decode("latin-1")
        if not request_id:
            request_id = secrets.token_hex(16)  # as opaque as uuid4().hex, a quarter of its cost
        token = request_id_var.set(request_id)
        # The events this request causes carry its correlation id (the caller's, else the request's
        # id), and so do the events of every service that handles them: one id across the system.
        correlation_token = correlation_id_var.set(correlation_id or request_id)
        # They continue the caller's trace too (W3C trace context), or this request starts one.
        trace_token = traceparent_var.set(continue_trace(traceparent))
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if response_started:
                raise
            # Rendered here rather than by Starlette's outermost error handler so that
            # the 500 still carries the request id (header, body and log line).
            response = await unexpected_error_response(Request(scope), exc)
            await response(scope, receive, send_wrapper)
        finally:
            request_id_var.reset(token)
            correlation_id_var.reset(correlation_token)
            traceparent_var.reset(trace_token)
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            key = (method, template, str(status))
            if (requests := self._requests.get(key)) is None:
                requests = self._requests[key] = HTTP_REQUESTS.labels(self.service, *key)
            requests.inc()
            if (latency := self._latency.get(key[:2])) is None:
                latency = self._latency[key[:2]] = HTTP_LATENCY.labels(self.service, method, template)
            latency.observe(time.perf_counter() - started)
            if status >= 500:
                HTTP_ERRORS.labels(self.service, method, template).inc()
