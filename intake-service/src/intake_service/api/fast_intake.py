"""`POST /v1/tickets` without FastAPI's generic request path.

Every channel posts its tickets here, so this one route is served by a lean ASGI
middleware that runs inside the chassis' request context (request id, metrics, logs) but
ahead of FastAPI's routing and dependency solving, which cost more CPU than storing the
ticket. It does what the declared route does, no less: bearer token and channel role,
the Idempotency-Key, validation of the body by the same pydantic model, and the same
`accept_ticket` (group-commit writer, replay of a used key). The FastAPI route in
`api.tickets` stays declared — it documents the route in OpenAPI, and it serves every
request this lane does not fully accept: a missing or bad token, a wrong role, an
invalid key, content type or body, a `callback_url` answers may not be posted to. Those
are rare, and the generic path words their problem+json answers, so errors read exactly
as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from helpdesk_shared.chassis.auth import Principal, TokenVerifier, allowed_roles
from helpdesk_shared.chassis.problems import DomainError
from helpdesk_shared.contracts.enums import Role
from intake_service.api import tickets
from intake_service.schemas import TicketCreate, TicketOut

PATH = "/v1/tickets"
_CALLERS = allowed_roles(Role.CHANNEL)
_TICKET_JSON = TicketOut.__pydantic_serializer__.to_json
_JSON_CONTENT_TYPE = (b"content-type", b"application/json")
_REPLAYED = (b"idempotent-replayed", b"true")


def _declared_route() -> Any:
    """The FastAPI route this lane stands in for: its path labels the request's metrics."""
    for route in tickets.router.routes:
        if getattr(route, "endpoint", None) is tickets.create_ticket:
            return route
    raise LookupError("POST /v1/tickets is not declared in intake_service.api.tickets")


class FastTicketIntake:
    """ASGI middleware: serves `POST /v1/tickets` itself, passes everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.route = _declared_route()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away: the generic path says so
                break
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        accepted = self._accept(scope, messages, body)
        if accepted is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        ticket_body, principal, idempotency_key = accepted
        scope["route"] = self.route
        app: FastAPI = scope["app"]
        try:
            ticket, replayed = await tickets.accept_ticket(
                app, ticket_body, principal.subject, idempotency_key
            )
        except Exception as exc:  # answered by the app's exception handlers, as on the generic path
            handler = _exception_handler(app, exc)
            if handler is None:
                raise
            response = await handler(Request(scope), exc)
            await response(scope, receive, send)
            return
        content = _TICKET_JSON(ticket)
        headers = [(b"content-length", str(len(content)).encode()), _JSON_CONTENT_TYPE]
        if replayed:
            headers.append(_REPLAYED)
        headers.append((b"location", f"{PATH}/{ticket.id}".encode()))
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    @staticmethod
    def _accept(
        scope: Scope, messages: list[Message], body: bytes
    ) -> tuple[TicketCreate, Principal, str | None] | None:
        """The validated body, caller and key — or None: let the declared route answer."""
        if messages[-1]["type"] != "http.request" or not body:
            return None
        authorization = content_type = idempotency_key = None
        for name, value in scope["headers"]:  # the first of repeated headers counts, as in Starlette
            if name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"content-type":
                if content_type is None:
                    content_type = value
            elif name == b"idempotency-key" and idempotency_key is None:
                idempotency_key = value
        if authorization is None or content_type is None:
            return None
        if content_type.partition(b";")[0].strip().lower() != b"application/json":
            return None
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        key = None
        if idempotency_key is not None:
            key = idempotency_key.decode("latin-1")
            if not tickets.valid_idempotency_key(key):
                return None
        verifier: TokenVerifier = scope["app"].state.token_verifier
        try:
            principal = verifier.verify(token)
            payload = orjson.loads(body)
        except (DomainError, orjson.JSONDecodeError):
            return None
        if not principal.has_any(_CALLERS) or not isinstance(payload, dict):
            return None
        try:
            ticket_body = TicketCreate.model_validate(payload)
        except ValidationError:
            return None
        # Checked only when present (rare): a URL answers may not go to is the declared route's 422.
        if ticket_body.callback_url is not None and (
            scope["app"].state.settings.callback_url_refusal(ticket_body.callback_url) is not None
        ):
            return None
        return ticket_body, principal, key


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """The request's messages once more, then whatever the client sends next."""
    pending = iter(messages)

    async def replayed() -> Message:
        with contextlib.suppress(StopIteration):
            return next(pending)
        return await receive()

    return replayed


ExceptionHandler = Callable[[Request, Exception], Awaitable[Any]]


def _exception_handler(app: FastAPI, exc: Exception) -> ExceptionHandler | None:
    """The app's handler for `exc`, looked up as Starlette does (nearest class first)."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None  # unexpected: the request-context middleware answers 500
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            return handler  # type: ignore[return-value]
    return None
