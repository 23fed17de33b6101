"""Tests of the event contracts: registry, envelope round trips, PII guard, topics, generated files."""

from __future__ import annotations

import json
import re
import shutil
import types
import typing
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar
from uuid import UUID, uuid4

import pytest
from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from helpdesk_shared import contracts
from helpdesk_shared.contracts import (
    ALL_TOPICS,
    DLQ_TOPIC,
    EVENT_TYPES,
    SERVICE_TOPIC,
    AgentStatusChanged,
    CustomerErased,
    EventEnvelope,
    EventPayload,
    KbArticlePublished,
    TicketAssigned,
    TicketCreated,
    TicketQueued,
    UnknownEventType,
    envelope_json,
    generate,
    parse_event,
    payload_model,
    producer_of,
    registry,
    source_for,
    topic_for_event_type,
)
from helpdesk_shared.contracts import envelope as envelope_module

# Every event type named in ARCHITECTURE.md §2, by the service that publishes it, and those added
# since (customer.erased: erasure reaches the services that keep customers' text).
ARCHITECTURE_EVENTS: dict[str, list[str]] = {
    "intake": [
        "ticket.created",
        "ticket.message_received",
        "ticket.reopened",
        "ticket.answer_delivered",
        "ticket.resolved",
        "ticket.closed",
        "ticket.rated",
        "complaint.updated",
        "customer.erased",
    ],
    "routing": [
        "ticket.classified",
        "ticket.assigned",
        "ticket.queued",
        "ticket.transferred",
        "ticket.collaborators_changed",
        "ticket.escalated",
        "sla.warning",
        "sla.breached",
        "agent.status_changed",
    ],
    "review": ["answer.submitted", "answer.approved", "answer.rejected", "answer.published"],
    "kb": ["kb.article.published", "kb.article.archived", "kb.gap.reported"],
}
EXPECTED_PRODUCER = {
    f"helpdesk.{name}.v1": service for service, names in ARCHITECTURE_EVENTS.items() for name in names
}
ALL_TYPES = sorted(EXPECTED_PRODUCER)
TYPE_PATTERN = re.compile(r"^helpdesk\.[a-z_.]+\.v[0-9]+$")
PII_FIELD = re.compile(r"e_?mail|phone|mobile|address|customer_name|full_name|first_name|last_name")


# --- generic sample payloads -------------------------------------------------------------------


def _sample_value(annotation: Any, metadata: list[Any]) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extra = typing.get_args(annotation)
        return _sample_value(base, [*metadata, *extra])
    if origin in (typing.Union, types.UnionType):
        return _sample_value(next(a for a in typing.get_args(annotation) if a is not type(None)), metadata)
    if origin is list:
        return [_sample_value(typing.get_args(annotation)[0], [])]
    if annotation in (AwareDatetime, datetime):
        return datetime(2026, 9, 30, 8, 0, tzinfo=UTC)
    if annotation is UUID:
        return uuid4()
    if annotation is bool:
        return True
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return list(annotation)[-1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return build_sample(annotation, full=True)
    lower = [m.ge for m in metadata if getattr(m, "ge", None) is not None]
    upper = [m.le for m in metadata if getattr(m, "le", None) is not None]
    if annotation is int:
        return max([1, *lower]) if not upper else min(max([1, *lower]), *upper)
    if annotation is float:
        return min(max([0.5, *lower]), *upper) if upper else max([0.5, *lower])
    if annotation is str:
        min_len = max([getattr(m, "min_length", None) or 0 for m in metadata] + [1])
        max_len = min([getattr(m, "max_length", None) or 1_000 for m in metadata])
        text = "緊急：保單理賠進度查詢 urgent"
        return (text * (min_len // len(text) + 1))[: max(min_len, min(max_len, len(text)))]
    raise AssertionError(f"no sample for {annotation!r}")


def build_sample(model: type[BaseModel], *, full: bool) -> Any:
    """An instance of `model`: required fields only, or every field when `full`."""
    values = {
        name: _sample_value(field.annotation, list(field.metadata))
        for name, field in model.model_fields.items()
        if full or field.is_required()
    }
    return model(**values)


def _models_in(model: type[BaseModel]) -> list[type[BaseModel]]:
    """`model` and every model nested in its fields."""
    found = [model]
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            annotation = stack.pop()
            stack.extend(typing.get_args(annotation))
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found.extend(_models_in(annotation))
    return found


def _pii_fields(model: type[BaseModel]) -> list[str]:
    return [
        f"{nested.__name__}.{name}"
        for nested in _models_in(model)
        for name in nested.model_fields
        if PII_FIELD.search(name)
    ]


# --- registry ----------------------------------------------------------------------------------


def test_every_architecture_event_type_is_registered_with_its_producer() -> None:
    assert sorted(EVENT_TYPES) == ALL_TYPES
    assert len(ALL_TYPES) == 25
    for ce_type, service in EXPECTED_PRODUCER.items():
        assert producer_of(ce_type) == service, ce_type
        assert payload_model(ce_type).cloudevent_type() == ce_type


@pytest.mark.parametrize("ce_type", ALL_TYPES)
def test_type_strings_are_versioned_helpdesk_types(ce_type: str) -> None:
    assert TYPE_PATTERN.match(ce_type)
    assert TYPE_PATTERN.match(payload_model(ce_type).cloudevent_type())


def test_unknown_types_raise_unknown_event_type() -> None:
    for lookup in (payload_model, producer_of, topic_for_event_type):
        with pytest.raises(UnknownEventType) as excinfo:
            lookup("helpdesk.ticket.created.v9")
        assert isinstance(excinfo.value, KeyError)
        assert excinfo.value.cloudevent_type == "helpdesk.ticket.created.v9"


def test_public_names_are_exported() -> None:
    for name in contracts.__all__:
        assert hasattr(contracts, name), name
    for model in EVENT_TYPES.values():
        assert model.__name__ in contracts.__all__


# --- models ------------------------------------------------------------------------------------


def test_fixed_payloads_keep_the_agreed_fields() -> None:
    assert TicketCreated.cloudevent_type() == "helpdesk.ticket.created.v1"
    assert {
        "ticket_id", "number", "channel", "kind", "subject", "description", "priority", "urgent_detected",
        "customer_id", "category_hint", "tags", "language", "created_at",
    } <= set(TicketCreated.model_fields)  # fmt: skip
    assert set(TicketAssigned.model_fields) >= {
        "ticket_id", "agent_id", "team_id", "assigned_at", "reason", "difficult", "previous_agent_id",
    }  # fmt: skip
    assert TicketAssigned.cloudevent_type() == "helpdesk.ticket.assigned.v1"
    assert set(TicketQueued.model_fields) >= {"ticket_id", "team_id", "priority", "reason", "queued_at"}
    assert TicketQueued.cloudevent_type() == "helpdesk.ticket.queued.v1"
    created = build_sample(TicketCreated, full=False)
    assert created.urgent_detected is False and created.tags == [] and created.category_hint is None


@pytest.mark.parametrize("ce_type", ALL_TYPES)
def test_models_are_documented(ce_type: str) -> None:
    for model in _models_in(payload_model(ce_type)):
        assert model.__doc__ and model.__doc__.strip(), model.__name__
        undocumented = [name for name, field in model.model_fields.items() if not field.description]
        assert not undocumented, f"{model.__name__}: fields without description: {undocumented}"


@pytest.mark.parametrize("ce_type", ALL_TYPES)
def test_payloads_carry_no_customer_pii(ce_type: str) -> None:
    assert _pii_fields(payload_model(ce_type)) == []


def test_pii_guard_catches_pii_fields() -> None:
    class Contact(BaseModel):
        """Nested."""

        mobile_phone: str = Field(description="x")

    class Leaky(EventPayload):
        """A payload that must not pass the guard."""

        event_type: ClassVar[str] = "test.leaky"
        customer_email: str = Field(description="x")
        contact: Contact | None = Field(default=None, description="x")

    assert _pii_fields(Leaky) == ["Leaky.customer_email", "Contact.mobile_phone"]


def test_timestamps_must_be_timezone_aware() -> None:
    values = build_sample(TicketQueued, full=True).model_dump()
    values["queued_at"] = datetime(2026, 1, 1, 9, 0)
    with pytest.raises(ValidationError, match="queued_at"):
        TicketQueued(**values)


def test_aggregate_id_is_the_key_and_subject() -> None:
    agent = build_sample(AgentStatusChanged, full=False)
    article = build_sample(KbArticlePublished, full=False)
    ticket = build_sample(TicketAssigned, full=False)
    assert agent.aggregate_id() == str(agent.agent_id)
    assert article.aggregate_id() == str(article.article_id)
    assert EventEnvelope.wrap(ticket, source="/helpdesk/routing").subject == str(ticket.ticket_id)
    assert EventEnvelope.wrap(ticket, source="/helpdesk/routing", subject="x").subject == "x"


def test_customer_erased_is_keyed_by_the_customer_and_names_one_batch_of_tickets() -> None:
    assert CustomerErased.cloudevent_type() == "helpdesk.customer.erased.v1"
    assert set(CustomerErased.model_fields) == {"customer_id", "ticket_ids", "erased_at"}
    customer_id = uuid4()
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    erased = CustomerErased(customer_id=customer_id, ticket_ids=[uuid4() for _ in range(500)], erased_at=now)
    assert erased.aggregate_id() == str(customer_id)
    assert EventEnvelope.wrap(erased, source="/helpdesk/intake").subject == str(customer_id)
    assert topic_for_event_type(CustomerErased.cloudevent_type()) == "helpdesk.intake"
    for wrong in ([], [uuid4() for _ in range(501)]):
        with pytest.raises(ValidationError, match="ticket_ids"):
            CustomerErased(customer_id=customer_id, ticket_ids=wrong, erased_at=now)


# --- envelope round trips and parse errors -----------------------------------------------------


@pytest.mark.parametrize("full", [False, True], ids=["required-only", "all-fields"])
@pytest.mark.parametrize("ce_type", ALL_TYPES)
def test_envelope_round_trip_through_parse_event(ce_type: str, full: bool) -> None:
    model = payload_model(ce_type)
    payload = build_sample(model, full=full)
    envelope = EventEnvelope.wrap(
        payload, source=source_for(producer_of(ce_type)), correlationid="req-1", traceparent="00-ab-cd-01"
    )
    assert envelope.type == ce_type
    raw = envelope.to_json_bytes()
    for form in (raw, raw.decode(), json.loads(raw)):
        parsed = parse_event(form)
        assert type(parsed.data) is model
        assert type(parsed) is type(envelope)
        assert parsed.data == payload
        assert parsed.model_dump() == envelope.model_dump()
    assert parse_event(raw).to_json_bytes() == raw


@pytest.mark.parametrize("microsecond", [0, 123_456], ids=["whole-second", "fraction"])
@pytest.mark.parametrize("full", [False, True], ids=["required-only", "all-fields"])
@pytest.mark.parametrize("ce_type", ALL_TYPES)
def test_envelope_json_is_the_text_the_envelope_model_serializes(
    ce_type: str, full: bool, microsecond: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime(2026, 12, 6, 9, 30, 15, microsecond, tzinfo=UTC)
    monkeypatch.setattr(envelope_module, "utcnow", lambda: now)
    payload = build_sample(payload_model(ce_type), full=full)
    event = envelope_json(payload, source=source_for(producer_of(ce_type)), correlationid="req-1")

    parsed = parse_event(event.json)
    assert (parsed.id, parsed.type, parsed.time) == (event.id, ce_type, now)
    assert (parsed.subject, parsed.correlationid, parsed.data) == (payload.aggregate_id(), "req-1", payload)
    assert parsed.to_json_bytes().decode() == event.json  # byte for byte


def test_envelope_json_holds_the_envelopes_fields_to_the_models_limits() -> None:
    payload = build_sample(TicketCreated, full=False)
    for wrong in (
        {"source": ""},
        {"source": "s" * 201},
        {"source": "/x", "subject": "s" * 201},
        {"source": "/x", "correlationid": "c" * 201},
    ):
        with pytest.raises(ValueError):
            EventEnvelope.wrap(payload, **wrong)
        with pytest.raises(ValueError):
            envelope_json(payload, **wrong)
    longest = envelope_json(payload, source="s" * 200, subject="t" * 200, correlationid="c" * 200)
    assert parse_event(longest.json).subject == "t" * 200


def _raw_event(**changes: Any) -> dict[str, Any]:
    payload = build_sample(TicketAssigned, full=True)
    raw: dict[str, Any] = json.loads(EventEnvelope.wrap(payload, source="/helpdesk/routing").to_json_bytes())
    raw.update(changes)
    return raw


def test_parse_event_rejects_an_unknown_type() -> None:
    with pytest.raises(UnknownEventType):
        parse_event(_raw_event(type="helpdesk.ticket.teleported.v1"))


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        (lambda d: d.pop("agent_id"), ("data", "agent_id")),
        (lambda d: d.update(agent_id="not-a-uuid"), ("data", "agent_id")),
        (lambda d: d.update(assigned_at="2026-01-01T09:00:00"), ("data", "assigned_at")),
        (lambda d: d.update(reason="x" * 5_000), ("data", "reason")),
    ],
    ids=["missing-field", "bad-uuid", "naive-datetime", "too-long"],
)
def test_parse_event_rejects_invalid_data(change: Any, loc: tuple[str, ...]) -> None:
    raw = _raw_event()
    change(raw["data"])
    with pytest.raises(ValidationError) as excinfo:
        parse_event(raw)
    assert [tuple(e["loc"]) for e in excinfo.value.errors()] == [loc]


def test_parse_event_ignores_fields_added_by_a_newer_producer() -> None:
    raw = _raw_event()
    raw["data"]["added_in_a_later_release"] = "x"
    event = parse_event(raw)
    assert not hasattr(event.data, "added_in_a_later_release")
    assert event.data.model_dump(mode="json") == {
        k: v for k, v in raw["data"].items() if k != "added_in_a_later_release"
    }


@pytest.mark.parametrize("form", ["bytes", "dict"])
def test_parse_event_drops_cloudevents_extension_attributes_it_does_not_know(form: str) -> None:
    raw = _raw_event(correlationid="req-7", partitionkey="abc", sampledrate=5)
    event = parse_event(json.dumps(raw).encode() if form == "bytes" else raw)
    assert event.correlationid == "req-7"
    assert event.model_dump(mode="json") == {
        k: v for k, v in raw.items() if k not in ("partitionkey", "sampledrate")
    } | {"traceparent": None}
    with pytest.raises(UnknownEventType):
        parse_event({**raw, "type": "helpdesk.ticket.teleported.v1"})


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", json.dumps(_raw_event(specversion="0.3")), json.dumps(_raw_event(id="x"))],
    ids=["malformed-json", "not-an-object", "bad-specversion", "bad-id"],
)
def test_parse_event_rejects_a_malformed_envelope(raw: bytes | str) -> None:
    with pytest.raises(ValidationError):
        parse_event(raw)


def test_envelope_type_must_match_payload() -> None:
    payload = build_sample(TicketAssigned, full=False)
    with pytest.raises(ValidationError, match="does not match"):
        EventEnvelope[TicketAssigned](
            source="/helpdesk/routing", type="helpdesk.ticket.queued.v1", data=payload
        )


# --- topics ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ce_type", ALL_TYPES)
def test_topic_for_event_type_is_the_producers_topic(ce_type: str) -> None:
    assert topic_for_event_type(ce_type) == f"helpdesk.{EXPECTED_PRODUCER[ce_type]}"


def test_topics_and_partitions() -> None:
    producers = ("intake", "routing", "review", "kb")
    assert {s: f"helpdesk.{s}" for s in producers} == SERVICE_TOPIC
    assert {s: f"helpdesk.{s}.dlq" for s in (*producers, "metrics")} == DLQ_TOPIC
    assert ALL_TOPICS == {
        "helpdesk.intake": 4, "helpdesk.routing": 4, "helpdesk.review": 4, "helpdesk.kb": 4,
        "helpdesk.intake.dlq": 1, "helpdesk.routing.dlq": 1, "helpdesk.review.dlq": 1,
        "helpdesk.kb.dlq": 1, "helpdesk.metrics.dlq": 1,
    }  # fmt: skip


# --- generated files ---------------------------------------------------------------------------


def test_committed_contract_files_match_the_models() -> None:
    """Fails when a model changed without `make contracts` (python -m helpdesk_shared.contracts.generate)."""
    out_dir = generate.default_output_dir()
    generated = generate.render_contracts()
    assert sorted(generated) == sorted(
        [generate.ASYNCAPI_FILE] + [f"{generate.SCHEMA_DIR}/{t}.json" for t in ALL_TYPES]
    )
    on_disk = {
        p.relative_to(out_dir).as_posix(): p.read_text(encoding="utf-8")
        for p in [out_dir / generate.ASYNCAPI_FILE, *(out_dir / generate.SCHEMA_DIR).glob("*.json")]
        if p.is_file()
    }
    stale = sorted(path for path, text in generated.items() if on_disk.get(path) != text)
    extra = sorted(on_disk.keys() - generated.keys())
    assert (stale, extra) == ([], []), (
        "contracts out of date; run python -m helpdesk_shared.contracts.generate"
    )


def test_drift_is_detected_when_a_model_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    class ChangedTicketCreated(TicketCreated):
        """A ticket (question, service request or complaint) was accepted from a channel."""

        new_field: int = Field(default=0, description="A field the committed schema does not have")

    monkeypatch.setitem(registry.EVENT_TYPES, "helpdesk.ticket.created.v1", ChangedTicketCreated)
    assert generate.check(generate.default_output_dir()) == [
        "differs: asyncapi.json",
        "differs: schemas/helpdesk.ticket.created.v1.json",
    ]


def test_generator_writes_checks_and_removes_stale_files(tmp_path: Path) -> None:
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "schemas" / "helpdesk.old.event.v1.json").write_text("{}\n")
    (tmp_path / "asyncapi.json").write_text("{}\n")
    shutil.copy(tmp_path / "schemas" / "helpdesk.ticket.rated.v1.json", tmp_path / "rated.bak")
    (tmp_path / "schemas" / "helpdesk.ticket.rated.v1.json").unlink()
    assert generate.check(tmp_path) == [
        "differs: asyncapi.json",
        "missing: schemas/helpdesk.ticket.rated.v1.json",
        "extra: schemas/helpdesk.old.event.v1.json",
    ]
    generate.write(tmp_path)
    assert generate.check(tmp_path) == []
    assert not (tmp_path / "schemas" / "helpdesk.old.event.v1.json").exists()


def test_generated_documents_are_well_formed() -> None:
    files = generate.render_contracts()
    for text in files.values():
        canonical = json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        assert text == canonical
    schema = json.loads(files["schemas/helpdesk.ticket.created.v1.json"])
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["type"]["const"] == "helpdesk.ticket.created.v1"
    assert schema["properties"]["data"]["$ref"] == "#/$defs/TicketCreated"
    doc = json.loads(files["asyncapi.json"])
    assert doc["asyncapi"] == "3.0.0"
    assert (doc["servers"]["local"]["host"], doc["servers"]["local"]["protocol"]) == (
        "localhost:9092",
        "kafka",
    )
    assert {c["address"] for c in doc["channels"].values()} == set(ALL_TOPICS)
    assert sorted(doc["operations"]) == ["intake.send", "kb.send", "review.send", "routing.send"]
    for message in doc["components"]["messages"].values():
        assert message["contentType"] == "application/cloudevents+json"
        assert message["payload"]["$ref"] == f"#/components/schemas/{message['name']}"
        assert message["bindings"]["kafka"]["key"]["description"]
    refs = re.findall(r'"\$ref": "#/([^"]+)"', files["asyncapi.json"])
    for ref in refs:  # every internal reference resolves
        node: Any = doc
        for part in ref.split("/"):
            node = node[part]
