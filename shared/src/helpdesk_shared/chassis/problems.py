"""RFC 9457 problem details for every error a service returns.

Services raise domain exceptions (subclasses of `DomainError`); one set of
handlers installed by the app factory turns them, FastAPI's validation
errors, HTTP errors and anything unexpected into `application/problem+json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from helpdesk_shared.chassis.db import RETRYABLE_SQLSTATES, database_unavailable, sqlstate
from helpdesk_shared.chassis.logging import get_logger, request_id_var

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://helpdesk.dev/problems/"

log = get_logger(__name__)


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. body.customer.email")
    message: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details (documented in OpenAPI for every error response)."""

    type: str = Field(examples=[PROBLEM_BASE + "not-found"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class DomainError(Exception):
    """Base of every expected, client-visible error."""

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    status, slug, title = 404, "not-found", "Resource not found"


class Conflict(DomainError):
    status, slug, title = 409, "conflict", "Conflict with the current state"


class Unauthorized(DomainError):
    status, slug, title = 401, "unauthorized", "Authentication required"


class Forbidden(DomainError):
    status, slug, title = 403, "forbidden", "Not allowed"


class InvalidInput(DomainError):
    status, slug, title = 422, "invalid-input", "Invalid input"


def problem_response(
    status: int,
    slug: str,
    title: str,
    request: Request,
    detail: str | None = None,
    errors: list[FieldError] | None = None,
    extra: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=PROBLEM_BASE + slug,
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        request_id=request_id_var.get(),
        errors=errors,
    ).model_dump(exclude_none=True)
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(
            field=_field_path(err.get("loc", ())), message=err.get("msg", ""), type=err.get("type", "")
        )
        for err in exc.errors()
    ]
    names = ", ".join(e.field for e in errors[:5])
    return problem_response(
        422,
        "validation-error",
        "Request validation failed",
        request,
        detail=f"Invalid or missing fields: {names}",
        errors=errors,
    )


async def _domain_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return problem_response(
        exc.status, exc.slug, exc.title, request, detail=exc.detail, extra=exc.extra or None, headers=headers
    )


_HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
}


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug = _HTTP_SLUGS.get(exc.status_code, "http-error")
    title = slug.replace("-", " ").capitalize()
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(exc.status_code, slug, title, request, detail=detail, headers=exc.headers)


async def _integrity_handler(request: Request, exc: Exception) -> JSONResponse:
    # A unique/foreign-key race the use case could not see coming: the client's
    # request conflicts with what another request just stored.
    log.warning("integrity_conflict", path=request.url.path, error=str(getattr(exc, "orig", exc))[:300])
    return problem_response(
        409,
        "conflict",
        "Conflict with the current state",
        request,
        detail="The request conflicts with data stored concurrently; retry or adjust it",
    )


# PostgreSQL aborted the transaction because of a concurrent one: the same request, sent
# again, succeeds. Everything else the database raises is either a conflict (above) or a bug.
async def _database_handler(request: Request, exc: Exception) -> JSONResponse:
    state = sqlstate(exc)
    if state in RETRYABLE_SQLSTATES:
        log.warning("database_retryable", path=request.url.path, sqlstate=state)
        return problem_response(
            503,
            "concurrent-update",
            "Interrupted by a concurrent change",
            request,
            detail=f"The database stopped this request ({RETRYABLE_SQLSTATES[state]}); retry it",
            headers={"Retry-After": "1"},
        )
    if (state or "").startswith("22"):  # data exception: a value of the request cannot be stored
        log.warning("database_refused_value", path=request.url.path, sqlstate=state)
        return problem_response(
            422,
            "invalid-data",
            "A value could not be stored",
            request,
            detail=f"The database refused a value of this request (SQLSTATE {state}: e.g. a NUL character "
            "in text, a number out of range); nothing was stored",
        )
    if database_unavailable(exc):
        log.warning("database_unavailable", path=request.url.path, error=type(exc).__name__)
        return problem_response(
            503,
            "database-unavailable",
            "The database is unavailable",
            request,
            detail="Nothing was stored; retry shortly",
            headers={"Retry-After": "5"},
        )
    return await unexpected_error_response(request, exc)


async def unexpected_error_response(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled_error", path=request.url.path, error=type(exc).__name__, exc_info=exc)
    return problem_response(500, "internal-error", "Internal server error", request)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(DomainError, _domain_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(IntegrityError, _integrity_handler)
    app.add_exception_handler(DBAPIError, _database_handler)
    # Hot paths run plain SQL on the asyncpg connection: its errors are not wrapped by SQLAlchemy.
    app.add_exception_handler(asyncpg.IntegrityConstraintViolationError, _integrity_handler)
    app.add_exception_handler(asyncpg.PostgresError, _database_handler)
    app.add_exception_handler(ConnectionError, _database_handler)
    app.add_exception_handler(Exception, unexpected_error_response)


def problem_responses(*errors: type[DomainError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entry for the domain errors a route can raise."""
    responses: dict[int | str, dict[str, Any]] = {
        422: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "Validation error"},
    }
    for err in errors:
        responses[err.status] = {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": err.title}
    return responses
