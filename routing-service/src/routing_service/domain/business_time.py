"""Business time: working calendars and SLA arithmetic (pure: no I/O, no clock).

Definitions used throughout:

* **Working day.** A date is a working day when it is an explicit ``workdays`` entry, or when it is
  not an explicit ``holidays`` entry, not a statutory holiday of the ``holiday_source``, and either
  its weekday has working intervals or the source makes it a make-up working day (調休).
* **Hours of a working day.** Its weekday's intervals; a working day whose weekday has no intervals
  of its own (a weekend made working by an explicit workday or a make-up day) uses the *standard
  hours*: the intervals of the first weekday Monday–Friday that has any (if none of Monday–Friday
  has intervals, the first of Saturday/Sunday that has).
* **Coverage.** The ``CN`` source has the published schedules of a limited range of years. For
  the years after them it estimates the days off from the law (see ``holidays``); before them, and
  too far ahead, the calendar falls back to the weekly hours plus the explicit overrides;
  :meth:`BusinessCalendar.coverage` says which applies, so the API can tell its callers.
* **Business time is counted in wall-clock minutes.** Every minute displayed on the local clock
  inside a working interval counts once. On a daylight-saving change this means: a working
  interval across the fall-back hour counts its wall-clock length (the second pass through the
  repeated hour is not business time), and the hour skipped by spring-forward is never displayed,
  so it is not counted. Consequently ``business_time_between`` and ``add_business_time`` are exact
  inverses and no nonexistent or ambiguous local time is ever produced: every instant is computed
  in UTC from the zone's real offsets. Ordinary office hours never meet a change (changes happen at
  night), so for them this is simply "the minutes on the office clock".
* **Bounded calendars.** A weekday holds at most ``MAX_INTERVALS_PER_DAY`` intervals of at least
  ``MIN_INTERVAL_MINUTES`` each, and the time zone is an IANA name (see :func:`time_zone_names`).
  Every due time walks the working periods day by day, on the event loop, for every new ticket and
  every preview: a calendar of hundreds of one-minute intervals made the longest target take
  seconds and its day cache hundreds of megabytes.

All instants given to the calendar must be timezone-aware; all instants returned are in UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from routing_service.domain.holidays import SOURCES, HolidaySource, HolidaySourceName

Coverage = Literal["statutory", "estimated", "fallback", "none"]
Interval = tuple[time, time]

CN_DEFAULT_ID = "cn-default"
MINUTES_PER_DAY = 24 * 60
# Give up looking for working time after this many consecutive days without any.
SEARCH_HORIZON_DAYS = 3 * 366
# Refuse arithmetic that would run further than this from its start (SLA targets are days, not decades).
MAX_SPAN_DAYS = 10 * 366
MAX_INTERVALS_PER_DAY = 12
MIN_INTERVAL_MINUTES = 15
_CACHE_SIZE = 4096
_SUMS_SIZE = 256
_ONE_MINUTE = timedelta(minutes=1)


class BusinessTimeError(ValueError):
    """Base class of business-time errors (a ``ValueError``: always a bad input)."""


class InvalidCalendarError(BusinessTimeError):
    """The calendar definition is inconsistent."""


class NoWorkingTimeError(BusinessTimeError):
    """No working time within the search horizon, or the result is beyond the supported span."""


# Names ZoneInfo resolves to whatever this host's files say (its local time, a leftover default
# rule, a placeholder, leap-second variants): the same calendar would count differently per host.
_HOST_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_HOST_TREES = ("posix/", "right/")


@cache
def time_zone_names() -> frozenset[str]:
    """The IANA zone names a calendar may use: what this host knows, without its host-dependent names."""
    return frozenset(
        name for name in available_timezones() if name not in _HOST_ZONES and not name.startswith(_HOST_TREES)
    )


def _zone(name: object) -> ZoneInfo:
    if isinstance(name, str) and (name in _HOST_ZONES or name.startswith(_HOST_TREES)):
        raise InvalidCalendarError(
            f"time zone {name!r} depends on the host's configuration; use an IANA name such as Asia/Shanghai"
        )
    if not isinstance(name, str) or name not in time_zone_names():
        raise InvalidCalendarError(f"unknown time zone {name!r}; use an IANA name such as Asia/Shanghai")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise InvalidCalendarError(f"unknown time zone {name!r}") from exc


def _end_minute(end: time) -> int:
    """An interval ending at 00:00 ends at midnight at the end of the day (24:00)."""
    return MINUTES_PER_DAY if end == time(0) else end.hour * 60 + end.minute


def _fmt(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _validate_day(weekday: object, intervals: object) -> tuple[tuple[int, int], ...]:
    if not isinstance(weekday, int) or isinstance(weekday, bool) or not 0 <= weekday <= 6:
        raise InvalidCalendarError(f"weekly_hours key {weekday!r} is not a weekday 0 (Monday) .. 6 (Sunday)")
    if not isinstance(intervals, list | tuple):
        raise InvalidCalendarError(f"weekly_hours[{weekday}] must be a list of (start, end) times")
    if len(intervals) > MAX_INTERVALS_PER_DAY:
        raise InvalidCalendarError(
            f"weekly_hours[{weekday}] has {len(intervals)} intervals; "
            f"a day holds at most {MAX_INTERVALS_PER_DAY}"
        )
    result: list[tuple[int, int]] = []
    for interval in intervals:
        if not (isinstance(interval, list | tuple) and len(interval) == 2):
            raise InvalidCalendarError(f"weekly_hours[{weekday}]: {interval!r} is not a (start, end) pair")
        start, end = interval
        if not isinstance(start, time) or not isinstance(end, time):
            raise InvalidCalendarError(f"weekly_hours[{weekday}]: {interval!r} must hold datetime.time")
        if start.tzinfo is not None or end.tzinfo is not None:
            raise InvalidCalendarError(f"weekly_hours[{weekday}]: times are local, without tzinfo")
        if start.second or start.microsecond or end.second or end.microsecond:
            raise InvalidCalendarError(f"weekly_hours[{weekday}]: times must be whole minutes")
        lo, hi = start.hour * 60 + start.minute, _end_minute(end)
        if lo >= hi:
            raise InvalidCalendarError(
                f"weekly_hours[{weekday}]: interval {_fmt(lo)}–{_fmt(hi)} must start before it ends"
            )
        if hi - lo < MIN_INTERVAL_MINUTES:
            raise InvalidCalendarError(
                f"weekly_hours[{weekday}]: interval {_fmt(lo)}–{_fmt(hi)} lasts {hi - lo} minutes; "
                f"intervals last at least {MIN_INTERVAL_MINUTES} minutes"
            )
        if result:
            prev_lo, prev_hi = result[-1]
            if lo < prev_lo:
                raise InvalidCalendarError(
                    f"weekly_hours[{weekday}]: interval {_fmt(lo)}–{_fmt(hi)} is listed after "
                    f"{_fmt(prev_lo)}–{_fmt(prev_hi)}; list intervals in order"
                )
            if lo < prev_hi:
                raise InvalidCalendarError(
                    f"weekly_hours[{weekday}]: intervals {_fmt(prev_lo)}–{_fmt(prev_hi)} and "
                    f"{_fmt(lo)}–{_fmt(hi)} overlap"
                )
        result.append((lo, hi))
    return tuple(result)


def _as_utc(instant: datetime, name: str = "instant") -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise BusinessTimeError(f"{name} must be timezone-aware, got naive {instant.isoformat()}")
    return instant.astimezone(UTC)


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    return instant.astimezone(zone).utcoffset() or timedelta(0)


def _to_utc(wall: datetime, zone: ZoneInfo, fold: int) -> datetime:
    return wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)


def _transition(lo: datetime, hi: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (lo, hi] whose offset differs from lo's (offsets change on whole seconds)."""
    before = _offset(lo, zone)
    lo_s, hi_s = 0, int((hi - lo).total_seconds())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _offset(lo + timedelta(seconds=mid), zone) == before:
            lo_s = mid
        else:
            hi_s = mid
    return lo + timedelta(seconds=hi_s)


def _single_offset(start: datetime, end: datetime, zone: ZoneInfo) -> timedelta | None:
    """The offset of every reading from ``start`` to ``end`` (local), or None when it changes between."""
    lo = min(_to_utc(start, zone, 0), _to_utc(start, zone, 1))
    hi = max(_to_utc(end, zone, 0), _to_utc(end, zone, 1))
    off_lo = _offset(lo, zone)
    return off_lo if off_lo == _offset(hi, zone) else None


def _wall_to_utc(start: datetime, end: datetime, zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """UTC periods during which the local clock shows [start, end), each reading counted once.

    Assumes at most one offset change within one working interval (true of every real zone).
    """
    lo = min(_to_utc(start, zone, 0), _to_utc(start, zone, 1))
    hi = max(_to_utc(end, zone, 0), _to_utc(end, zone, 1))
    off_lo, off_hi = _offset(lo, zone), _offset(hi, zone)
    if off_lo == off_hi:
        return [((start - off_lo).replace(tzinfo=UTC), (end - off_lo).replace(tzinfo=UTC))]
    change = _transition(lo, hi, zone)
    naive_change = change.replace(tzinfo=None)
    # (first UTC instant, last UTC instant, offset, lowest wall reading not yet shown)
    pieces = [
        (lo, change, off_lo, start),
        # After a fall-back the clock repeats readings already shown before the change: skip them.
        (change, hi, off_hi, naive_change + max(off_lo, off_hi)),
    ]
    result: list[tuple[datetime, datetime]] = []
    for first, last, offset, unseen in pieces:
        wall_lo = max(start, first.replace(tzinfo=None) + offset, unseen)
        wall_hi = min(end, last.replace(tzinfo=None) + offset)
        if wall_lo < wall_hi:
            result.append(((wall_lo - offset).replace(tzinfo=UTC), (wall_hi - offset).replace(tzinfo=UTC)))
    return result


@dataclass(frozen=True)
class BusinessCalendar:
    """A working calendar in one IANA time zone. Immutable; safe to share between tasks.

    ``weekly_hours`` maps weekday (0 = Monday) to ordered, non-overlapping local ``(start, end)``
    intervals in whole minutes; an end of ``time(0)`` means midnight at the end of the day.
    """

    id: str
    time_zone: str
    weekly_hours: dict[int, list[Interval]] = field(hash=False)
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    holiday_source: HolidaySourceName | None = None
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _hours: tuple[tuple[tuple[int, int], ...], ...] = field(init=False, repr=False, compare=False)
    _standard: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    _source: HolidaySource | None = field(init=False, repr=False, compare=False)
    _periods: dict[date, tuple[tuple[datetime, datetime], ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    _sums: dict[timedelta, _Sum] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidCalendarError("calendar id must be a non-empty string")
        zone = _zone(self.time_zone)
        if not isinstance(self.weekly_hours, dict):
            raise InvalidCalendarError("weekly_hours must map weekday (0 = Monday) to intervals")
        validated = {day: _validate_day(day, intervals) for day, intervals in self.weekly_hours.items()}
        hours = tuple(validated.get(day, ()) for day in range(7))
        standard = next((hours[day] for day in (0, 1, 2, 3, 4, 5, 6) if hours[day]), ())
        if not standard:
            raise InvalidCalendarError(f"calendar {self.id!r} has no working intervals on any weekday")
        holidays, workdays = frozenset(self.holidays), frozenset(self.workdays)
        if clash := sorted(holidays & workdays):
            raise InvalidCalendarError(
                f"dates cannot be both holidays and workdays: {', '.join(d.isoformat() for d in clash)}"
            )
        if self.holiday_source is not None and self.holiday_source not in SOURCES:
            raise InvalidCalendarError(f"unknown holiday source {self.holiday_source!r}; known: CN")
        setattr_ = object.__setattr__
        setattr_(self, "weekly_hours", {day: list(intervals) for day, intervals in self.weekly_hours.items()})
        setattr_(self, "holidays", holidays)
        setattr_(self, "workdays", workdays)
        setattr_(self, "_zone", zone)
        setattr_(self, "_hours", hours)
        setattr_(self, "_standard", standard)
        setattr_(self, "_source", SOURCES[self.holiday_source] if self.holiday_source else None)

    # ---- days -------------------------------------------------------------------------------

    @property
    def standard_hours(self) -> tuple[Interval, ...]:
        """Hours of an adjusted working day: the first of Monday–Friday that has intervals."""
        return tuple(_minutes_to_interval(lo, hi) for lo, hi in self._standard)

    @property
    def standard_day(self) -> timedelta:
        """The daily working time: the length of the standard hours."""
        return timedelta(minutes=sum(hi - lo for lo, hi in self._standard))

    @property
    def standard_daily_minutes(self) -> int:
        return sum(hi - lo for lo, hi in self._standard)

    def is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        verdict = self._source.classify(day) if self._source is not None else None
        if verdict == "holiday":
            return False
        return verdict == "workday" or bool(self._hours[day.weekday()])

    def working_hours(self, day: date) -> tuple[Interval, ...]:
        """Local working intervals of ``day`` (empty when it is not a working day)."""
        return tuple(_minutes_to_interval(lo, hi) for lo, hi in self._day_minutes(day))

    def _day_minutes(self, day: date) -> tuple[tuple[int, int], ...]:
        if not self.is_working_day(day):
            return ()
        return self._hours[day.weekday()] or self._standard

    def coverage(self, year: int) -> Coverage:
        """``statutory``: the holiday source has the published schedule of ``year``; ``estimated``:
        not yet, so the days off are the law's own and the schedule's make-up working days are
        unknown; ``fallback``: it has nothing, so only weekly hours and explicit overrides apply;
        ``none``: the calendar has no holiday source."""
        if self._source is None:
            return "none"
        if self._source.classify(date(year, 7, 1)) is None:
            return "fallback"
        return "estimated" if self._source.estimates(year) else "statutory"

    def is_covered(self, day: date) -> bool:
        """Whether the holiday source has statutory data for ``day``."""
        return self._source is not None and self._source.classify(day) is not None

    @property
    def source_years(self) -> tuple[int, int] | None:
        """First and last year the holiday source covers (``None`` without a source)."""
        return self._source.years() if self._source is not None else None

    def working_periods(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """The UTC periods ``[start, end)`` of business time on local date ``day``, in order."""
        cached = self._periods.get(day)
        if cached is None:
            cached = self._compute_periods(day)
            if len(self._periods) >= _CACHE_SIZE:
                self._periods.clear()
            self._periods[day] = cached
        return cached

    def _compute_periods(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        minutes = self._day_minutes(day)
        if not minutes:
            return ()
        midnight = datetime.combine(day, time(0))
        # On all but a couple of days a year one offset holds from the first start to the last end
        # (at most one change a day, as `_wall_to_utc` assumes per interval): then each interval
        # is a plain shift, and the zone is asked once per day instead of four times per interval.
        offset = _single_offset(
            midnight + timedelta(minutes=minutes[0][0]),
            midnight + timedelta(minutes=minutes[-1][1]),
            self._zone,
        )
        pieces: list[tuple[datetime, datetime]]
        if offset is not None:
            base = (midnight - offset).replace(tzinfo=UTC)
            pieces = [(base + timedelta(minutes=lo), base + timedelta(minutes=hi)) for lo, hi in minutes]
        else:
            pieces = [
                piece
                for lo, hi in minutes
                for piece in _wall_to_utc(
                    midnight + timedelta(minutes=lo), midnight + timedelta(minutes=hi), self._zone
                )
            ]
        merged: list[tuple[datetime, datetime]] = []
        for start, end in pieces:
            if merged and merged[-1][1] >= start:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return tuple(merged)

    def _local_date(self, instant: datetime) -> date:
        return instant.astimezone(self._zone).date()

    def _periods_from(self, instant: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Business periods ending after ``instant`` (UTC), in order, guarded against endless search."""
        first = self._local_date(instant) - timedelta(days=1)
        idle = 0
        for offset in range(MAX_SPAN_DAYS):
            try:
                day = first + timedelta(days=offset)
            except OverflowError:
                break
            periods = self.working_periods(day)
            if periods:
                idle = 0
            else:
                idle += 1
                if idle > SEARCH_HORIZON_DAYS:
                    raise NoWorkingTimeError(
                        f"calendar {self.id!r} has no working time for {SEARCH_HORIZON_DAYS} days after {day}"
                    )
            for start, end in periods:
                if end > instant:
                    yield start, end
        raise NoWorkingTimeError(f"result is more than {MAX_SPAN_DAYS} days after {instant.isoformat()}")

    # ---- instants ---------------------------------------------------------------------------

    def is_working_time(self, instant: datetime) -> bool:
        instant = _as_utc(instant)
        return any(start <= instant < end for start, end in self.working_periods(self._local_date(instant)))

    def next_working_start(self, instant: datetime) -> datetime:
        """The earliest business instant at or after ``instant``: itself during working time."""
        instant = _as_utc(instant)
        start, _ = next(self._periods_from(instant))
        return max(start, instant)

    def add_business_time(self, start: datetime, amount: timedelta) -> datetime:
        """The instant at which ``amount`` of business time has elapsed since ``start``.

        Counting begins at the next working start when ``start`` is outside working time; a zero
        amount therefore returns ``next_working_start(start)``. A result that falls exactly at the
        end of a working interval is that end (e.g. 12:00, not 13:30 after lunch).
        """
        start = _as_utc(start, "start")
        if amount < timedelta(0):
            raise BusinessTimeError(f"business time to add must not be negative, got {amount}")
        if amount > timedelta(days=MAX_SPAN_DAYS):
            raise NoWorkingTimeError(f"{amount} of business time is beyond the {MAX_SPAN_DAYS}-day horizon")
        known = self._sums.get(amount)
        if known is not None and (shifted := known.shifted(start)) is not None:
            return shifted
        remaining = amount
        first: tuple[datetime, datetime] | None = None
        for period_start, period_end in self._periods_from(start):
            begin = max(period_start, start)
            if first is None:
                first = (begin, period_end)
            if remaining <= period_end - begin:
                result = begin + remaining
                if len(self._sums) >= _SUMS_SIZE:
                    self._sums.clear()
                self._sums[amount] = _Sum(start, *first, result, period_start, period_end)
                return result
            remaining -= period_end - begin
        raise AssertionError("unreachable: _periods_from never ends without raising")

    def add_business_minutes(self, start: datetime, minutes: int) -> datetime:
        if minutes < 0:
            raise BusinessTimeError(f"business minutes must not be negative, got {minutes}")
        return self.add_business_time(start, timedelta(minutes=minutes))

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """``days`` working days counted as ``days`` × the daily working time (``standard_day``)."""
        if days < 0:
            raise BusinessTimeError(f"working days must not be negative, got {days}")
        return self.add_business_time(start, days * self.standard_day)

    def business_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Business time in ``[a, b)``; negative when ``b`` is before ``a``."""
        a, b = _as_utc(a, "a"), _as_utc(b, "b")
        if b < a:
            return -self.business_time_between(b, a)
        total = timedelta(0)
        day, last = self._local_date(a) - timedelta(days=1), self._local_date(b)
        while day <= last:
            for start, end in self.working_periods(day):
                if end > a and start < b:
                    total += min(end, b) - max(start, a)
            day += timedelta(days=1)
        return total

    def business_minutes_between(self, a: datetime, b: datetime) -> int:
        """Whole business minutes in ``[a, b)`` (truncated toward zero; negative when ``b < a``)."""
        elapsed = self.business_time_between(a, b)
        whole = abs(elapsed) // _ONE_MINUTE
        return whole if elapsed >= timedelta(0) else -whole


class _Sum(NamedTuple):
    """One `add_business_time` worked out, to answer its neighbours by a shift.

    Tickets arrive together, so a calendar is asked for the same amount from starts a few
    milliseconds apart (four times per new ticket). Every start from ``lowest`` (the worked-out
    start; when it lay outside working time, the wait up to ``begin`` counts for nothing) until
    ``first_end`` begins counting at ``max(start, begin)`` inside the same working period, so its
    business time runs in step with the worked-out one, shifted by the difference — and so does
    its result, as long as that stays inside the result's own working period. Otherwise the
    walk through the periods is repeated.
    """

    lowest: datetime
    begin: datetime
    first_end: datetime
    result: datetime
    last_start: datetime
    last_end: datetime

    def shifted(self, start: datetime) -> datetime | None:
        if not self.lowest <= start < self.first_end:
            return None
        result = self.result + (max(start, self.begin) - self.begin)
        # Onto the result period's very start means the previous period's end (where the walk
        # stops), beyond its end the next period's time: both are left to the walk.
        return result if self.last_start < result <= self.last_end else None


def _minutes_to_interval(lo: int, hi: int) -> Interval:
    return time(lo // 60, lo % 60), time((hi // 60) % 24, hi % 60)


def cn_default() -> BusinessCalendar:
    """The seed calendar ``cn-default``: Asia/Shanghai, Mon–Fri 09:00–12:00 and 13:30–18:00, CN holidays."""
    office: list[Interval] = [(time(9, 0), time(12, 0)), (time(13, 30), time(18, 0))]
    return BusinessCalendar(
        id=CN_DEFAULT_ID,
        time_zone="Asia/Shanghai",
        weekly_hours={weekday: list(office) for weekday in range(5)},
        holiday_source="CN",
    )
