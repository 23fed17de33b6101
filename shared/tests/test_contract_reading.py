"""Reading events as consumers do: what the wire must carry, who may review an answer, and the
published schemas against what `parse_event` accepts."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from helpdesk_shared.contracts import (
    EVENT_TYPES,
    AnswerApproved,
    AnswerPublished,
    AnswerRejected,
    AnswerSubmitted,
    EventEnvelope,
    EventPayload,
    ReviewChecklist,
    TicketAssigned,
    envelope_json,
    generate,
    parse_event,
)

NOW = datetime(2026, 9, 30, 8, 0, tzinfo=UTC)
PASSED = ReviewChecklist(accurate=True, complete=True, compliant=True, meets_need=True)
CHECKLIST_ITEMS = sorted(ReviewChecklist.model_fields)


def assigned() -> TicketAssigned:
    return TicketAssigned(
        ticket_id=uuid.uuid4(),
        agent_id=uuid.uuid4(),
        team_id=uuid.uuid4(),
        assigned_at=NOW,
        reason="skill match",
    )


def raw_event(payload: EventPayload, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(EventEnvelope.wrap(payload, source="/helpdesk/test").to_json_bytes())
    raw.update(changes)
    return raw


def forms(raw: dict[str, Any]) -> list[Any]:
    """The forms consumers hand to `parse_event`: a decoded dict (the chassis), bytes, text."""
    text = json.dumps(raw)
    return [raw, text.encode(), text]


# --- the attributes a consumer must find on the wire ---------------------------------------------


def _schema_required() -> set[str]:
    schema = generate.envelope_json_schema(TicketAssigned)
    return set(schema["required"])


@pytest.mark.parametrize("name", sorted(_schema_required()))
@pytest.mark.parametrize("extension", [False, True], ids=["plain", "with-extension"])
def test_an_event_without_a_required_attribute_does_not_parse(name: str, extension: bool) -> None:
    raw = raw_event(assigned())
    if extension:  # the path that reads extension attributes first
        raw["partitionkey"] = "p1"
    del raw[name]
    for form in forms(raw):
        with pytest.raises(ValidationError) as excinfo:
            parse_event(form)
        assert (name,) in [tuple(e["loc"]) for e in excinfo.value.errors()], form


def test_an_event_without_an_id_is_never_given_one() -> None:
    raw = raw_event(assigned())
    del raw["id"]
    with pytest.raises(ValidationError, match="id"):
        parse_event(raw)


def test_reading_requires_what_the_published_schema_requires() -> None:
    assert {"specversion", "id", "source", "type", "data"} <= _schema_required()
    for model in EVENT_TYPES.values():
        assert set(generate.envelope_json_schema(model)["required"]) == _schema_required()


def test_an_event_without_the_optional_attributes_still_parses() -> None:
    raw = raw_event(assigned())
    for name in ("subject", "time", "datacontenttype", "correlationid", "traceparent"):
        del raw[name]
    assert parse_event(raw).data == TicketAssigned.model_validate(raw["data"])


def test_producers_still_fill_in_the_id_time_and_specversion() -> None:
    payload = assigned()
    wrapped = EventEnvelope.wrap(payload, source="/helpdesk/routing")
    written = envelope_json(payload, source="/helpdesk/routing")
    assert wrapped.id != written.id
    for event in (wrapped.to_json_bytes(), written.json):
        parsed = parse_event(event)
        assert parsed.specversion == "1.0" and parsed.time.tzinfo is not None


# --- review: never the author, approvals pass the checklist ----------------------------------------


def submitted(author: uuid.UUID, reviewer: uuid.UUID | None) -> AnswerSubmitted:
    return AnswerSubmitted(
        ticket_id=uuid.uuid4(),
        answer_id=uuid.uuid4(),
        answer_version=1,
        author_id=author,
        reviewer_id=reviewer,
        submitted_at=NOW,
    )


def approved(author: uuid.UUID, reviewer: uuid.UUID, checklist: ReviewChecklist = PASSED) -> AnswerApproved:
    return AnswerApproved(
        ticket_id=uuid.uuid4(),
        answer_id=uuid.uuid4(),
        answer_version=1,
        author_id=author,
        reviewer_id=reviewer,
        checklist=checklist,
        body="您好，退保需要保單正本與身分證影本。",
        approved_at=NOW,
    )


def rejected(author: uuid.UUID, reviewer: uuid.UUID) -> AnswerRejected:
    return AnswerRejected(
        ticket_id=uuid.uuid4(),
        answer_id=uuid.uuid4(),
        answer_version=1,
        author_id=author,
        reviewer_id=reviewer,
        checklist=PASSED.model_copy(update={"complete": False}),
        comment="請補充所需文件",
        rejected_at=NOW,
    )


def published(author: uuid.UUID, reviewer: uuid.UUID) -> AnswerPublished:
    return AnswerPublished(
        ticket_id=uuid.uuid4(),
        answer_id=uuid.uuid4(),
        answer_version=1,
        author_id=author,
        reviewer_id=reviewer,
        body="您好，退保需要保單正本與身分證影本。",
        published_at=NOW,
    )


REVIEWED = [submitted, approved, rejected, published]


@pytest.mark.parametrize("build", REVIEWED, ids=lambda b: b.__name__)
def test_an_answer_reviewed_by_its_author_is_refused_by_producer_and_consumer(build: Any) -> None:
    author, reviewer = uuid.uuid4(), uuid.uuid4()
    fine = build(author, reviewer)
    assert parse_event(EventEnvelope.wrap(fine, source="/helpdesk/review").to_json_bytes()).data == fine

    with pytest.raises(ValidationError, match="author"):
        build(author, author)  # what the producer would publish: it cannot be built
    raw = raw_event(fine)
    raw["data"]["reviewer_id"] = str(author)
    for form in forms(raw):  # what a consumer would read: it does not parse (dead-lettered)
        with pytest.raises(ValidationError, match="author") as excinfo:
            parse_event(form)
        assert excinfo.value.errors()[0]["loc"][0] == "data"


def test_a_submitted_answer_may_wait_for_its_reviewer() -> None:
    assert submitted(uuid.uuid4(), None).reviewer_id is None


@pytest.mark.parametrize("failed", CHECKLIST_ITEMS)
def test_an_approval_with_a_failed_checklist_item_is_refused(failed: str) -> None:
    checklist = PASSED.model_copy(update={failed: False})
    assert not checklist.passed()
    with pytest.raises(ValidationError, match=failed):
        approved(uuid.uuid4(), uuid.uuid4(), checklist)
    raw = raw_event(approved(uuid.uuid4(), uuid.uuid4()))
    raw["data"]["checklist"][failed] = False
    for form in forms(raw):
        with pytest.raises(ValidationError, match=failed):
            parse_event(form)


# --- the published schemas: CloudEvents extension attributes -------------------------------------

_JSON_TYPES = {bool: "boolean", int: "integer", str: "string", type(None): "null", dict: "object"}


def _refusals(schema: dict[str, Any], event: dict[str, Any]) -> list[str]:
    """The top-level attributes of `event` that `schema` refuses, by the part of JSON Schema that
    decides it (properties, patternProperties — which apply to declared attributes too — and
    additionalProperties; of each subschema only its `type`)."""
    refused = []
    for name, value in event.items():
        applying = [s for p, s in schema.get("patternProperties", {}).items() if re.search(p, name)]
        if name in schema["properties"]:
            applying.append(schema["properties"][name])
        elif not applying and schema.get("additionalProperties", True) is False:
            refused.append(name)
            continue
        for subschema in applying:
            allowed = subschema.get("type", _JSON_TYPES[type(value)])
            if _JSON_TYPES[type(value)] not in ([allowed] if isinstance(allowed, str) else allowed):
                refused.append(name)
    return refused


def _published_schemas() -> list[Any]:
    asyncapi = generate.asyncapi_document()["components"]["schemas"]
    files = generate.render_contracts()
    return [
        *(pytest.param(json.loads(files[f"schemas/{t}.json"]), id=f"schemas/{t}") for t in EVENT_TYPES),
        *(pytest.param(asyncapi[t], id=f"asyncapi/{t}") for t in EVENT_TYPES),
    ]


@pytest.mark.parametrize("schema", _published_schemas())
def test_the_published_schemas_admit_the_extension_attributes_consumers_accept(
    schema: dict[str, Any],
) -> None:
    where = schema["title"]
    extensions = {"partitionkey": "abc", "sampledrate": 5, "comexampleflag": True, "nothing": None}
    raw = raw_event(assigned(), **extensions, dataschema="urn:helpdesk:contracts:schemas:x")
    assert _refusals(schema, raw) == [], where
    for name in ("Partition_Key", "x" * 21, "with-dash"):  # not CloudEvents attribute names
        assert _refusals(schema, {**raw, name: "v"}) == [name], where
    dataschema = schema["properties"]["dataschema"]
    assert (dataschema["type"], dataschema["format"], dataschema["minLength"]) == ("string", "uri", 1)
    assert "dataschema" not in schema["required"]
    assert parse_event(raw).model_dump(mode="json").keys() == EventEnvelope.model_fields.keys()


def test_producers_still_emit_only_the_envelopes_own_attributes() -> None:
    payload = assigned()
    for extra in ({"partitionkey": "abc"}, {"dataschema": "urn:x"}):
        with pytest.raises(ValidationError, match="extra"):
            EventEnvelope[TicketAssigned](
                source="/helpdesk/routing", type=payload.cloudevent_type(), data=payload, **extra
            )
    schema = generate.envelope_json_schema(TicketAssigned)
    for event in (
        EventEnvelope.wrap(payload, source="/helpdesk/routing").to_json_bytes(),
        envelope_json(payload, source="/helpdesk/routing").json,
    ):
        assert json.loads(event).keys() <= EventEnvelope.model_fields.keys() <= schema["properties"].keys()
