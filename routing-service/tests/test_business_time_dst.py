"""Business time across daylight-saving changes: wall-clock minutes, exact UTC results.

Definition under test: every minute displayed on the local clock inside a working interval counts
once — the repeated fall-back hour counts once, the skipped spring-forward hour never shows.
"""

from __future__ import annotations

from bisect import bisect_left
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from routing_service.domain.business_time import BusinessCalendar

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
MINUTE = timedelta(minutes=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def office(zone: str) -> BusinessCalendar:
    return BusinessCalendar(
        id=f"office-{zone}", time_zone=zone, weekly_hours={day: [(time(9), time(17))] for day in range(5)}
    )


def every_day(zone: str, *intervals: tuple[time, time]) -> BusinessCalendar:
    return BusinessCalendar(
        id=f"daily-{zone}", time_zone=zone, weekly_hours={day: list(intervals) for day in range(7)}
    )


def test_new_york_office_across_spring_forward() -> None:
    calendar = office("America/New_York")
    start = datetime(2026, 3, 6, 16, tzinfo=NEW_YORK)  # Friday, EST (UTC-5)
    due = calendar.add_business_minutes(start, 120)
    assert due == utc(2026, 3, 9, 14)  # Monday 10:00 EDT (UTC-4); 15:00 UTC would be the EST mistake
    assert due.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 9, 10)
    assert calendar.business_minutes_between(start, due) == 120
    assert calendar.business_minutes_between(utc(2026, 3, 8), utc(2026, 3, 10)) == 480


def test_new_york_office_across_fall_back() -> None:
    calendar = office("America/New_York")
    start = datetime(2026, 10, 30, 16, tzinfo=NEW_YORK)  # Friday, EDT
    due = calendar.add_business_minutes(start, 120)
    assert due == utc(2026, 11, 2, 15)  # Monday 10:00 EST
    assert calendar.business_minutes_between(start, due) == 120


def test_berlin_office_across_both_changes() -> None:
    calendar = office("Europe/Berlin")
    assert calendar.add_business_minutes(datetime(2026, 3, 27, 16, tzinfo=BERLIN), 120) == utc(2026, 3, 30, 8)
    assert calendar.add_business_minutes(datetime(2026, 10, 23, 16, tzinfo=BERLIN), 120) == utc(
        2026, 10, 26, 9
    )
    assert calendar.add_working_days(datetime(2026, 3, 27, 9, tzinfo=BERLIN), 1) == utc(2026, 3, 27, 16)
    assert calendar.add_working_days(datetime(2026, 3, 27, 10, tzinfo=BERLIN), 1) == utc(2026, 3, 30, 8)


def test_night_shift_on_spring_forward_skips_the_missing_hour() -> None:
    calendar = every_day("America/New_York", (time(1), time(4)))
    # 01:00 EST = 06:00Z; 02:00–03:00 never shows; 04:00 EDT = 08:00Z.
    assert calendar.working_periods(date(2026, 3, 8)) == ((utc(2026, 3, 8, 6), utc(2026, 3, 8, 8)),)
    assert calendar.business_minutes_between(utc(2026, 3, 8), utc(2026, 3, 9)) == 120
    assert calendar.business_minutes_between(utc(2026, 3, 7), utc(2026, 3, 8)) == 180
    # 01:30 EST + 60: 30 minutes to the change, then 03:00–03:30 EDT.
    assert calendar.add_business_minutes(utc(2026, 3, 8, 6, 30), 60) == utc(2026, 3, 8, 7, 30)
    # A nonexistent wall time given by the caller resolves as Python does (fold=0: EST), no crash.
    gap = datetime(2026, 3, 8, 2, 30, tzinfo=NEW_YORK)
    assert calendar.add_business_minutes(gap, 0) == utc(2026, 3, 8, 7, 30)


def test_night_shift_on_fall_back_counts_the_repeated_hour_once() -> None:
    calendar = every_day("America/New_York", (time(1), time(4)))
    # 01:00–02:00 EDT = 05:00–06:00Z; the repeat 01:00–02:00 EST = 06:00–07:00Z is not business time;
    # 02:00–04:00 EST = 07:00–09:00Z.
    assert calendar.working_periods(date(2026, 11, 1)) == (
        (utc(2026, 11, 1, 5), utc(2026, 11, 1, 6)),
        (utc(2026, 11, 1, 7), utc(2026, 11, 1, 9)),
    )
    assert calendar.business_minutes_between(utc(2026, 11, 1), utc(2026, 11, 2)) == 180
    assert calendar.is_working_time(utc(2026, 11, 1, 5, 30))
    assert not calendar.is_working_time(utc(2026, 11, 1, 6, 30))
    assert calendar.add_business_minutes(utc(2026, 11, 1, 5, 30), 60) == utc(2026, 11, 1, 7, 30)
    second_pass = datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NEW_YORK)
    # (PEP 495: an inter-zone == with a fold=1 time is always False, so compare in UTC.)
    assert second_pass.astimezone(UTC) == utc(2026, 11, 1, 6, 30)
    assert calendar.next_working_start(second_pass) == utc(2026, 11, 1, 7)
    first_pass = datetime(2026, 11, 1, 1, 30, fold=0, tzinfo=NEW_YORK)
    assert calendar.business_minutes_between(first_pass, second_pass) == 30


def test_round_the_clock_days_have_wall_clock_length() -> None:
    calendar = every_day("America/New_York", (time(0), time(0)))
    assert calendar.business_minutes_between(utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)) == 23 * 60
    assert calendar.business_minutes_between(utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)) == 24 * 60
    assert calendar.business_minutes_between(utc(2026, 7, 1, 4), utc(2026, 7, 2, 4)) == 24 * 60


def _counted_minutes(calendar: BusinessCalendar, first: datetime, last: datetime) -> list[datetime]:
    """Brute force over every UTC minute: the minutes the definition says are business time."""
    zone = ZoneInfo(calendar.time_zone)
    counted = []
    instant = first
    while instant < last:
        local = instant.astimezone(zone)
        repeated = local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()
        minute = local.hour * 60 + local.minute
        if not repeated:
            for start, end in calendar.working_hours(local.date()):
                hi = 24 * 60 if end == time(0) else end.hour * 60 + end.minute
                if start.hour * 60 + start.minute <= minute < hi:
                    counted.append(instant)
                    break
        instant += MINUTE
    return counted


ORACLE_CASES = [
    ("America/New_York", ((time(1), time(4)),), date(2026, 3, 8)),
    ("America/New_York", ((time(1), time(4)),), date(2026, 11, 1)),
    ("America/New_York", ((time(0), time(0)),), date(2026, 11, 1)),
    (
        "America/New_York",
        ((time(0, 30), time(1, 30)), (time(1, 30), time(2, 30)), (time(3, 15), time(5)), (time(23), time(0))),
        date(2026, 3, 8),
    ),
    (
        "America/New_York",
        ((time(0, 30), time(1, 30)), (time(1, 30), time(2, 30)), (time(3, 15), time(5)), (time(23), time(0))),
        date(2026, 11, 1),
    ),
    ("Europe/Berlin", ((time(1, 45), time(3, 30)), (time(9), time(17))), date(2026, 3, 29)),
    ("Europe/Berlin", ((time(1, 45), time(3, 30)), (time(9), time(17))), date(2026, 10, 25)),
    # Half-hour daylight saving.
    ("Australia/Lord_Howe", ((time(0), time(0)),), date(2026, 4, 5)),
    ("Australia/Lord_Howe", ((time(1), time(3)),), date(2026, 10, 4)),
    # Changes at midnight: the day starts at 01:00, or 23:00–24:00 repeats.
    ("America/Santiago", ((time(0), time(2)), (time(22), time(0))), date(2026, 4, 5)),
    ("America/Santiago", ((time(0), time(2)), (time(22), time(0))), date(2026, 9, 6)),
]


@pytest.mark.parametrize(("zone", "intervals", "change_day"), ORACLE_CASES)
def test_matches_minute_by_minute_oracle(
    zone: str, intervals: tuple[tuple[time, time], ...], change_day: date
) -> None:
    calendar = every_day(zone, *intervals)
    tz = ZoneInfo(zone)
    first = datetime.combine(change_day - timedelta(days=2), time(12), tz).astimezone(UTC)
    last = datetime.combine(change_day + timedelta(days=2), time(12), tz).astimezone(UTC)
    assert first.astimezone(tz).utcoffset() != last.astimezone(tz).utcoffset(), "no change in the window"
    counted = _counted_minutes(calendar, first, last)
    assert calendar.business_minutes_between(first, last) == len(counted)
    assert calendar.add_business_minutes(first, 0) == counted[0]
    for k in range(len(counted)):
        assert calendar.add_business_minutes(first, k + 1) == counted[k] + MINUTE, k
    counted_set = set(counted)
    for probe in range(0, int((last - first) / MINUTE), 7):
        instant = first + probe * MINUTE
        assert calendar.is_working_time(instant) == (instant in counted_set), instant
        assert calendar.business_minutes_between(first, instant) == bisect_left(counted, instant), instant


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe"])
def test_add_and_between_agree_across_a_year_of_changes(zone: str) -> None:
    calendar = every_day(zone, (time(1), time(3, 30)), (time(8), time(12)), (time(13), time(0)))
    start = utc(2026, 1, 1, 3, 17)
    while start < utc(2027, 1, 1):
        for minutes in (0, 1, 45, 150, 600, 1439, 3000):
            due = calendar.add_business_minutes(start, minutes)
            assert calendar.business_minutes_between(start, due) == minutes, (start, minutes)
        start += timedelta(hours=61, minutes=13)
