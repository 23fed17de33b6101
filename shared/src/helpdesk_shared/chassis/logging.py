"""Structured JSON logs with request, correlation and trace ids.

The ids live in contextvars so that every log line emitted while handling a
request or an event carries them without being passed around.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog

from helpdesk_shared.chassis.trace_context import trace_id_of

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)
traceparent_var: ContextVar[str | None] = ContextVar("traceparent", default=None)
"""The W3C `traceparent` of the request or event being handled (see `trace_context`)."""


@contextmanager
def correlated(correlation_id: str | None) -> Iterator[None]:
    """Run the block under ``correlation_id`` (its log lines, the events it publishes), if given."""
    with _set_for_block(correlation_id_var, correlation_id):
        yield


@contextmanager
def traced(traceparent: str | None) -> Iterator[None]:
    """Run the block under ``traceparent`` (its log lines, the events it publishes), if given."""
    with _set_for_block(traceparent_var, traceparent):
        yield


@contextmanager
def _set_for_block(var: ContextVar[str | None], value: str | None) -> Iterator[None]:
    if value is None:
        yield
        return
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def _add_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if (rid := request_id_var.get()) is not None:
        event_dict.setdefault("request_id", rid)
    if (cid := correlation_id_var.get()) is not None:
        event_dict.setdefault("correlation_id", cid)
    if (traceparent := traceparent_var.get()) is not None:
        event_dict.setdefault("trace_id", trace_id_of(traceparent))
    return event_dict


def configure_logging(service: str, level: str = "INFO") -> None:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Route stdlib loggers (uvicorn, aiokafka, sqlalchemy) through one JSON format.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(),
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _add_ids,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # No access log: its lines carry neither request nor correlation id, and uvicorn builds each
    # one (client address, quoted path) whenever its logger has a handler anywhere up the tree,
    # even at a level that drops it. Detached, as `--no-access-log` leaves it, it costs nothing.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
