"""Pure SLA rules: which policy wins, priority steps, clock states, pausing, holiday-data coverage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from helpdesk_shared.contracts.enums import Channel, Priority, TicketKind
from routing_service.domain.business_time import cn_default
from routing_service.domain.holidays import ESTIMATE_UNTIL
from routing_service.domain.sla import (
    PolicyCriteria,
    SlaFacts,
    coverage_between,
    is_difficult_at_intake,
    match_policy,
    plan,
    raise_priority,
    resolution_target,
    resume,
    timer_state,
)

SH = ZoneInfo("Asia/Shanghai")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def policy(name: str, precedence: int = 100, *, age: int = 0, **criteria: object) -> PolicyCriteria:
    return PolicyCriteria(
        id=uuid.uuid5(uuid.NAMESPACE_URL, name),
        precedence=precedence,
        created_at=EPOCH + timedelta(minutes=age),
        **criteria,  # type: ignore[arg-type]
    )


def facts(
    kind: TicketKind = TicketKind.QUESTION,
    priority: Priority = Priority.NORMAL,
    difficult: bool = False,
    channel: Channel = Channel.WEB,
) -> SlaFacts:
    return SlaFacts(kind=kind, priority=priority, difficult=difficult, channel=channel)


SEEDED = [
    policy("urgent", 10, priority="urgent"),
    policy("difficult", 20, difficult=True),
    policy("high", 30, priority="high"),
    policy("low", 40, priority="low"),
    policy("default", 100),
]


@pytest.mark.parametrize(
    ("ticket", "expected"),
    [
        (facts(), "default"),
        (facts(priority=Priority.URGENT), "urgent"),
        (facts(priority=Priority.URGENT, difficult=True), "urgent"),
        (facts(kind=TicketKind.COMPLAINT, difficult=True, priority=Priority.LOW), "difficult"),
        (facts(priority=Priority.LOW), "low"),
        (facts(priority=Priority.HIGH, channel=Channel.PHONE), "high"),
    ],
)
def test_lowest_precedence_wins(ticket: SlaFacts, expected: str) -> None:
    chosen = match_policy(SEEDED, ticket)
    assert chosen is not None
    assert chosen.id == uuid.uuid5(uuid.NAMESPACE_URL, expected)


def test_on_equal_precedence_the_more_specific_then_the_older_wins() -> None:
    broad = policy("broad", 50, kind="complaint", age=0)
    narrow = policy("narrow", 50, kind="complaint", channel="phone", age=5)
    later_twin = policy("twin", 50, kind="complaint", channel="phone", age=9)
    ticket = facts(kind=TicketKind.COMPLAINT, channel=Channel.PHONE)
    assert match_policy([broad, later_twin, narrow], ticket) == narrow
    assert match_policy([broad, narrow], facts(kind=TicketKind.COMPLAINT, channel=Channel.EMAIL)) == broad


def test_every_criterion_must_hold_and_none_means_any() -> None:
    only_email_questions = policy("email", 1, kind="question", channel="email", difficult=False)
    assert match_policy([only_email_questions], facts(channel=Channel.EMAIL)) == only_email_questions
    assert match_policy([only_email_questions], facts(channel=Channel.WEB)) is None
    assert match_policy([only_email_questions], facts(channel=Channel.EMAIL, difficult=True)) is None
    assert match_policy([], facts()) is None


def test_priority_rises_one_step_and_stops_at_urgent() -> None:
    assert [raise_priority(p) for p in Priority] == [
        Priority.NORMAL,
        Priority.HIGH,
        Priority.URGENT,
        Priority.URGENT,
    ]


def test_complaints_and_vips_are_difficult_at_intake() -> None:
    assert is_difficult_at_intake(TicketKind.COMPLAINT, customer_vip=False)
    assert is_difficult_at_intake(TicketKind.QUESTION, customer_vip=True)
    assert not is_difficult_at_intake(TicketKind.SERVICE_REQUEST, customer_vip=False)


def test_plan_counts_warning_share_in_business_time_and_days_as_standard_days() -> None:
    cn = cn_default()
    start = datetime(2026, 3, 6, 17, 0, tzinfo=SH)  # Friday, one working hour left
    deadline = plan(cn, start, timedelta(minutes=120), 0.5)
    assert deadline.warn_at == datetime(2026, 3, 6, 18, 0, tzinfo=SH)
    assert deadline.due_at == datetime(2026, 3, 9, 10, 0, tzinfo=SH)  # Monday
    assert resolution_target(cn, 2) == timedelta(minutes=900)


def test_resume_moves_the_due_time_by_the_paused_business_time() -> None:
    cn = cn_default()
    due = datetime(2026, 3, 4, 18, 0, tzinfo=SH)  # Wednesday evening
    paused = datetime(2026, 3, 2, 11, 0, tzinfo=SH)  # Monday 11:00: 1230 business minutes left
    reopened = datetime(2026, 3, 4, 9, 0, tzinfo=SH)
    # Wednesday 450 + Thursday 450 + Friday 330 (09:00–12:00, 13:30–16:00).
    assert resume(cn, paused, reopened, due) == datetime(2026, 3, 6, 16, 0, tzinfo=SH)
    # A due time already passed when the clock paused stays where it was.
    assert resume(cn, datetime(2026, 3, 5, 9, 0, tzinfo=SH), reopened, due) == due


NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
DUE = NOW + timedelta(hours=1)


@pytest.mark.parametrize(
    ("kwargs", "state"),
    [
        ({}, "running"),
        ({"now": DUE}, "breached"),
        ({"paused_at": NOW}, "paused"),
        ({"paused_at": DUE + timedelta(minutes=1)}, "breached"),
        ({"stopped_at": NOW, "stopped_by": "answered"}, "met"),
        ({"stopped_at": DUE + timedelta(seconds=1), "stopped_by": "answered"}, "breached"),
        ({"stopped_at": NOW, "stopped_by": "closed"}, "cancelled"),
        # Stopped before its due time: met, even if the worker fired a breach before it learnt of it.
        ({"stopped_at": NOW, "stopped_by": "resolved", "breached_at": DUE}, "met"),
        (
            {"stopped_at": DUE + timedelta(seconds=1), "stopped_by": "resolved", "breached_at": DUE},
            "breached",
        ),
    ],
)
def test_timer_state(kwargs: dict[str, object], state: str) -> None:
    args: dict[str, object] = {
        "now": NOW,
        "due_at": DUE,
        "paused_at": None,
        "stopped_at": None,
        "stopped_by": None,
        "breached_at": None,
        **kwargs,
    }
    assert timer_state(**args) == state  # type: ignore[arg-type]


def test_coverage_is_the_weakest_over_the_span() -> None:
    cn = cn_default()
    last = cn.source_years[1] if cn.source_years else 0
    inside = datetime(last, 6, 1, tzinfo=SH)
    assert coverage_between(cn, inside, inside + timedelta(days=3)) == "statutory"
    assert coverage_between(cn, inside, datetime(last + 1, 1, 5, tzinfo=SH)) == "estimated"
    assert (
        coverage_between(cn, datetime(2031, 3, 3, tzinfo=SH), datetime(2031, 3, 4, tzinfo=SH)) == "estimated"
    )
    assert coverage_between(cn, inside, datetime(ESTIMATE_UNTIL + 1, 1, 5, tzinfo=SH)) == "fallback"
