"""SLA configuration use cases: business calendars, the due-time preview, and policies.

Each runs in one unit of work and commits once. Calendars are validated by building the domain
:class:`~routing_service.domain.business_time.BusinessCalendar` from them, so the API refuses
exactly what the arithmetic could not work with, with the domain's own explanation. A policy is
refused too when its targets have no due time on its calendar counted from now, and so is a
calendar edit that would leave one of its policies so: its tickets would silently get no clocks.
Editing a calendar or a policy affects clocks started afterwards; running clocks keep their due times
(a customer's deadline does not move because a lead edited a policy). New tickets see an edit
at once on the replica that saved it and within ``ROUTING_CONFIG_CACHE_SECONDS`` (2 s) on every
other one (:mod:`routing_service.config_cache`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

from helpdesk_shared.chassis.problems import Conflict, InvalidInput, NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from routing_service.domain.business_time import BusinessCalendar, BusinessTimeError
from routing_service.domain.holidays import SOURCES
from routing_service.domain.sla import coverage_between, resolution_target
from routing_service.models import Calendar, SlaPolicy
from routing_service.sla_repository import (
    SLA_CONFIG,
    SlaRepository,
    hours_from_json,
    hours_to_json,
    to_domain,
)
from routing_service.sla_schemas import (
    CalendarCreate,
    CalendarFields,
    CalendarOut,
    DueOut,
    PolicyFields,
    PolicyOut,
)


class CalendarNotFound(NotFound):
    slug, title = "calendar-not-found", "Business calendar not found"


class CalendarExists(Conflict):
    slug, title = "calendar-exists", "A business calendar with this id already exists"


class InvalidCalendar(InvalidInput):
    slug, title = "invalid-calendar", "Invalid business calendar"


class InvalidBusinessTime(InvalidInput):
    slug, title = "invalid-business-time", "Invalid business-time request"


class UnknownCalendar(InvalidInput):
    slug, title = "unknown-calendar", "The policy names a calendar that does not exist"


class PolicyNotFound(NotFound):
    slug, title = "policy-not-found", "SLA policy not found"


class PolicyExists(Conflict):
    slug, title = "policy-exists", "An SLA policy with this name already exists"


# ---- calendars --------------------------------------------------------------------------------


def _validated(calendar_id: str, body: CalendarFields) -> BusinessCalendar:
    try:
        return BusinessCalendar(
            id=calendar_id,
            time_zone=body.time_zone,
            weekly_hours={day: list(intervals) for day, intervals in body.weekly_hours.items()},
            holidays=frozenset(body.holidays),
            workdays=frozenset(body.workdays),
            holiday_source=body.holiday_source,
        )
    except BusinessTimeError as exc:
        raise InvalidCalendar(str(exc)) from exc


def _usable(row: Calendar) -> BusinessCalendar:
    """The stored calendar, or 422 when it no longer builds (stored under older rules)."""
    try:
        return to_domain(row)
    except BusinessTimeError as exc:
        raise InvalidCalendar(
            f"{exc}; SLA clocks skip this calendar until PUT /v1/sla/calendars/{row.id} fixes it",
            field="calendar_id",
        ) from exc


def _calendar_out(row: Calendar) -> CalendarOut:
    try:
        calendar = to_domain(row)
        daily, years = calendar.standard_daily_minutes, calendar.source_years
    except BusinessTimeError:
        # Still listed and readable, so that a lead can see it and fix it (the error is logged
        # when the configuration is loaded, and a preview on it answers 422 with the reason).
        daily, years = _unchecked_daily_minutes(row), None
        if row.holiday_source in SOURCES:
            years = SOURCES[row.holiday_source].years()
    return CalendarOut(
        id=row.id,
        name=row.name,
        time_zone=row.time_zone,
        weekly_hours=hours_from_json(row.weekly_hours),
        holidays=sorted(row.holidays),
        workdays=sorted(row.workdays),
        holiday_source=row.holiday_source,
        standard_daily_minutes=daily,
        source_years=years,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _unchecked_daily_minutes(row: Calendar) -> int:
    """The standard day's length as written, for a calendar that does not build."""
    hours = hours_from_json(row.weekly_hours)
    total = 0
    for start, end in next((hours[d] for d in range(7) if hours.get(d)), []):
        until = 24 * 60 if end == time(0) else end.hour * 60 + end.minute
        total += max(0, until - (start.hour * 60 + start.minute))
    return total


def _apply(row: Calendar, body: CalendarFields, now: datetime) -> None:
    row.name, row.time_zone = body.name, body.time_zone
    row.weekly_hours = hours_to_json(body.weekly_hours)
    row.holidays, row.workdays = sorted(set(body.holidays)), sorted(set(body.workdays))
    row.holiday_source, row.updated_at = body.holiday_source, now


async def create_calendar(uow: UnitOfWork, body: CalendarCreate) -> CalendarOut:
    repo = SlaRepository(uow.session)
    _validated(body.id, body)
    if await repo.calendar(body.id) is not None:
        raise CalendarExists(f"Calendar {body.id!r} already exists; PUT /v1/sla/calendars/{body.id} edits it")
    now = datetime.now(UTC)
    row = Calendar(id=body.id, created_at=now)
    _apply(row, body, now)
    await repo.add(row)
    out = _calendar_out(row)
    await uow.commit()
    SLA_CONFIG.invalidate(uow.session)  # in force on this replica at once, on the others within the TTL
    return out


async def update_calendar(uow: UnitOfWork, calendar_id: str, body: CalendarFields) -> CalendarOut:
    repo = SlaRepository(uow.session)
    row = await repo.calendar(calendar_id)
    if row is None:
        raise CalendarNotFound(f"No calendar {calendar_id!r}")
    calendar = _validated(calendar_id, body)
    _check_targets(calendar, await repo.policies_on(calendar_id))
    _apply(row, body, datetime.now(UTC))
    await uow.flush()
    out = _calendar_out(row)
    await uow.commit()
    SLA_CONFIG.invalidate(uow.session)  # in force on this replica at once, on the others within the TTL
    return out


async def list_calendars(uow: UnitOfWork) -> list[CalendarOut]:
    return [_calendar_out(row) for row in await SlaRepository(uow.session).calendars()]


async def get_calendar(uow: UnitOfWork, calendar_id: str) -> CalendarOut:
    row = await SlaRepository(uow.session).calendar(calendar_id)
    if row is None:
        raise CalendarNotFound(f"No calendar {calendar_id!r}")
    return _calendar_out(row)


async def preview_due(
    uow: UnitOfWork,
    calendar_id: str,
    start: datetime,
    *,
    business_minutes: int | None = None,
    working_days: int | None = None,
) -> DueOut:
    """When ``business_minutes`` (or ``working_days``) of business time started at ``start`` run out."""
    if (business_minutes is None) == (working_days is None):
        raise InvalidBusinessTime("Give exactly one of business_minutes and working_days")
    if start.tzinfo is None or start.utcoffset() is None:
        raise InvalidBusinessTime(
            f"start must carry a UTC offset (e.g. 2026-09-30T16:00:00+08:00), got {start.isoformat()}"
        )
    row = await SlaRepository(uow.session).calendar(calendar_id)
    if row is None:
        raise CalendarNotFound(f"No calendar {calendar_id!r}")
    calendar = _usable(row)
    try:
        if business_minutes is not None:
            due = calendar.add_business_time(start, timedelta(minutes=business_minutes))
        else:
            due = calendar.add_working_days(start, working_days or 0)
        coverage = coverage_between(calendar, start, due)
    except BusinessTimeError as exc:
        raise InvalidBusinessTime(str(exc)) from exc
    except OverflowError as exc:  # the walk left Python's dates (years 1–9999) in local time or UTC
        raise InvalidBusinessTime(
            f"{start.isoformat()} is too close to the first or last date this service can count from"
        ) from exc
    return DueOut(
        calendar_id=calendar_id,
        start=start.astimezone(UTC),
        business_minutes=business_minutes,
        working_days=working_days,
        due_at=due,
        coverage=coverage,
    )


# ---- policies ---------------------------------------------------------------------------------


async def _check_policy(repo: SlaRepository, body: PolicyFields, policy_id: uuid.UUID | None) -> None:
    calendar_row = await repo.calendar(body.calendar_id)
    if calendar_row is None:
        raise UnknownCalendar(f"No calendar {body.calendar_id!r}", field="calendar_id")
    same_name = await repo.policy_named(body.name)
    if same_name is not None and same_name.id != policy_id:
        raise PolicyExists(f"A policy named {body.name!r} already exists")
    _check_targets(_usable(calendar_row), [body])


def _check_targets(calendar: BusinessCalendar, policies: Sequence[PolicyFields | SlaPolicy]) -> None:
    """422 unless every policy's targets have a due time on ``calendar`` counted from now.

    The longest target decides: where it can be counted, every shorter one can (a shorter walk
    meets a subset of the same days), so one sum is worked out, whatever the number of policies.
    """
    if not policies:
        return

    def targets(policy: PolicyFields | SlaPolicy) -> list[tuple[timedelta, str, int]]:
        return [
            (
                timedelta(minutes=policy.first_response_minutes),
                "first_response_minutes",
                policy.first_response_minutes,
            ),
            (
                resolution_target(calendar, policy.resolution_working_days),
                "resolution_working_days",
                policy.resolution_working_days,
            ),
        ]

    policy = max(policies, key=lambda p: max(amount for amount, _, _ in targets(p)))
    now = datetime.now(UTC)
    for amount, name, value in targets(policy):
        try:
            calendar.add_business_time(now, amount)
        except (BusinessTimeError, OverflowError) as exc:
            raise InvalidBusinessTime(
                f"Policy {policy.name!r}: {name} = {value} has no due time on calendar {calendar.id!r} "
                f"counted from now ({now:%Y-%m-%d %H:%M} UTC): {exc}",
                field=name,
            ) from exc


def _apply_policy(row: SlaPolicy, body: PolicyFields, now: datetime) -> None:
    for name, value in body.model_dump().items():
        setattr(row, name, value)
    row.updated_at = now


async def create_policy(uow: UnitOfWork, body: PolicyFields) -> PolicyOut:
    repo = SlaRepository(uow.session)
    await _check_policy(repo, body, None)
    now = datetime.now(UTC)
    row = SlaPolicy(id=uuid.uuid4(), created_at=now)
    _apply_policy(row, body, now)
    await repo.add(row)
    out = PolicyOut.model_validate(row)
    await uow.commit()
    SLA_CONFIG.invalidate(uow.session)  # in force on this replica at once, on the others within the TTL
    return out


async def update_policy(uow: UnitOfWork, policy_id: uuid.UUID, body: PolicyFields) -> PolicyOut:
    repo = SlaRepository(uow.session)
    row = await repo.policy(policy_id)
    if row is None:
        raise PolicyNotFound(f"No SLA policy {policy_id}")
    await _check_policy(repo, body, policy_id)
    _apply_policy(row, body, datetime.now(UTC))
    await uow.flush()
    out = PolicyOut.model_validate(row)
    await uow.commit()
    SLA_CONFIG.invalidate(uow.session)  # in force on this replica at once, on the others within the TTL
    return out


async def list_policies(uow: UnitOfWork) -> list[PolicyOut]:
    """Every policy in the order they are considered: precedence, then age."""
    return [PolicyOut.model_validate(p) for p in await SlaRepository(uow.session).policies()]


async def get_policy(uow: UnitOfWork, policy_id: uuid.UUID) -> PolicyOut:
    row = await SlaRepository(uow.session).policy(policy_id)
    if row is None:
        raise PolicyNotFound(f"No SLA policy {policy_id}")
    return PolicyOut.model_validate(row)
