"""Compatibility guard: v1 schemas may only change in ways released consumers still accept.

`shared/contracts/released/` holds the schema of every event type as released (what the
consumers already deployed understand; see its README). The schemas generated from the models
today must not let a producer emit an event a released schema rejects, since consumers
dead-letter an unknown enum value, a string longer than their maxLength, a list longer than
their maxItems, a missing required field… A change that does needs a new version (`….v2`).

`incompatibilities(released, current)` walks both schemas side by side (resolving `$ref`s into
each one's own `$defs`) and lists every place where `current` accepts something `released`
does not, as `<JSON path of the instance>: <what widened>`. It is conservative: a keyword it
cannot reason about that changed is reported too, to be looked at by hand. Pure: no
infrastructure.
"""

from __future__ import annotations

import copy
import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from helpdesk_shared.contracts import EVENT_TYPES, generate

Schema = dict[str, Any] | bool
Refs = tuple[str, ...]

RELEASED_DIR = generate.default_output_dir() / "released"

# Keywords without effect on what an instance may be.
ANNOTATIONS = frozenset(
    {
        "$comment",
        "$defs",
        "$id",
        "$schema",
        "contentEncoding",
        "contentMediaType",
        "default",
        "definitions",
        "deprecated",
        "description",
        "discriminator",
        "examples",
        "readOnly",
        "title",
        "writeOnly",
    }
)
UPPER_BOUNDS = ("maxLength", "maxItems", "maxProperties", "maximum", "exclusiveMaximum")
LOWER_BOUNDS = ("minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum")
HANDLED = frozenset(
    {
        "$ref",
        "additionalProperties",
        "allOf",
        "anyOf",
        "const",
        "enum",
        "format",
        "items",
        "multipleOf",
        "oneOf",
        "pattern",
        "patternProperties",
        "properties",
        "required",
        "type",
        "uniqueItems",
        *UPPER_BOUNDS,
        *LOWER_BOUNDS,
    }
)
# The instance types a keyword constrains (it says nothing about the others).
KEYWORD_TYPES: dict[str, frozenset[str]] = {
    **dict.fromkeys(("maxLength", "minLength", "format", "pattern"), frozenset({"string"})),
    **dict.fromkeys(("maxItems", "minItems", "uniqueItems", "items"), frozenset({"array"})),
    **dict.fromkeys(
        ("maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum", "multipleOf"),
        frozenset({"number", "integer"}),
    ),
    **dict.fromkeys(
        ("maxProperties", "minProperties", "properties", "required", "additionalProperties"),
        frozenset({"object"}),
    ),
    "patternProperties": frozenset({"object"}),
}
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VERSIONED_TYPE = re.compile(r"^(?P<base>.+)\.v(?P<version>[0-9]+)$")


class Unsupported(Exception):
    """A construct the guard cannot compare: reported as an incompatibility to look at by hand."""


# --- the comparison -----------------------------------------------------------------------------


def incompatibilities(released: Schema, current: Schema) -> list[str]:
    """Every place where `current` accepts an instance `released` rejects: `<path>: <why>`."""
    return _Comparison(released, current).compare(released, current, "$", frozenset())


def missing_types(released: set[str], current: set[str]) -> list[str]:
    """Released event types gone from `current` without a newer version of them there."""
    problems = []
    for ce_type in sorted(released - current):
        match = VERSIONED_TYPE.match(ce_type)
        superseded = match is not None and any(
            (m := VERSIONED_TYPE.match(other)) is not None
            and m["base"] == match["base"]
            and int(m["version"]) > int(match["version"])
            for other in current
        )
        if not superseded:
            problems.append(f"{ce_type}: released event type removed (no newer version of it exists)")
    return problems


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _same(a: Any, b: Any) -> bool:
    """JSON equality (so that `true` is not `1`)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _values(schema: dict[str, Any]) -> list[Any] | None:
    """The only values `schema` allows (`const`/`enum`), or None when it does not list them."""
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _types(schema: dict[str, Any]) -> frozenset[str] | None:
    """The instance types `schema` allows, or None for any."""
    if "type" in schema:
        declared = schema["type"]
        return frozenset(declared if isinstance(declared, list) else [declared])
    values = _values(schema)
    return None if values is None else frozenset(_json_type(v) for v in values)


def _types_within(narrow: frozenset[str] | None, wide: frozenset[str] | None) -> bool:
    if wide is None:
        return True
    if narrow is None:
        return False
    return all(t in wide or (t == "integer" and "number" in wide) for t in narrow)


def _applies(keyword: str, types: frozenset[str] | None) -> bool:
    """Whether `keyword` can matter for an instance of one of `types` (None: any type)."""
    if types is None:
        return True
    return bool(KEYWORD_TYPES[keyword] & types) or ("integer" in types and "number" in KEYWORD_TYPES[keyword])


def _describe(types: frozenset[str] | None) -> str:
    return "any type" if types is None else " | ".join(sorted(types))


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if IDENTIFIER.match(name) else f"{path}[{json.dumps(name)}]"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Both schemas at once (allOf, or `$ref`/`anyOf` with sibling keywords)."""
    merged = dict(base)
    for key, value in extra.items():
        if key not in merged or key in ANNOTATIONS or _same(merged[key], value):
            merged[key] = value
        elif key == "required":
            merged[key] = sorted({*merged[key], *value})
        elif key == "properties" and not set(merged[key]) & set(value):
            merged[key] = {**merged[key], **value}
        else:
            raise Unsupported(f"cannot merge two different {key!r} (allOf/$ref siblings); compare by hand")
    return merged


class _Comparison:
    def __init__(self, released: Schema, current: Schema) -> None:
        self.roots = {"released": released, "current": current}

    # Normalising: refs resolved, allOf merged, unions and type lists split into branches.

    def _resolve(self, schema: Schema, side: str, refs: Refs) -> tuple[Schema, Refs]:
        while isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#"):
                raise Unsupported(f"cannot resolve $ref {ref!r} (only refs within the schema)")
            if ref in refs:  # a recursive definition: compared once per pair, see compare()
                return schema, refs
            target: Any = self.roots[side]
            for token in [t for t in ref[1:].split("/") if t]:
                token = token.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or token not in target:
                    raise Unsupported(f"$ref {ref!r} points at nothing")
                target = target[token]
            refs = (*refs, ref)
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            if isinstance(target, bool):
                if any(k not in ANNOTATIONS for k in siblings):
                    raise Unsupported(f"$ref {ref!r} to a boolean schema with sibling keywords")
                return target, refs
            schema = _merge(target, siblings)
        if isinstance(schema, dict) and "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                resolved, refs = self._resolve(part, side, refs)
                if resolved is False:
                    return False, refs
                if isinstance(resolved, dict):
                    merged = _merge(merged, resolved)
            return self._resolve(merged, side, refs)
        return schema, refs

    def _branches(self, schema: Schema, side: str, refs: Refs) -> list[tuple[Schema, Refs]]:
        schema, refs = self._resolve(schema, side, refs)
        if not isinstance(schema, dict):
            return [(schema, refs)]
        if "anyOf" in schema and "oneOf" in schema:
            raise Unsupported("anyOf and oneOf at one level; compare by hand")
        union = schema.get("anyOf", schema.get("oneOf"))
        if union is not None:
            outer = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            branches: list[tuple[Schema, Refs]] = []
            for member in union:
                resolved, member_refs = self._resolve(member, side, refs)
                if resolved is False:
                    continue
                body = _merge(outer, {} if resolved is True else resolved)
                branches.extend(self._branches(body, side, member_refs))
            return branches
        declared = schema.get("type")
        if isinstance(declared, list):
            return [(self._typed(schema, t), refs) for t in declared]
        return [(schema, refs)]

    @staticmethod
    def _typed(schema: dict[str, Any], json_type: str) -> dict[str, Any]:
        """The part of a multi-type schema for one type (its listed values filtered to that type)."""
        typed = {**schema, "type": json_type}
        if "enum" in typed:
            typed["enum"] = [
                v
                for v in typed["enum"]
                if _json_type(v) == json_type or (json_type == "number" and _json_type(v) == "integer")
            ]
        return typed

    # Comparing.

    def compare(self, released: Schema, current: Schema, path: str, seen: frozenset[Any]) -> list[str]:
        try:
            old_branches = self._branches(released, "released", ())
            new_branches = self._branches(current, "current", ())
        except Unsupported as exc:
            return [f"{path}: {exc}"]
        problems: list[str] = []
        for new, new_refs in new_branches:
            if new is False:
                continue  # accepts nothing
            if any(old is True for old, _ in old_branches):
                continue  # the released schema accepts anything here
            new_schema: dict[str, Any] = {} if new is True else new
            candidates = [
                (old, old_refs)
                for old, old_refs in old_branches
                if isinstance(old, dict) and _types_within(_types(new_schema), _types(old))
            ]
            if not candidates:
                released_types = [_types(o) for o, _ in old_branches if isinstance(o, dict)]
                allowed = (
                    "nothing"
                    if not released_types
                    else "any type"
                    if None in released_types
                    else " | ".join(sorted({t for ts in released_types if ts for t in ts}))
                )
                problems.append(
                    f"{path}: type widened: current allows {_describe(_types(new_schema))}, "
                    f"released only {allowed}"
                )
                continue
            best: list[str] | None = None
            for old, old_refs in candidates:
                key = (old_refs, new_refs)
                if (old_refs or new_refs) and key in seen:
                    best = []  # this pair of definitions is being compared further up
                    break
                found = self._compare_one(
                    old,
                    new_schema,
                    path,
                    seen | {key} if old_refs or new_refs else seen,
                )
                if not found:
                    best = []
                    break
                if best is None or len(found) < len(best):
                    best = found
            problems.extend(best or [])
        return problems

    def _compare_one(
        self, old: dict[str, Any], new: dict[str, Any], path: str, seen: frozenset[Any]
    ) -> list[str]:
        """Two single-type (or untyped) branches, refs and unions resolved."""
        problems = [
            f"{path}: keyword {key!r} changed or removed; the guard cannot tell whether that is "
            "compatible, check by hand"
            for key in sorted(old)
            if key not in ANNOTATIONS and key not in HANDLED and not _same(old[key], new.get(key))
        ]
        old_values, new_values = _values(old), _values(new)
        if old_values is not None:
            if new_values is None:
                problems.append(
                    f"{path}: enum/const removed: current allows any value, released only "
                    f"{json.dumps(old_values, ensure_ascii=False)}"
                )
            else:
                gained = [v for v in new_values if not any(_same(v, o) for o in old_values)]
                if gained:
                    problems.append(
                        f"{path}: enum gains {json.dumps(gained, ensure_ascii=False)} "
                        f"(released: {json.dumps(old_values, ensure_ascii=False)}); released consumers "
                        "reject them"
                    )
        if new_values is not None and all(not isinstance(v, dict | list) for v in new_values):
            # A fixed set of scalars: check the values themselves against the released bounds.
            return problems + [
                f"{path}: {violation}" for v in new_values for violation in _scalar_violations(v, old)
            ]
        types = _types(new)
        for key in UPPER_BOUNDS:
            if key in old and _applies(key, types):
                if key not in new:
                    problems.append(f"{path}: {key} removed (released: {old[key]})")
                elif new[key] > old[key]:
                    problems.append(f"{path}: {key} raised from {old[key]} to {new[key]}")
        for key in LOWER_BOUNDS:
            if key in old and _applies(key, types):
                if key not in new:
                    problems.append(f"{path}: {key} removed (released: {old[key]})")
                elif new[key] < old[key]:
                    problems.append(f"{path}: {key} lowered from {old[key]} to {new[key]}")
        for key in ("format", "pattern"):
            if key in old and _applies(key, types) and new.get(key) != old[key]:
                now = f"{new[key]!r}" if key in new else "none"
                problems.append(f"{path}: {key} changed from {old[key]!r} to {now}")
        if old.get("uniqueItems") and _applies("uniqueItems", types) and not new.get("uniqueItems"):
            problems.append(f"{path}: uniqueItems dropped")
        if "multipleOf" in old and _applies("multipleOf", types):
            step = new.get("multipleOf")
            if step is None or (Fraction(str(step)) / Fraction(str(old["multipleOf"]))).denominator != 1:
                problems.append(f"{path}: multipleOf changed from {old['multipleOf']} to {step}")
        if _applies("items", types):
            problems += self.compare(old.get("items", True), new.get("items", True), f"{path}[*]", seen)
        if _applies("properties", types):
            problems += self._compare_object(old, new, path, seen)
        return problems

    def _compare_object(
        self, old: dict[str, Any], new: dict[str, Any], path: str, seen: frozenset[Any]
    ) -> list[str]:
        problems: list[str] = []
        old_props: dict[str, Schema] = old.get("properties", {})
        new_props: dict[str, Schema] = new.get("properties", {})
        old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
        old_extra: Schema = old.get("additionalProperties", True)
        new_extra: Schema = new.get("additionalProperties", True)
        old_patterns: dict[str, Schema] = old.get("patternProperties", {})
        new_patterns: dict[str, Schema] = new.get("patternProperties", {})
        for name in sorted(old_required - new_required):
            if name in new_props:
                problems.append(f"{_child(path, name)}: required in the released schema, no longer required")
            else:
                problems.append(f"{_child(path, name)}: required in the released schema, removed")
        for name, old_schema in old_props.items():
            if name in new_props:
                problems += self.compare(old_schema, new_props[name], _child(path, name), seen)
            # An optional property removed: producers no longer write it, consumers use their default.
        for name, new_schema in new_props.items():
            if name in old_props:
                continue
            matching = [s for pattern, s in old_patterns.items() if re.search(pattern, name)]
            if matching:
                for pattern_schema in matching:
                    problems += self.compare(pattern_schema, new_schema, _child(path, name), seen)
            elif old_extra is False:
                problems.append(
                    f"{_child(path, name)}: new property, but the released schema forbids "
                    "other properties (additionalProperties: false)"
                )
            elif isinstance(old_extra, dict):
                problems += self.compare(old_extra, new_schema, _child(path, name), seen)
            # Otherwise released consumers ignore it (extra="ignore").
        if old_extra is False and new_extra is not False:
            problems.append(f"{path}: additionalProperties loosened from false to {json.dumps(new_extra)}")
        elif isinstance(old_extra, dict):
            if new_extra is True:
                problems.append(f"{path}: additionalProperties loosened from a schema to true")
            elif isinstance(new_extra, dict):
                problems += self.compare(old_extra, new_extra, f"{path}.*", seen)
        for pattern, new_schema in new_patterns.items():
            where = f"{path}[/{pattern}/]"
            if pattern in old_patterns:
                problems += self.compare(old_patterns[pattern], new_schema, where, seen)
            elif old_extra is False:
                problems.append(
                    f"{where}: new patternProperties, but the released schema forbids "
                    "other properties (additionalProperties: false)"
                )
            elif isinstance(old_extra, dict):
                problems += self.compare(old_extra, new_schema, where, seen)
        for pattern, old_schema in old_patterns.items():
            if pattern not in new_patterns and new_extra is not False:
                # Names matching it now fall under current's additionalProperties.
                problems += self.compare(old_schema, new_extra, f"{path}[/{pattern}/]", seen)
        return problems


def _scalar_violations(value: Any, old: dict[str, Any]) -> list[str]:
    """Why the released schema's own bounds reject `value` (a listed scalar of current's)."""
    shown = json.dumps(value, ensure_ascii=False)
    found: list[str] = []
    if isinstance(value, str):
        if "maxLength" in old and len(value) > old["maxLength"]:
            found.append(f"{shown} longer than the released maxLength {old['maxLength']}")
        if "minLength" in old and len(value) < old["minLength"]:
            found.append(f"{shown} shorter than the released minLength {old['minLength']}")
        if "pattern" in old and not re.search(old["pattern"], value):
            found.append(f"{shown} does not match the released pattern {old['pattern']!r}")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "maximum" in old and value > old["maximum"]:
            found.append(f"{shown} above the released maximum {old['maximum']}")
        if "exclusiveMaximum" in old and value >= old["exclusiveMaximum"]:
            found.append(f"{shown} not below the released exclusiveMaximum {old['exclusiveMaximum']}")
        if "minimum" in old and value < old["minimum"]:
            found.append(f"{shown} below the released minimum {old['minimum']}")
        if "exclusiveMinimum" in old and value <= old["exclusiveMinimum"]:
            found.append(f"{shown} not above the released exclusiveMinimum {old['exclusiveMinimum']}")
    return found


# --- the real schemas ---------------------------------------------------------------------------


def _released() -> dict[str, dict[str, Any]]:
    return {
        path.name.removesuffix(".json"): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(RELEASED_DIR.glob("*.json"))
    }


def _current() -> dict[str, dict[str, Any]]:
    """The schemas generated from the models now (what `make contracts` writes to schemas/)."""
    prefix = f"{generate.SCHEMA_DIR}/"
    return {
        path.removeprefix(prefix).removesuffix(".json"): json.loads(text)
        for path, text in generate.render_contracts().items()
        if path.startswith(prefix)
    }


RELEASED = _released()
CURRENT = _current()


def test_the_baseline_holds_every_released_type_under_its_own_name() -> None:
    assert RELEASED, f"no released schemas in {RELEASED_DIR}"
    assert (RELEASED_DIR / "README.md").is_file()
    for ce_type, schema in RELEASED.items():
        assert schema["title"] == ce_type
        assert schema["properties"]["type"]["const"] == ce_type


# A released type no longer generated is test_no_released_type_disappears' to judge.
@pytest.mark.parametrize("ce_type", sorted(set(RELEASED) & set(CURRENT)))
def test_current_schema_is_compatible_with_the_released_one(ce_type: str) -> None:
    problems = incompatibilities(RELEASED[ce_type], CURRENT[ce_type])
    assert not problems, (
        f"{ce_type} changed in a way released consumers reject (dead-letter); publish a new version "
        "instead (ARCHITECTURE.md §3), or update shared/contracts/released/ once every consumer "
        "reads the new schema:\n" + "\n".join(f"  {ce_type}: {p}" for p in problems)
    )


def test_no_released_type_disappears() -> None:
    assert missing_types(set(RELEASED), set(CURRENT)) == []


def test_every_generated_type_has_a_released_baseline() -> None:
    unguarded = sorted(set(CURRENT) - set(RELEASED))
    assert not unguarded, (
        "new event types without a released baseline; copy them from shared/contracts/schemas/ "
        f"to shared/contracts/released/: {unguarded}"
    )
    assert set(CURRENT) == set(EVENT_TYPES)


def test_the_committed_schemas_are_what_the_models_generate() -> None:
    # The guard reads the models; test_contracts holds the committed schemas to them.
    committed = generate.default_output_dir() / generate.SCHEMA_DIR
    for ce_type, schema in CURRENT.items():
        assert json.loads((committed / f"{ce_type}.json").read_text(encoding="utf-8")) == schema


# --- the guard on real schemas, changed by hand --------------------------------------------------


def _ticket_created() -> dict[str, Any]:
    return copy.deepcopy(RELEASED["helpdesk.ticket.created.v1"])


def test_a_new_channel_in_ticket_created_is_caught_at_its_path() -> None:
    current = _ticket_created()
    current["$defs"]["Channel"]["enum"].append("sms")
    assert incompatibilities(_ticket_created(), current) == [
        '$.data.channel: enum gains ["sms"] (released: ["web", "app", "email", "chat", "forum", '
        '"phone", "api"]); released consumers reject them'
    ]
    # … and dropping one is fine: producers emit less.
    current["$defs"]["Channel"]["enum"].remove("sms")
    current["$defs"]["Channel"]["enum"].remove("forum")
    assert incompatibilities(_ticket_created(), current) == []


def test_real_schema_changes_are_caught_or_allowed() -> None:
    released = _ticket_created()

    def data(schema: dict[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = schema["$defs"]["TicketCreated"]
        return payload

    current = _ticket_created()
    data(current)["properties"]["description"]["maxLength"] = 50000
    data(current)["properties"]["tags"]["items"]["maxLength"] = 65
    data(current)["required"].remove("subject")
    data(current)["properties"]["number"] = {
        "anyOf": [{"type": "string", "maxLength": 32, "minLength": 1}, {"type": "null"}]
    }
    assert incompatibilities(released, current) == [
        "$.data.subject: required in the released schema, no longer required",
        "$.data.description: maxLength raised from 20000 to 50000",
        "$.data.number: type widened: current allows null, released only string",
        "$.data.tags[*]: maxLength raised from 64 to 65",
    ]

    current = _ticket_created()
    data(current)["properties"]["description"]["maxLength"] = 10000
    data(current)["properties"]["sentiment"] = {"type": "string", "enum": ["calm", "angry"]}
    data(current)["properties"]["language"] = {"type": "string", "minLength": 2, "maxLength": 35}
    current["properties"]["partitionkey"] = {"type": "string"}  # a CloudEvents extension
    current["$defs"]["Medium"] = current["$defs"].pop("Channel")
    data(current)["properties"]["channel"]["$ref"] = "#/$defs/Medium"
    assert incompatibilities(released, current) == []

    current = _ticket_created()
    current["properties"]["Bad-Attribute"] = {"type": "string"}
    current.pop("additionalProperties")
    assert incompatibilities(released, current) == [
        '$["Bad-Attribute"]: new property, but the released schema forbids other properties '
        "(additionalProperties: false)",
        "$: additionalProperties loosened from false to true",
    ]


# --- each rule on small schemas -------------------------------------------------------------------

STRING = {"type": "string"}
CHANNEL_DEFS = {"Channel": {"type": "string", "enum": ["web", "email"]}}


def _obj(properties: dict[str, Any], required: list[str] | None = None, **more: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or [], **more}


WIDENING: list[tuple[str, Schema, Schema, str]] = [
    (
        "new enum value (through $ref)",
        {"$defs": CHANNEL_DEFS, **_obj({"channel": {"$ref": "#/$defs/Channel"}}, ["channel"])},
        {
            "$defs": {"Channel": {"type": "string", "enum": ["web", "email", "sms"]}},
            **_obj({"channel": {"$ref": "#/$defs/Channel"}}, ["channel"]),
        },
        '$.channel: enum gains ["sms"]',
    ),
    ("const changed", {"const": "1.0"}, {"const": "1.1"}, '$: enum gains ["1.1"]'),
    ("enum removed", {"type": "string", "enum": ["a"]}, STRING, "$: enum/const removed"),
    (
        "maxLength raised",
        {"type": "string", "maxLength": 5},
        {"type": "string", "maxLength": 6},
        "$: maxLength raised from 5 to 6",
    ),
    ("maxLength removed", {"type": "string", "maxLength": 5}, STRING, "$: maxLength removed"),
    (
        "maxItems raised",
        {"type": "array", "maxItems": 5},
        {"type": "array", "maxItems": 50},
        "$: maxItems raised from 5 to 50",
    ),
    ("maxItems removed", {"type": "array", "maxItems": 5}, {"type": "array"}, "$: maxItems removed"),
    (
        "maximum raised",
        {"type": "integer", "maximum": 5},
        {"type": "integer", "maximum": 6},
        "$: maximum raised from 5 to 6",
    ),
    (
        "exclusiveMaximum removed",
        {"type": "number", "exclusiveMaximum": 1},
        {"type": "number"},
        "$: exclusiveMaximum removed",
    ),
    (
        "minLength lowered",
        {"type": "string", "minLength": 2},
        {"type": "string", "minLength": 1},
        "$: minLength lowered from 2 to 1",
    ),
    ("minLength removed", {"type": "string", "minLength": 1}, STRING, "$: minLength removed"),
    (
        "minItems lowered",
        {"type": "array", "minItems": 1},
        {"type": "array", "minItems": 0},
        "$: minItems lowered from 1 to 0",
    ),
    (
        "minimum lowered",
        {"type": "integer", "minimum": 0},
        {"type": "integer", "minimum": -1},
        "$: minimum lowered from 0 to -1",
    ),
    ("minimum removed", {"type": "integer", "minimum": 0}, {"type": "integer"}, "$: minimum removed"),
    (
        "required made optional",
        _obj({"a": STRING}, ["a"]),
        _obj({"a": STRING}),
        "$.a: required in the released schema, no longer required",
    ),
    (
        "required removed",
        _obj({"a": STRING, "b": STRING}, ["a", "b"]),
        _obj({"b": STRING}, ["b"]),
        "$.a: required in the released schema, removed",
    ),
    (
        "string to string|null (anyOf)",
        _obj({"a": STRING}),
        _obj({"a": {"anyOf": [STRING, {"type": "null"}], "default": None}}),
        "$.a: type widened: current allows null, released only string",
    ),
    (
        "string to [string, null]",
        STRING,
        {"type": ["string", "null"]},
        "$: type widened: current allows null, released only string",
    ),
    (
        "string to integer",
        STRING,
        {"type": "integer"},
        "$: type widened: current allows integer, released only string",
    ),
    (
        "integer to number",
        {"type": "integer"},
        {"type": "number"},
        "$: type widened: current allows number, released only integer",
    ),
    ("type dropped", STRING, {}, "$: type widened: current allows any type, released only string"),
    (
        "nullable enum gains null",
        {"$ref": "#/$defs/Channel", "$defs": CHANNEL_DEFS},
        {"anyOf": [{"$ref": "#/$defs/Channel"}, {"type": "null"}], "$defs": CHANNEL_DEFS},
        "$: type widened: current allows null",
    ),
    (
        "additionalProperties false to absent",
        _obj({}, additionalProperties=False),
        _obj({}),
        "$: additionalProperties loosened from false to true",
    ),
    (
        "additionalProperties false to a schema",
        _obj({}, additionalProperties=False),
        _obj({}, additionalProperties=STRING),
        "$: additionalProperties loosened from false to",
    ),
    (
        "additionalProperties schema to true",
        _obj({}, additionalProperties=STRING),
        _obj({}, additionalProperties=True),
        "$: additionalProperties loosened from a schema to true",
    ),
    (
        "additionalProperties schema widened",
        _obj({}, additionalProperties={"type": "string", "maxLength": 3}),
        _obj({}, additionalProperties=STRING),
        "$.*: maxLength removed",
    ),
    (
        "new property where forbidden",
        _obj({"a": STRING}, additionalProperties=False),
        _obj({"a": STRING, "b": STRING}, additionalProperties=False),
        "$.b: new property, but the released schema forbids other properties",
    ),
    (
        "new property against released patternProperties",
        _obj({}, additionalProperties=False, patternProperties={"^x_": STRING}),
        _obj({"x_a": {"type": "integer"}}, additionalProperties=False, patternProperties={"^x_": STRING}),
        "$.x_a: type widened: current allows integer, released only string",
    ),
    (
        "new patternProperties where forbidden",
        _obj({}, additionalProperties=False),
        _obj({}, additionalProperties=False, patternProperties={"^x_": STRING}),
        "$[/^x_/]: new patternProperties, but the released schema forbids other properties",
    ),
    (
        "list items widened",
        {"type": "array", "items": {"type": "string", "maxLength": 64}},
        {"type": "array", "items": {"type": "string", "maxLength": 100}},
        "$[*]: maxLength raised from 64 to 100",
    ),
    (
        "list items untyped",
        {"type": "array", "items": STRING},
        {"type": "array"},
        "$[*]: type widened: current allows any type, released only string",
    ),
    ("format dropped", {"type": "string", "format": "uuid"}, STRING, "$: format changed from 'uuid' to none"),
    (
        "format changed",
        {"type": "string", "format": "uuid"},
        {"type": "string", "format": "uri"},
        "$: format changed from 'uuid' to 'uri'",
    ),
    (
        "pattern changed",
        {"type": "string", "pattern": "^a"},
        {"type": "string", "pattern": "^b"},
        "$: pattern changed from '^a' to '^b'",
    ),
    (
        "const too long for the released maxLength",
        {"type": "string", "maxLength": 3},
        {"type": "string", "const": "abcd"},
        '$: "abcd" longer than the released maxLength 3',
    ),
    (
        "nested object in $defs",
        {
            "$defs": {"D": _obj({"n": {"type": "integer", "maximum": 3}}, ["n"])},
            **_obj({"d": {"$ref": "#/$defs/D"}}, ["d"]),
        },
        {
            "$defs": {"D": _obj({"n": {"type": "integer", "maximum": 4}}, ["n"])},
            **_obj({"d": {"$ref": "#/$defs/D"}}, ["d"]),
        },
        "$.d.n: maximum raised from 3 to 4",
    ),
    (
        "unknown keyword changed",
        {"type": "string", "contentSchema": {"a": 1}},
        STRING,
        "$: keyword 'contentSchema' changed or removed; the guard cannot tell",
    ),
    (
        "released accepts nothing",
        False,
        STRING,
        "$: type widened: current allows string, released only nothing",
    ),
]

NARROWING: list[tuple[str, Schema, Schema]] = [
    ("enum loses a value", {"type": "string", "enum": ["a", "b"]}, {"type": "string", "enum": ["a"]}),
    ("enum added", STRING, {"type": "string", "enum": ["a"]}),
    ("maxLength lowered", {"type": "string", "maxLength": 5}, {"type": "string", "maxLength": 4}),
    ("maxLength added", STRING, {"type": "string", "maxLength": 4}),
    ("maxItems lowered", {"type": "array", "maxItems": 5}, {"type": "array", "maxItems": 1}),
    ("maximum lowered", {"type": "integer", "maximum": 5}, {"type": "integer", "maximum": 1}),
    ("minLength raised", {"type": "string", "minLength": 1}, {"type": "string", "minLength": 2}),
    ("minItems raised", {"type": "array", "minItems": 0}, {"type": "array", "minItems": 1}),
    ("minimum raised", {"type": "integer", "minimum": 0}, {"type": "integer", "minimum": 1}),
    ("optional made required", _obj({"a": STRING}), _obj({"a": STRING}, ["a"])),
    ("optional property removed", _obj({"a": STRING, "b": STRING}, ["b"]), _obj({"b": STRING}, ["b"])),
    ("new optional property (consumers ignore it)", _obj({"a": STRING}), _obj({"a": STRING, "b": STRING})),
    ("new required property", _obj({"a": STRING}, ["a"]), _obj({"a": STRING, "b": STRING}, ["a", "b"])),
    ("string|null to string", {"anyOf": [STRING, {"type": "null"}]}, STRING),
    (
        "[string, null] to anyOf",
        {"type": ["string", "null"], "maxLength": 3},
        {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]},
    ),
    ("number to integer", {"type": "number"}, {"type": "integer"}),
    ("additionalProperties absent to false", _obj({}), _obj({}, additionalProperties=False)),
    (
        "additionalProperties true to a schema",
        _obj({}, additionalProperties=True),
        _obj({}, additionalProperties=STRING),
    ),
    (
        "new property the released patternProperties accepts",
        _obj({}, additionalProperties=False, patternProperties={"^[a-z]{1,20}$": {}}),
        _obj({"ext": STRING}, additionalProperties=False, patternProperties={"^[a-z]{1,20}$": {}}),
    ),
    (
        "$defs renamed, same content",
        {"$ref": "#/$defs/Channel", "$defs": CHANNEL_DEFS},
        {"$ref": "#/$defs/Medium", "$defs": {"Medium": CHANNEL_DEFS["Channel"]}},
    ),
    ("$ref inlined", {"$ref": "#/$defs/Channel", "$defs": CHANNEL_DEFS}, CHANNEL_DEFS["Channel"]),
    (
        "allOf wrapper",
        {"$ref": "#/$defs/Channel", "$defs": CHANNEL_DEFS},
        {"allOf": [{"$ref": "#/$defs/Channel"}], "description": "x", "$defs": CHANNEL_DEFS},
    ),
    (
        "only annotations changed",
        {"type": "string", "title": "A", "description": "a", "default": "x"},
        {"type": "string", "title": "B", "description": "b", "default": "y", "examples": ["z"]},
    ),
    ("format added", STRING, {"type": "string", "format": "uuid"}),
    (
        "const within the released bounds",
        {"type": "string", "maxLength": 3},
        {"type": "string", "const": "abc"},
    ),
    (
        "keyword of another type",
        {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "integer"}]},
        {"type": "integer"},
    ),
    ("released accepts anything", True, _obj({"a": {"type": "integer"}})),
    ("current accepts nothing", STRING, False),
]


@pytest.mark.parametrize(
    ("released", "current", "expected"),
    [pytest.param(r, c, e, id=name) for name, r, c, e in WIDENING],
)
def test_a_widening_change_is_reported_with_its_path(
    released: Schema, current: Schema, expected: str
) -> None:
    problems = incompatibilities(released, current)
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(("released", "current"), [pytest.param(r, c, id=name) for name, r, c in NARROWING])
def test_a_narrowing_change_passes(released: Schema, current: Schema) -> None:
    assert incompatibilities(released, current) == []


def test_unchanged_schemas_pass() -> None:
    for ce_type, schema in RELEASED.items():
        assert incompatibilities(schema, copy.deepcopy(schema)) == [], ce_type


def test_recursive_definitions_are_compared_once() -> None:
    def tree(max_length: int) -> dict[str, Any]:
        node = _obj(
            {
                "name": {"type": "string", "maxLength": max_length},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                "parent": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
            },
            ["name"],
        )
        return {"$defs": {"Node": node}, "$ref": "#/$defs/Node"}

    assert incompatibilities(tree(5), tree(5)) == []
    assert incompatibilities(tree(5), tree(4)) == []
    assert incompatibilities(tree(5), tree(6)) == ["$.name: maxLength raised from 5 to 6"]


def test_a_ref_to_nothing_is_reported_not_raised() -> None:
    assert incompatibilities(STRING, {"$ref": "#/$defs/Missing"}) == [
        "$: $ref '#/$defs/Missing' points at nothing"
    ]


def test_a_released_type_may_only_disappear_behind_a_newer_version() -> None:
    released = {"helpdesk.ticket.created.v1", "helpdesk.ticket.closed.v1", "helpdesk.sla.warning.v2"}
    current = {"helpdesk.ticket.created.v2", "helpdesk.sla.warning.v1"}
    assert missing_types(released, current) == [
        "helpdesk.sla.warning.v2: released event type removed (no newer version of it exists)",
        "helpdesk.ticket.closed.v1: released event type removed (no newer version of it exists)",
    ]
    assert missing_types(released, released | {"helpdesk.kb.gap.reported.v1"}) == []


def test_the_released_directory_is_not_touched_by_make_contracts(tmp_path: Path) -> None:
    (tmp_path / "released").mkdir()
    kept = tmp_path / "released" / "helpdesk.ticket.created.v1.json"
    kept.write_text("{}", encoding="utf-8")
    generate.write(tmp_path)
    assert kept.read_text(encoding="utf-8") == "{}"
    assert generate.check(tmp_path) == []
