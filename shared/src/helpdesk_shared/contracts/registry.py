"""Registry of every event payload: CloudEvents type → model and producing service.

Consumers call `parse_event` on the raw Kafka value to get a typed envelope::

    envelope = parse_event(message.value)
    match envelope.data:
        case TicketCreated() as created: ...
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from . import intake, kb, review, routing
from .envelope import WIRE_REQUIRED, EventEnvelope, EventPayload, RawEnvelope, envelope_model

__all__ = [
    "EVENT_PRODUCERS",
    "EVENT_TYPES",
    "PRODUCER_EVENT_TYPES",
    "UnknownEventType",
    "envelope_model",
    "parse_event",
    "payload_model",
    "producer_of",
]

_PRODUCER_MODULES: tuple[ModuleType, ...] = (intake, routing, review, kb)


class UnknownEventType(KeyError):
    """The CloudEvents type is not registered (unknown name or unsupported version)."""

    def __init__(self, cloudevent_type: str) -> None:
        super().__init__(cloudevent_type)
        self.cloudevent_type = cloudevent_type

    def __str__(self) -> str:
        return f"unknown event type {self.cloudevent_type!r}"


def _build() -> tuple[dict[str, type[EventPayload]], dict[str, str]]:
    types: dict[str, type[EventPayload]] = {}
    producers: dict[str, str] = {}
    for module in _PRODUCER_MODULES:
        service: str = module.PRODUCER
        payloads: tuple[type[EventPayload], ...] = module.PAYLOADS
        for model in payloads:
            ce_type = model.cloudevent_type()
            if ce_type in types:
                raise RuntimeError(f"event type {ce_type} registered twice")
            types[ce_type] = model
            producers[ce_type] = service
    return types, producers


_TYPES, _PRODUCERS = _build()

EVENT_TYPES: dict[str, type[EventPayload]] = _TYPES
"""Every payload model keyed by its full CloudEvents type (`helpdesk.ticket.created.v1`)."""

EVENT_PRODUCERS: dict[str, str] = _PRODUCERS
"""CloudEvents type → name of the service that publishes it."""

PRODUCER_EVENT_TYPES: dict[str, tuple[str, ...]] = {
    module.PRODUCER: tuple(model.cloudevent_type() for model in module.PAYLOADS)
    for module in _PRODUCER_MODULES
}
"""Service name → the CloudEvents types it publishes."""


def payload_model(cloudevent_type: str) -> type[EventPayload]:
    """The payload model registered for `cloudevent_type`; `UnknownEventType` if none."""
    try:
        return _TYPES[cloudevent_type]
    except KeyError:
        raise UnknownEventType(cloudevent_type) from None


def producer_of(cloudevent_type: str) -> str:
    """Name of the service publishing `cloudevent_type` (intake, routing, review, kb)."""
    try:
        return _PRODUCERS[cloudevent_type]
    except KeyError:
        raise UnknownEventType(cloudevent_type) from None


_ENVELOPE_FIELDS = frozenset(EventEnvelope.model_fields) - {"data"}
_ENVELOPE_KEYS = _ENVELOPE_FIELDS | {"data"}
_WIRE_REQUIRED = frozenset(WIRE_REQUIRED)


def _missing(present: Set[str], raw: Any) -> ValidationError:
    """The error of an event lacking attributes the wire must carry: the envelope model's defaults
    (a new id, now) are a producer's, and would hide it."""
    return ValidationError.from_exception_data(
        "EventEnvelope",
        [{"type": "missing", "loc": (name,), "input": raw} for name in WIRE_REQUIRED if name not in present],
    )


def parse_event(raw: bytes | str | Mapping[str, Any]) -> EventEnvelope[Any]:
    """Validate a structured-mode CloudEvent and its data against the registered model.

    Raises `pydantic.ValidationError` for a malformed envelope or data (error
    locations of the data start with `data`) or one without an attribute of
    `WIRE_REQUIRED` (never filled in with a default: a new `id` on each
    delivery would defeat the consumers' inbox), `UnknownEventType` for a type
    that is not registered. CloudEvents extension attributes other than
    `correlationid` and `traceparent` are accepted and dropped.
    """
    if isinstance(raw, Mapping):
        if not raw.keys() >= _WIRE_REQUIRED:
            raise _missing(raw.keys(), raw)
        event_type = raw.get("type")
        model = _TYPES.get(event_type) if isinstance(event_type, str) else None
        if model is not None and raw.keys() <= _ENVELOPE_KEYS:
            # The common case — a registered type, no extension attributes — in one validation
            # instead of two (what every consumer does for every record it handles).
            return envelope_model(model).model_validate(raw)
    if isinstance(raw, bytes | str):
        envelope = RawEnvelope.model_validate_json(raw)
        if not envelope.model_fields_set >= _WIRE_REQUIRED:
            raise _missing(envelope.model_fields_set, raw)
    else:
        envelope = RawEnvelope.model_validate(dict(raw))
    model = payload_model(envelope.type)
    fields: dict[str, Any] = {name: getattr(envelope, name) for name in _ENVELOPE_FIELDS}
    fields["data"] = envelope.data
    return envelope_model(model).model_validate(fields)
