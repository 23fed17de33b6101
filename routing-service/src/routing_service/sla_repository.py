"""Data access for SLAs, and the conversion of stored calendars into domain calendars. Flushes, never commits.

Policies and calendars are also served from :data:`SLA_CONFIG`, an in-memory snapshot of both
tables reloaded every few seconds (see :mod:`routing_service.config_cache` for the staleness
bound): starting a ticket's clocks reads neither table.

**Lock order.** Whoever changes a ticket's clocks first locks all of its timer rows in
``(ticket_id, target)`` order — ``first_response`` before ``resolution`` — through
:meth:`SlaRepository.lock_ticket_timers`. The firing worker claims tickets by locking their
``first_response`` row with ``SKIP LOCKED`` and then takes the rest in the same order, so event
handlers and any number of firing replicas never wait on each other in a cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time, timedelta
from functools import lru_cache

from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk_shared.chassis.logging import get_logger
from helpdesk_shared.contracts.enums import SlaTarget
from routing_service.config_cache import ConfigCache
from routing_service.domain.business_time import (
    BusinessCalendar,
    BusinessTimeError,
    Interval,
    InvalidCalendarError,
)
from routing_service.domain.holidays import HolidaySourceName
from routing_service.domain.sla import PolicyCriteria
from routing_service.models import Agent, Assignment, Calendar, SlaPolicy, SlaTimer, Team
from routing_service.repository import LED_TEAM

log = get_logger(__name__)

StoredHours = dict[str, list[list[str]]]
_HoursKey = tuple[tuple[int, tuple[tuple[str, str], ...]], ...]


def hours_to_json(weekly_hours: dict[int, list[Interval]]) -> StoredHours:
    return {
        str(day): [[start.strftime("%H:%M"), end.strftime("%H:%M")] for start, end in intervals]
        for day, intervals in sorted(weekly_hours.items())
    }


def hours_from_json(stored: StoredHours) -> dict[int, list[Interval]]:
    return {
        int(day): [(time.fromisoformat(start), time.fromisoformat(end)) for start, end in intervals]
        for day, intervals in stored.items()
    }


def to_domain(row: Calendar) -> BusinessCalendar:
    """The domain calendar of a stored row, shared between calls while the row is unchanged.

    Sharing keeps the calendar's per-day cache of working periods warm for the firing worker and
    the previews; the key is the row's whole definition, so an edit can never serve a stale one.
    Raises :class:`InvalidCalendarError` for a row that does not build (stored under older rules,
    or edited by hand).
    """
    try:
        key: _HoursKey = tuple(
            sorted(
                (int(day), tuple((s, e) for s, e in intervals)) for day, intervals in row.weekly_hours.items()
            )
        )
        source: HolidaySourceName | None = "CN" if row.holiday_source == "CN" else None
        return _cached(row.id, row.time_zone, key, frozenset(row.holidays), frozenset(row.workdays), source)
    except BusinessTimeError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:  # malformed JSON: only a hand edit stores it
        raise InvalidCalendarError(f"calendar {row.id!r} is stored malformed: {exc!r}") from exc


@lru_cache(maxsize=64)
def _cached(
    calendar_id: str,
    time_zone: str,
    hours: _HoursKey,
    holidays: frozenset[date],
    workdays: frozenset[date],
    source: HolidaySourceName | None,
) -> BusinessCalendar:
    return BusinessCalendar(
        id=calendar_id,
        time_zone=time_zone,
        weekly_hours={
            day: [(time.fromisoformat(s), time.fromisoformat(e)) for s, e in intervals]
            for day, intervals in hours
        },
        holidays=holidays,
        workdays=workdays,
        holiday_source=source,
    )


def criteria(policy: SlaPolicy | PolicySnapshot) -> PolicyCriteria:
    """What a policy is matched on (the same-named attributes of a row or a snapshot)."""
    return PolicyCriteria(**{f.name: getattr(policy, f.name) for f in fields(PolicyCriteria)})


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """What the clocks need of a stored policy, detached from any session (shared between tasks)."""

    id: uuid.UUID
    precedence: int
    created_at: datetime
    kind: str | None
    priority: str | None
    difficult: bool | None
    channel: str | None
    first_response_minutes: int
    resolution_working_days: int
    warning_share: float
    pause_when_waiting_on_customer: bool
    calendar_id: str
    active: bool

    @classmethod
    def of(cls, row: SlaPolicy) -> PolicySnapshot:
        """The row's same-named columns, copied out of the session."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class SlaConfig:
    """Every policy and calendar as of one moment; ``active`` is what new tickets are matched on;
    ``unusable`` holds the stored calendars that do not build, with why."""

    policies: Mapping[uuid.UUID, PolicySnapshot]
    active: tuple[PolicyCriteria, ...]
    calendars: Mapping[str, BusinessCalendar]
    unusable: Mapping[str, str] = field(default_factory=dict)


# What was already logged, so that a calendar left broken is reported once, not on every reload.
_reported: set[tuple[str, str]] = set()


async def _load_sla_config(session: AsyncSession) -> SlaConfig:
    repo = SlaRepository(session)
    # Policies first: a calendar is never deleted, so every calendar they name is in the second read.
    policies = {p.id: PolicySnapshot.of(p) for p in await repo.policies()}
    calendars: dict[str, BusinessCalendar] = {}
    unusable: dict[str, str] = {}
    for row in await repo.calendars():
        # One calendar stored under older rules (or edited by hand) must not stop every ticket's
        # routing: it is left out, and the tickets of its policies get no clocks.
        try:
            calendars[row.id] = to_domain(row)
        except BusinessTimeError as exc:
            unusable[row.id] = f"calendar {row.id!r} as stored cannot be used: {exc}"
            if (row.id, str(exc)) not in _reported:
                _reported.add((row.id, str(exc)))
                log.error(
                    "sla_calendar_unusable",
                    calendar_id=row.id,
                    error=str(exc),
                    policies=sorted(str(p.id) for p in policies.values() if p.calendar_id == row.id),
                )
    active = tuple(criteria(p) for p in policies.values() if p.active)
    return SlaConfig(policies=policies, active=active, calendars=calendars, unusable=unusable)


SLA_CONFIG: ConfigCache[SlaConfig] = ConfigCache("sla", _load_sla_config)
"""Policies and calendars, reloaded every few seconds; invalidated by the SLA admin use cases."""

_TIMER_TABLE: Table = SlaTimer.__table__  # type: ignore[assignment]
_START_INSERT = pg_insert(_TIMER_TABLE)
START_TIMERS = _START_INSERT.on_conflict_do_update(
    index_elements=["ticket_id", "target"],
    set_={
        c: _START_INSERT.excluded[c] for c in ("policy_id", "calendar_id", "priority", "due_at", "warn_at")
    },
    # Only a clock that this same ticket.created started and that has not moved since is re-planned.
    where=(_TIMER_TABLE.c.started_at == _START_INSERT.excluded.started_at)
    & _TIMER_TABLE.c.warned_at.is_(None)
    & _TIMER_TABLE.c.breached_at.is_(None)
    & _TIMER_TABLE.c.paused_at.is_(None)
    & _TIMER_TABLE.c.stopped_at.is_(None),
).returning(_TIMER_TABLE.c.target, _TIMER_TABLE.c.policy_id, _TIMER_TABLE.c.due_at)
"""Both clocks of a ticket in one statement, built once (SQLAlchemy caches its compiled form; a
multi-row ``VALUES`` built per call is compiled anew every time): execute it with one parameter
set per clock. Returns the clocks it inserted or re-planned."""


class SlaRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def calendar(self, calendar_id: str) -> Calendar | None:
        return await self.session.get(Calendar, calendar_id)

    async def calendars(self) -> Sequence[Calendar]:
        return (await self.session.scalars(select(Calendar).order_by(Calendar.id))).all()

    async def policy(self, policy_id: uuid.UUID) -> SlaPolicy | None:
        return await self.session.get(SlaPolicy, policy_id)

    async def policy_named(self, name: str) -> SlaPolicy | None:
        return await self.session.scalar(select(SlaPolicy).where(SlaPolicy.name == name))

    async def policies_on(self, calendar_id: str) -> Sequence[SlaPolicy]:
        return (
            await self.session.scalars(select(SlaPolicy).where(SlaPolicy.calendar_id == calendar_id))
        ).all()

    async def policies(self, *, active_only: bool = False) -> Sequence[SlaPolicy]:
        stmt = select(SlaPolicy).order_by(SlaPolicy.precedence, SlaPolicy.created_at, SlaPolicy.id)
        if active_only:
            stmt = stmt.where(SlaPolicy.active.is_(True))
        return (await self.session.scalars(stmt)).all()

    async def add(self, row: Calendar | SlaPolicy) -> None:
        self.session.add(row)
        await self.session.flush()

    async def timers(self, ticket_id: uuid.UUID) -> Sequence[SlaTimer]:
        stmt = select(SlaTimer).where(SlaTimer.ticket_id == ticket_id).order_by(SlaTimer.target)
        return (await self.session.scalars(stmt)).all()

    async def lock_ticket_timers(self, ticket_ids: Iterable[uuid.UUID]) -> list[SlaTimer]:
        """Every timer of the tickets, locked in the module's lock order and freshly read."""
        stmt = (
            select(SlaTimer)
            .where(SlaTimer.ticket_id.in_(list(ticket_ids)))
            .order_by(SlaTimer.ticket_id, SlaTimer.target)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return list((await self.session.scalars(stmt)).all())

    async def claim_due_tickets(self, due: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Lock the ``first_response`` row of each ticket, skipping tickets another replica holds."""
        if not due:
            return []
        stmt = (
            select(SlaTimer.ticket_id)
            .where(SlaTimer.target == SlaTarget.FIRST_RESPONSE, SlaTimer.ticket_id.in_(list(due)))
            .order_by(SlaTimer.ticket_id)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.scalars(stmt)).all())

    async def due_ticket_ids(
        self, now: datetime, limit: int, *, breach_grace: timedelta = timedelta(0)
    ) -> list[uuid.UUID]:
        """Tickets with a clock to breach (``breach_grace`` past due) or warn by ``now`` (each query
        served by its partial index)."""
        running = (
            SlaTimer.stopped_at.is_(None),
            SlaTimer.paused_at.is_(None),
            SlaTimer.breached_at.is_(None),
        )
        breach = (
            select(SlaTimer.ticket_id)
            .where(*running, SlaTimer.due_at <= now - breach_grace)
            .order_by(SlaTimer.due_at)
            .limit(limit)
        )
        warn = (
            select(SlaTimer.ticket_id)
            .where(*running, SlaTimer.warned_at.is_(None), SlaTimer.warn_at <= now)
            .order_by(SlaTimer.warn_at)
            .limit(limit)
        )
        found = [*(await self.session.scalars(breach)).all(), *(await self.session.scalars(warn)).all()]
        return list(dict.fromkeys(found))[:limit]

    async def owner(
        self, ticket_id: uuid.UUID
    ) -> tuple[uuid.UUID | None, uuid.UUID | None, uuid.UUID | None]:
        """(assignee, the assignee's team, that team's lead) — what routing knows of who holds a ticket."""
        # A lead outside any team (difficult tickets go to leads) stands for the team they lead.
        team_id = func.coalesce(Agent.team_id, LED_TEAM)
        row = (
            await self.session.execute(
                select(Assignment.agent_id, team_id.label("team_id"), Team.lead_id)
                .join(Agent, Agent.id == Assignment.agent_id)
                .outerjoin(Team, Team.id == team_id)
                .where(Assignment.ticket_id == ticket_id)
            )
        ).first()
        if row is None:
            return None, None, None
        return row.agent_id, row.team_id, row.lead_id
