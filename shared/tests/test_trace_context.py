"""W3C trace context: `traceparent` values read, continued and started; carried by events and logs."""

from __future__ import annotations

import contextvars
import io
import logging
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import structlog
from sqlalchemy.ext.asyncio import async_sessionmaker

from helpdesk_shared.chassis.logging import configure_logging, get_logger, traced, traceparent_var
from helpdesk_shared.chassis.trace_context import (
    TraceParent,
    child_traceparent,
    continue_trace,
    new_traceparent,
    parse_traceparent,
)
from helpdesk_shared.chassis.uow import UnitOfWork, event_headers
from helpdesk_shared.contracts import EventEnvelope, TicketCreated, envelope_json, parse_event

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"


def is_wellformed(traceparent: str) -> bool:
    """A version-00 traceparent, exactly as this service writes them."""
    return (
        parse_traceparent(traceparent) is not None
        and traceparent.startswith("00-")
        and len(traceparent) == len(VALID)
    )


# --- parse ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (VALID, TraceParent(TRACE_ID, PARENT_ID, "01")),
        (f"00-{TRACE_ID}-{PARENT_ID}-00", TraceParent(TRACE_ID, PARENT_ID, "00")),
        (f"00-{TRACE_ID}-{PARENT_ID}-a3", TraceParent(TRACE_ID, PARENT_ID, "a3")),
        # A later version is read by its first four fields when whatever follows starts with a dash.
        (f"01-{TRACE_ID}-{PARENT_ID}-01", TraceParent(TRACE_ID, PARENT_ID, "01")),
        (f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-bring", TraceParent(TRACE_ID, PARENT_ID, "01")),
        (f"fe-{TRACE_ID}-{PARENT_ID}-09-", TraceParent(TRACE_ID, PARENT_ID, "09")),
    ],
    ids=["valid", "not-sampled", "other-flags", "next-version", "future-extra-fields", "future-empty-field"],
)
def test_a_valid_traceparent_is_read(value: str, expected: TraceParent) -> None:
    assert parse_traceparent(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        f"00-{'0' * 32}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"cc-{'0' * 32}-{PARENT_ID}-01-x",
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID.upper()}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-0A",
        f"0A-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
        f"00-{TRACE_ID}0-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01",
        f"00-{TRACE_ID}-{PARENT_ID}0-01",
        f"00-{TRACE_ID}-{PARENT_ID}-1",
        f"00-{TRACE_ID}-{PARENT_ID}-011",
        f"0-{TRACE_ID}-{PARENT_ID}-01",
        f"000-{TRACE_ID}-{PARENT_ID}-01",
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"ff-{TRACE_ID}-{PARENT_ID}-01-x",
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE_ID}-{PARENT_ID}-01-",
        f"cc-{TRACE_ID}-{PARENT_ID}-01x",  # a later version's extra fields start with a dash
        f"{VALID}\n",
        f"cc-{TRACE_ID}-{PARENT_ID}-01\n",
        f" {VALID}",
        f"00_{TRACE_ID}_{PARENT_ID}_01",
        f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",
        f"00-{TRACE_ID[:-1]}٤-{PARENT_ID}-01",  # a digit, but not an ASCII one
        "",
        "garbage",
        "00",
        "00-ab-cd-01",
        "-".join(["00", TRACE_ID, PARENT_ID]),
    ],
)
def test_an_invalid_traceparent_is_ignored(value: str) -> None:
    assert parse_traceparent(value) is None
    started = continue_trace(value)
    assert is_wellformed(started)
    assert TRACE_ID not in started


# --- child and new ----------------------------------------------------------------------------------


def test_a_child_continues_the_trace_with_a_parent_id_of_its_own() -> None:
    parent = TraceParent(TRACE_ID, PARENT_ID, "00")
    children = {child_traceparent(parent) for _ in range(100)}
    assert len(children) == 100
    for child in children:
        assert is_wellformed(child)
        version, trace_id, parent_id, flags = child.split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "00")
        assert parent_id != PARENT_ID


@pytest.mark.parametrize(("flags", "propagated"), [("01", "01"), ("00", "00"), ("a3", "01"), ("fe", "00")])
def test_a_child_keeps_only_the_sampled_flag(flags: str, propagated: str) -> None:
    # Version 00 defines one flag; the bits it does not know are not passed on.
    assert child_traceparent(TraceParent(TRACE_ID, PARENT_ID, flags)).endswith(f"-{propagated}")


def test_a_new_trace_is_random_and_sampled() -> None:
    started = [parse_traceparent(new_traceparent()) for _ in range(100)]
    assert all(t is not None and t.flags == "01" for t in started)
    assert len({t.trace_id for t in started if t}) == len({t.parent_id for t in started if t}) == 100


@pytest.mark.parametrize("version", ["00", "01", "cc"])
def test_continuing_a_valid_traceparent_makes_a_version_00_child(version: str) -> None:
    extra = "" if version == "00" else "-future"
    child = continue_trace(f"{version}-{TRACE_ID}-{PARENT_ID}-03{extra}")
    assert is_wellformed(child)
    assert child.startswith(f"00-{TRACE_ID}-") and child.endswith("-01")  # 03: sampled and an unknown bit
    assert PARENT_ID not in child


def test_continuing_no_traceparent_starts_a_new_trace() -> None:
    started = {continue_trace(None) for _ in range(10)}
    assert len(started) == 10
    assert all(is_wellformed(t) and t.endswith("-01") for t in started)


# --- events -----------------------------------------------------------------------------------------


def ticket_created() -> TicketCreated:
    return TicketCreated(
        ticket_id=uuid.uuid4(),
        number="HD-000001",
        channel="web",
        kind="question",
        subject="s",
        description="d",
        priority="normal",
        customer_id=uuid.uuid4(),
        created_at=datetime.now(UTC),
    )


def test_envelope_json_carries_the_traceparent_as_the_envelope_model_does() -> None:
    payload = ticket_created()
    event = envelope_json(payload, source="/helpdesk/test", correlationid="c-1", traceparent=VALID)
    parsed = parse_event(event.json)
    assert (parsed.correlationid, parsed.traceparent) == ("c-1", VALID)
    assert parsed.to_json_bytes().decode() == event.json
    wrapped = EventEnvelope.wrap(payload, source="/helpdesk/test", traceparent=VALID)
    assert orjson.loads(wrapped.to_json_bytes())["traceparent"] == orjson.loads(event.json)["traceparent"]
    assert parse_event(envelope_json(payload, source="/helpdesk/test").json).traceparent is None


def test_envelope_json_holds_the_traceparent_to_the_models_limit() -> None:
    payload = ticket_created()
    with pytest.raises(ValueError, match="traceparent"):
        envelope_json(payload, source="/helpdesk/test", traceparent="t" * 201)
    assert parse_event(envelope_json(payload, source="/x", traceparent="t" * 200).json).traceparent


def test_event_headers_carry_the_traceparent_when_there_is_one() -> None:
    event_id = uuid.uuid4()
    assert event_headers("helpdesk.x.v1", event_id, "c-1", VALID) == {
        "ce_type": "helpdesk.x.v1",
        "ce_id": str(event_id),
        "correlationid": "c-1",
        "traceparent": VALID,
    }
    assert "traceparent" not in event_headers("helpdesk.x.v1", event_id, "c-1")


def stored_rows(uow: UnitOfWork) -> list[dict[str, Any]]:
    """The outbox rows the unit of work would store: envelope and record headers."""
    insert = uow.events_insert(first_parameter=1)
    assert insert is not None
    _, (_, _, _, _, payloads, headers) = insert
    return [
        {"envelope": orjson.loads(p), "headers": orjson.loads(h)}
        for p, h in zip(payloads, headers, strict=True)
    ]


def test_publish_carries_the_current_traceparent_unless_given_one() -> None:
    uow = UnitOfWork(async_sessionmaker(), source="/helpdesk/test", topic="t")
    other = f"00-{'a' * 32}-{'b' * 16}-01"
    uow.publish(ticket_created(), subject="outside")
    with traced(VALID):
        uow.publish(ticket_created(), subject="inside")
        uow.publish(ticket_created(), subject="explicit", traceparent=other)
    outside, inside, explicit = stored_rows(uow)
    assert outside["envelope"]["traceparent"] is None
    assert "traceparent" not in outside["headers"]
    for row, expected in ((inside, VALID), (explicit, other)):
        assert row["envelope"]["traceparent"] == row["headers"]["traceparent"] == expected


def test_traced_sets_the_traceparent_for_its_block_only() -> None:
    with traced(VALID):
        assert traceparent_var.get() == VALID
        with traced(None):
            assert traceparent_var.get() == VALID
    assert traceparent_var.get() is None


# --- logs -------------------------------------------------------------------------------------------


@pytest.fixture
def log_output(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the services' JSON logging writes, configured as they configure it; put back after."""
    output = io.StringIO()
    monkeypatch.setattr(sys, "stdout", output)
    config, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # `configure_logging` binds the service name in the context it runs in: a copy, not the test's.
    contextvars.copy_context().run(configure_logging, "trace-test")
    try:
        yield output
    finally:
        structlog.configure(**config)
        root.handlers[:] = handlers
        root.setLevel(level)


def test_log_lines_carry_the_trace_id_of_the_current_traceparent(log_output: io.StringIO) -> None:
    log, stdlib = get_logger("trace-test"), logging.getLogger("trace-test.stdlib")
    log.info("untraced")
    with traced(VALID):
        log.info("traced")
        stdlib.warning("traced by a library")
    lines = [orjson.loads(line) for line in log_output.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["untraced", "traced", "traced by a library"]
    assert "trace_id" not in lines[0]
    assert lines[1]["trace_id"] == lines[2]["trace_id"] == TRACE_ID
