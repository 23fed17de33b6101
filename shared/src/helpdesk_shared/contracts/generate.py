"""Generate the committed contract files from the payload models.

    python -m helpdesk_shared.contracts.generate [--check] [--out DIR]

writes into `shared/contracts/` (or DIR):

- `schemas/<cloudevents type>.json`: JSON Schema (draft 2020-12) of the whole
  CloudEvents envelope carrying that payload;
- `asyncapi.json`: an AsyncAPI 3.0.0 document of every topic, message and
  publishing operation.

Output is deterministic (sorted keys, 2-space indent, trailing newline) so a
test can compare it with the committed files. `--check` writes nothing and
exits 1 listing the files that differ, are missing or are extra.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .envelope import CLOUDEVENTS_CONTENT_TYPE, WIRE_REQUIRED, EventPayload
from .registry import EVENT_PRODUCERS, EVENT_TYPES, envelope_model
from .topics import ALL_TOPICS, DLQ_TOPIC, SERVICE_TOPIC, source_for, topic_for_event_type

__all__ = [
    "ASYNCAPI_FILE",
    "SCHEMA_DIR",
    "asyncapi_document",
    "check",
    "default_output_dir",
    "envelope_json_schema",
    "main",
    "render_contracts",
    "write",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_PREFIX = "urn:helpdesk:contracts:schemas:"
SCHEMA_DIR = "schemas"
ASYNCAPI_FILE = "asyncapi.json"
ASYNCAPI_VERSION = "3.0.0"
CONTRACTS_VERSION = "1.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
LOCAL_BROKER = "localhost:9092"
EXTENSION_ATTRIBUTE_NAME = "^[a-z0-9]{1,20}$"
"""A CloudEvents attribute name: lower-case ASCII letters and digits, at most 20 characters."""


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _doc(model: type[EventPayload]) -> tuple[str, str]:
    """(summary, description) from a model's docstring."""
    text = inspect.cleandoc(model.__doc__ or model.__name__)
    summary, _, rest = text.partition("\n\n")
    return " ".join(summary.split()), " ".join(rest.split())


def _key_description(model: type[EventPayload]) -> str:
    return (
        f"Kafka message key: the `{model.aggregate_field}` of the payload (aggregate id, as text), "
        "equal to the CloudEvents `subject`; keeps one aggregate's events ordered in one partition."
    )


def envelope_json_schema(
    model: type[EventPayload], *, ref_template: str = "#/$defs/{model}"
) -> dict[str, Any]:
    """JSON Schema of `EventEnvelope[model]` with `type` pinned to the model's CloudEvents type."""
    ce_type = model.cloudevent_type()
    producer = EVENT_PRODUCERS[ce_type]
    schema = envelope_model(model).model_json_schema(ref_template=ref_template)
    summary, _ = _doc(model)
    schema["title"] = ce_type
    schema["description"] = (
        f"CloudEvents 1.0 envelope of `{ce_type}`: {summary} "
        f"Published by {producer} to `{topic_for_event_type(ce_type)}`."
    )
    properties = schema["properties"]
    properties["type"] = {**properties["type"], "const": ce_type}
    properties["source"] = {**properties["source"], "examples": [source_for(producer)]}
    required = [name for name in schema.get("required", []) if name not in WIRE_REQUIRED]
    schema["required"] = [*WIRE_REQUIRED, *required]
    # The schema is what may arrive, which is more than our producers write (the model forbids
    # anything else): consumers accept CloudEvents attributes they do not know and drop them
    # (`parse_event`), so another CloudEvents producer or a proxy adding one stays valid.
    properties["dataschema"] = {
        "description": "CloudEvents optional attribute: URI of the schema `data` adheres to "
        "(accepted and ignored by consumers; the helpdesk services do not write it)",
        "format": "uri",
        "minLength": 1,
        "title": "Dataschema",
        "type": "string",
    }
    # No type for them: a pattern applies to the declared attributes too (`data` is an object).
    schema["patternProperties"] = {
        EXTENSION_ATTRIBUTE_NAME: {
            "description": "CloudEvents extension attribute (accepted and ignored by consumers)"
        }
    }
    return schema


def _standalone_schema(model: type[EventPayload]) -> dict[str, Any]:
    schema = envelope_json_schema(model)
    ce_type = model.cloudevent_type()
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"{SCHEMA_ID_PREFIX}{ce_type}", **schema}


def _message(model: type[EventPayload]) -> dict[str, Any]:
    ce_type = model.cloudevent_type()
    summary, description = _doc(model)
    message: dict[str, Any] = {
        "name": ce_type,
        "title": model.__name__,
        "summary": summary,
        "contentType": CLOUDEVENTS_CONTENT_TYPE,
        "payload": {"$ref": f"#/components/schemas/{ce_type}"},
        "correlationId": {
            "description": "Correlation id of the request that caused the event",
            "location": "$message.payload#/correlationid",
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "format": "uuid", "description": _key_description(model)},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }
    if description:
        message["description"] = description
    return message


def _channel(topic: str, description: str, messages: dict[str, Any]) -> dict[str, Any]:
    return {
        "address": topic,
        "title": topic,
        "description": description,
        "messages": messages,
        "bindings": {
            "kafka": {
                "topic": topic,
                "partitions": ALL_TOPICS[topic],
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of every topic, event type and producer."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for ce_type, model in EVENT_TYPES.items():
        schema = envelope_json_schema(model, ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            if schemas.setdefault(name, definition) != definition:
                raise RuntimeError(f"two different schemas named {name!r}")
        schemas[ce_type] = schema
        messages[model.__name__] = _message(model)
    for service, topic in SERVICE_TOPIC.items():
        names = [model.__name__ for t, model in EVENT_TYPES.items() if EVENT_PRODUCERS[t] == service]
        channels[topic] = _channel(
            topic,
            f"Events published by the {service} service, keyed by aggregate id.",
            {name: {"$ref": f"#/components/messages/{name}"} for name in names},
        )
        operations[f"{service}.send"] = {
            "action": "send",
            "title": f"{service} publishes its events",
            "summary": f"The {service} service's outbox relay publishes to `{topic}` (acks=all, idempotent).",
            "channel": {"$ref": f"#/channels/{topic}"},
            "messages": [{"$ref": f"#/channels/{topic}/messages/{name}"} for name in names],
        }
    for service, topic in DLQ_TOPIC.items():
        channels[topic] = _channel(
            topic,
            f"Dead-letter topic of the {service} service's consumer: events it could not "
            "process after bounded retries, with the error.",
            {},
        )
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Helpdesk events",
            "version": CONTRACTS_VERSION,
            "description": (
                "Events exchanged by the helpdesk services over Apache Kafka. Every message is a "
                "CloudEvents 1.0 structured-mode JSON envelope whose `type` names the event and its "
                "version (e.g. `helpdesk.ticket.created.v1`). One topic per producing service; "
                "delivery is at-least-once (transactional outbox), so consumers deduplicate on the "
                "event `id`. Payloads carry ids and question text, never customer personal data. "
                "Generated from `helpdesk_shared.contracts`; do not edit."
            ),
        },
        "defaultContentType": CLOUDEVENTS_CONTENT_TYPE,
        "servers": {
            "local": {
                "host": LOCAL_BROKER,
                "protocol": "kafka",
                "description": "Local single-node KRaft broker (placeholder; see KAFKA_BOOTSTRAP_SERVERS).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def render_contracts() -> dict[str, str]:
    """Every generated file: path relative to the output folder (posix) → its text."""
    files = {
        f"{SCHEMA_DIR}/{ce_type}.json": _dumps(_standalone_schema(model))
        for ce_type, model in EVENT_TYPES.items()
    }
    files[ASYNCAPI_FILE] = _dumps(asyncapi_document())
    return dict(sorted(files.items()))


def default_output_dir() -> Path:
    """`shared/contracts/` of the repository holding this module (or the current directory)."""
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for folder in (start, *start.parents):
            if (folder / "shared" / "pyproject.toml").is_file():
                return folder / "shared" / "contracts"
    raise FileNotFoundError("cannot find the repository (a folder with shared/pyproject.toml); use --out DIR")


def _existing(out_dir: Path) -> set[str]:
    found = {f"{SCHEMA_DIR}/{p.name}" for p in (out_dir / SCHEMA_DIR).glob("*.json")}
    if (out_dir / ASYNCAPI_FILE).is_file():
        found.add(ASYNCAPI_FILE)
    return found


def check(out_dir: Path, files: dict[str, str] | None = None) -> list[str]:
    """Problems between the generated files and `out_dir`: `differs|missing|extra: <path>`."""
    files = render_contracts() if files is None else files
    problems: list[str] = []
    for path, text in files.items():
        target = out_dir / path
        if not target.is_file():
            problems.append(f"missing: {path}")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"differs: {path}")
    problems.extend(f"extra: {path}" for path in sorted(_existing(out_dir) - files.keys()))
    return problems


def write(out_dir: Path, files: dict[str, str] | None = None) -> list[str]:
    """Write the generated files into `out_dir`, delete stale schemas; returns what changed."""
    files = render_contracts() if files is None else files
    changed = check(out_dir, files)
    for path, text in files.items():
        target = out_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            with target.open("w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
    for path in _existing(out_dir) - files.keys():
        (out_dir / path).unlink()
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpdesk_shared.contracts.generate",
        description="Generate JSON Schemas and the AsyncAPI document of the helpdesk events.",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if files would change")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: shared/contracts)")
    args = parser.parse_args(argv)
    out_dir: Path = args.out if args.out is not None else default_output_dir()
    if args.check:
        problems = check(out_dir)
        if problems:
            print(f"contracts in {out_dir} are out of date with the models:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            print("run: python -m helpdesk_shared.contracts.generate", file=sys.stderr)
            return 1
        print(f"contracts in {out_dir} are up to date")
        return 0
    changed = write(out_dir)
    print(f"wrote {len(EVENT_TYPES)} schemas and {ASYNCAPI_FILE} to {out_dir} ({len(changed)} changed)")
    for problem in changed:
        print(f"  {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
