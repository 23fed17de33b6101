"""CloudEvents 1.0 envelope carried on every Kafka message.

The envelope is generic over its payload so that producers build typed events
(`EventEnvelope[TicketCreated]`) and consumers parse raw bytes into the payload
model registered for the event type (see `registry.py`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Literal, NamedTuple, TypeVar

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

EVENT_TYPE_PREFIX = "helpdesk."
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
WIRE_REQUIRED = ("specversion", "id", "source", "type", "data")
"""Attributes every event carries on the wire: the CloudEvents-required ones and the payload.

The published schemas require them and `parse_event` refuses an event without one, although the
envelope model has defaults for some: those are for producers. A consumer that filled in a missing
`id` would give each redelivery a new one, and its inbox would apply the event again."""


class ContractModel(BaseModel):
    """Base of every model in the contracts: immutable, unknown fields ignored.

    Ignoring unknown fields (a tolerant reader) lets a producer add an optional
    field to a v1 event while consumers still run the previous release;
    incompatible changes get a new version suffix instead.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)


class EventPayload(ContractModel):
    """Base class of every event payload.

    Subclasses declare `event_type` (without prefix or version, e.g.
    `ticket.created`) and `version`; the full CloudEvents type is
    `helpdesk.<event_type>.v<version>`. `aggregate_field` names the field
    holding the aggregate id, used as Kafka key and CloudEvents `subject`.
    Payloads never carry customer PII.
    """

    event_type: ClassVar[str]
    version: ClassVar[int] = 1
    aggregate_field: ClassVar[str] = "ticket_id"

    @classmethod
    def cloudevent_type(cls) -> str:
        return f"{EVENT_TYPE_PREFIX}{cls.event_type}.v{cls.version}"

    def aggregate_id(self) -> str:
        """The aggregate id (ticket, article, agent, gap) as text: Kafka key and subject."""
        return str(getattr(self, self.aggregate_field))


P = TypeVar("P")


def new_event_id() -> uuid.UUID:
    return uuid.uuid4()


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventEnvelope(BaseModel, Generic[P]):
    """CloudEvents 1.0 structured-mode envelope plus correlation/trace ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = Field(default="1.0", description="CloudEvents specification version")
    id: uuid.UUID = Field(
        default_factory=new_event_id,
        description="Unique event id; consumers deduplicate on it (inbox)",
    )
    source: str = Field(min_length=1, max_length=200, description="Producing service, e.g. /helpdesk/intake")
    type: str = Field(
        min_length=1, max_length=200, description="Versioned event type, e.g. helpdesk.ticket.created.v1"
    )
    subject: str | None = Field(
        default=None,
        max_length=200,
        description="Aggregate id (ticket id, article id, agent id); also the Kafka message key",
    )
    time: AwareDatetime = Field(default_factory=utcnow, description="When the change happened (UTC)")
    datacontenttype: Literal["application/json"] = Field(
        default="application/json", description="Media type of `data`"
    )
    correlationid: str | None = Field(
        default=None, max_length=200, description="Correlation id of the request that caused the event"
    )
    traceparent: str | None = Field(
        default=None, max_length=200, description="W3C trace context `traceparent` of the producer"
    )
    data: P = Field(description="The event payload")

    @model_validator(mode="after")
    def _type_matches_payload(self) -> EventEnvelope[P]:
        if isinstance(self.data, EventPayload) and self.type != self.data.cloudevent_type():
            raise ValueError(
                f"envelope type {self.type!r} does not match payload type {self.data.cloudevent_type()!r}"
            )
        return self

    @classmethod
    def wrap(
        cls,
        payload: EventPayload,
        *,
        source: str,
        subject: str | None = None,
        correlationid: str | None = None,
        traceparent: str | None = None,
    ) -> EventEnvelope[Any]:
        """Envelope `payload`; `subject` defaults to the payload's aggregate id."""
        return envelope_model(type(payload))(
            source=source,
            type=payload.cloudevent_type(),
            subject=subject if subject is not None else payload.aggregate_id(),
            correlationid=correlationid,
            traceparent=traceparent,
            data=payload,
        )

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class RawEnvelope(EventEnvelope[dict[str, Any]]):
    """An envelope whose payload has not been interpreted yet."""

    model_config = ConfigDict(extra="allow", frozen=True)


_ENVELOPES: dict[type[EventPayload], type[EventEnvelope[Any]]] = {}


def envelope_model(model: type[EventPayload]) -> type[EventEnvelope[Any]]:
    """`EventEnvelope[model]`, parametrised once and cached."""
    envelope = _ENVELOPES.get(model)
    if envelope is None:
        envelope = _ENVELOPES[model] = EventEnvelope[model]  # type: ignore[valid-type]
    return envelope


class NewEvent(NamedTuple):
    """An event serialized by `envelope_json`: its id and type, and the envelope as JSON text."""

    id: uuid.UUID
    type: str
    json: str


def _length_limits(field: str) -> tuple[int, int]:
    """The envelope field's (min_length, max_length), as its model declares them."""
    metadata = EventEnvelope.model_fields[field].metadata
    least = next((m.min_length for m in metadata if getattr(m, "min_length", None) is not None), 0)
    most = next(m.max_length for m in metadata if getattr(m, "max_length", None) is not None)
    return least, most


_CHECKED_FIELDS = {
    name: _length_limits(name) for name in ("source", "subject", "correlationid", "traceparent")
}


def envelope_json(
    payload: EventPayload,
    *,
    source: str,
    subject: str | None = None,
    correlationid: str | None = None,
    traceparent: str | None = None,
) -> NewEvent:
    """`EventEnvelope.wrap(payload, …)` serialized — the same JSON text — without building the envelope.

    How every event is written to an outbox (`UnitOfWork.publish`, intake's ticket writer): building
    and validating an envelope model only to serialize it cost three times the payload's own
    serialization. The payload is a validated model, serialized by its own serializer as the
    envelope does; the envelope's own fields are a new id, now, the payload's type and the caller's
    values, held to the model's limits here (a `ValueError`, as from `wrap`)."""
    subject = subject if subject is not None else payload.aggregate_id()
    for name, value in (
        ("source", source),
        ("subject", subject),
        ("correlationid", correlationid),
        ("traceparent", traceparent),
    ):
        least, most = _CHECKED_FIELDS[name]
        if value is not None and not least <= len(value) <= most:
            raise ValueError(f"envelope {name} must be {least}-{most} characters, not {len(value)}")
    event_id, event_type = new_event_id(), payload.cloudevent_type()
    head = orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": source,
            "type": event_type,
            "subject": subject,
            "time": utcnow(),
            "datacontenttype": "application/json",
            "correlationid": correlationid,
            "traceparent": traceparent,
        },
        option=orjson.OPT_UTC_Z,
    )
    data = payload.__pydantic_serializer__.to_json(payload)
    return NewEvent(event_id, event_type, (head[:-1] + b',"data":' + data + b"}").decode())
