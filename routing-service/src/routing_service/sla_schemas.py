"""Request and response bodies of the SLA API (calendars, policies, a ticket's clocks)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

from helpdesk_shared.contracts.enums import Channel, Priority, SlaTarget, TicketKind
from routing_service.domain.business_time import MAX_INTERVALS_PER_DAY, MIN_INTERVAL_MINUTES, Coverage
from routing_service.domain.sla import TimerState

CalendarId = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", max_length=64)
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Weekday = Annotated[int, Field(ge=0, le=6)]
WorkingInterval = tuple[time, time]
# Refused here already so that the 422 names the weekday; the domain checks it again for stored rows.
DayIntervals = Annotated[list[WorkingInterval], Field(max_length=MAX_INTERVALS_PER_DAY)]
# Served as written ("09:00"), not as "09:00:00": calendars are defined in whole minutes.
ClockTime = Annotated[time, PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str)]
MAX_DATES = 1_000


# The longest targets a policy may set; the due-time preview computes up to these too.
MAX_FIRST_RESPONSE_MINUTES = 525_600
MAX_RESOLUTION_WORKING_DAYS = 365


class CalendarFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    time_zone: str = Field(
        max_length=64,
        examples=["Asia/Shanghai"],
        description="IANA time zone name (no host alias such as localtime, nor the posix/ or right/ trees)",
    )
    weekly_hours: dict[Weekday, DayIntervals] = Field(
        description=(
            'Weekday (0 = Monday … 6 = Sunday) → ordered local ["HH:MM", "HH:MM"] intervals; '
            'an end of "00:00" means midnight at the end of the day. Missing weekdays are days off. '
            f"At most {MAX_INTERVALS_PER_DAY} intervals a day, each at least {MIN_INTERVAL_MINUTES} minutes."
        ),
        examples=[{str(d): [["09:00", "12:00"], ["13:30", "18:00"]] for d in range(5)}],
    )
    holidays: list[date] = Field(default_factory=list, max_length=MAX_DATES, description="Extra days off")
    workdays: list[date] = Field(
        default_factory=list,
        max_length=MAX_DATES,
        description="Extra working days (a weekend made working uses the standard working-day hours)",
    )
    holiday_source: Literal["CN"] | None = Field(
        default=None, description="Built-in statutory holidays and make-up days (調休); CN = chinesecalendar"
    )


class CalendarCreate(CalendarFields):
    id: CalendarId = Field(description='Stable id, e.g. "cn-default"')


class CalendarUpdate(CalendarFields):
    """A full replacement of the calendar's definition (timers already running keep their due times)."""


class CalendarOut(BaseModel):
    id: str
    name: str
    time_zone: str
    weekly_hours: dict[int, list[tuple[ClockTime, ClockTime]]]
    holidays: list[date]
    workdays: list[date]
    holiday_source: str | None
    standard_daily_minutes: int = Field(description="Length of one working day (resolution targets)")
    source_years: tuple[int, int] | None = Field(
        description="First and last year with published holiday schedules; later years are estimated "
        "from the law, earlier ones fall back to the weekly hours"
    )
    created_at: datetime
    updated_at: datetime


class DueOut(BaseModel):
    calendar_id: str
    start: datetime = Field(description="The start, in UTC")
    business_minutes: int | None
    working_days: int | None
    due_at: datetime = Field(description="When the business time has elapsed (UTC)")
    coverage: Coverage = Field(
        description=(
            "statutory: published holiday schedules cover the whole span; estimated: some year's schedule "
            "is not published yet, so its days off are the law's own (no make-up working days); fallback: "
            "some year has no holiday data, so only weekly hours and explicit holidays/workdays were used; "
            "none: the calendar has no holiday source"
        )
    )


class PolicyFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    kind: TicketKind | None = Field(default=None, description="Matches this kind only (null: any)")
    priority: Priority | None = Field(default=None, description="Matches this priority only (null: any)")
    difficult: bool | None = Field(default=None, description="Matches difficult / not difficult (null: any)")
    channel: Channel | None = Field(default=None, description="Matches this channel only (null: any)")
    precedence: int = Field(
        default=100, ge=0, le=1_000_000, description="Lowest wins; ties go to the more specific policy"
    )
    first_response_minutes: int = Field(
        ge=1, le=MAX_FIRST_RESPONSE_MINUTES, description="First-response target, business minutes"
    )
    resolution_working_days: int = Field(
        ge=1,
        le=MAX_RESOLUTION_WORKING_DAYS,
        description="Resolution target in working days (× the calendar's daily working time)",
    )
    warning_share: float = Field(default=0.8, gt=0, lt=1, description="sla.warning fires at this share")
    pause_when_waiting_on_customer: bool = Field(
        default=True,
        description="The resolution clock pauses from an answer's delivery until the customer replies",
    )
    calendar_id: str = Field(default="cn-default", max_length=64)
    active: bool = True


class PolicyCreate(PolicyFields):
    pass


class PolicyUpdate(PolicyFields):
    """A full replacement of the policy (timers already running keep their due times)."""


class PolicyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    kind: TicketKind | None
    priority: Priority | None
    difficult: bool | None
    channel: Channel | None
    precedence: int
    first_response_minutes: int
    resolution_working_days: int
    warning_share: float
    pause_when_waiting_on_customer: bool
    calendar_id: str
    active: bool
    created_at: datetime
    updated_at: datetime


class TimerOut(BaseModel):
    target: SlaTarget
    state: TimerState = Field(
        description=(
            "running; paused (waiting on the customer); met (stopped in time, even when a breach fired "
            "before the stop reached routing); breached (stopped late, fired, or overdue); cancelled "
            "(ticket closed before the target was met or due)"
        )
    )
    policy_id: uuid.UUID
    calendar_id: str
    started_at: datetime
    due_at: datetime
    warn_at: datetime
    remaining_business_minutes: int | None = Field(
        description="Business minutes left until due (negative: overdue); null once the clock stopped"
    )
    paused_at: datetime | None
    stopped_at: datetime | None
    stopped_by: Literal["answered", "resolved", "closed"] | None
    warned_at: datetime | None
    breached_at: datetime | None
    escalated: bool


class TicketSlaOut(BaseModel):
    ticket_id: uuid.UUID
    priority: Priority = Field(description="Priority as the SLA clocks know it (raised by escalations)")
    timers: list[TimerOut]
