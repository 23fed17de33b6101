"""Business-time arithmetic on Chinese calendars: weekends, lunch, statutory holidays, make-up days."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest

from routing_service.domain.business_time import (
    BusinessCalendar,
    BusinessTimeError,
    InvalidCalendarError,
    NoWorkingTimeError,
    cn_default,
)
from routing_service.domain.holidays import ESTIMATE_UNTIL

SHANGHAI = ZoneInfo("Asia/Shanghai")
OFFICE = [(time(9), time(12)), (time(13, 30), time(18))]


def sh(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


@pytest.fixture
def cn() -> BusinessCalendar:
    return cn_default()


def test_seed_calendar_definition(cn: BusinessCalendar) -> None:
    assert cn.id == "cn-default"
    assert cn.time_zone == "Asia/Shanghai"
    assert cn.holiday_source == "CN"
    assert {day: cn.weekly_hours.get(day, []) for day in range(7)} == {
        **{day: OFFICE for day in range(5)},
        5: [],
        6: [],
    }
    assert cn.standard_hours == tuple(OFFICE)
    assert cn.standard_daily_minutes == 450
    assert cn.standard_day == timedelta(hours=7, minutes=30)


def test_results_are_utc(cn: BusinessCalendar) -> None:
    due = cn.add_business_minutes(sh(2026, 3, 10, 10), 30)
    assert due.tzinfo is UTC
    assert due == datetime(2026, 3, 10, 2, 30, tzinfo=UTC)


def test_weekend_is_skipped(cn: BusinessCalendar) -> None:
    # Friday 17:00 + 120: one hour on Friday, the second on Monday morning.
    assert cn.add_business_minutes(sh(2026, 3, 6, 17), 120) == sh(2026, 3, 9, 10)
    assert cn.business_minutes_between(sh(2026, 3, 6, 17), sh(2026, 3, 9, 10)) == 120
    assert not cn.is_working_day(date(2026, 3, 7))
    assert cn.working_hours(date(2026, 3, 8)) == ()


def test_lunch_break_is_not_business_time(cn: BusinessCalendar) -> None:
    assert cn.add_business_minutes(sh(2026, 3, 10, 11, 30), 60) == sh(2026, 3, 10, 14)
    # A result exactly at the end of the morning is noon, not 13:30.
    assert cn.add_business_minutes(sh(2026, 3, 10, 11), 60) == sh(2026, 3, 10, 12)
    assert cn.add_business_minutes(sh(2026, 3, 10, 11), 61) == sh(2026, 3, 10, 13, 31)
    assert cn.business_minutes_between(sh(2026, 3, 10, 11), sh(2026, 3, 10, 14)) == 90
    assert cn.is_working_time(sh(2026, 3, 10, 11, 59))
    assert not cn.is_working_time(sh(2026, 3, 10, 12))
    assert not cn.is_working_time(sh(2026, 3, 10, 13, 29))
    assert cn.is_working_time(sh(2026, 3, 10, 13, 30))
    assert not cn.is_working_time(sh(2026, 3, 10, 18))


@pytest.mark.parametrize(
    ("start", "minutes", "due"),
    [
        (sh(2026, 3, 10, 8), 30, sh(2026, 3, 10, 9, 30)),  # before opening
        (sh(2026, 3, 10, 12, 30), 30, sh(2026, 3, 10, 14)),  # during lunch
        (sh(2026, 3, 10, 19), 30, sh(2026, 3, 11, 9, 30)),  # after closing
        (sh(2026, 3, 7, 10), 0, sh(2026, 3, 9, 9)),  # Saturday, zero minutes: next working start
        (sh(2026, 3, 10, 12), 0, sh(2026, 3, 10, 13, 30)),  # the end of an interval is outside it
        (sh(2026, 3, 10, 10, 17), 0, sh(2026, 3, 10, 10, 17)),  # inside: the start itself
    ],
)
def test_start_outside_working_time(
    cn: BusinessCalendar, start: datetime, minutes: int, due: datetime
) -> None:
    assert cn.add_business_minutes(start, minutes) == due


def test_next_working_start(cn: BusinessCalendar) -> None:
    assert cn.next_working_start(sh(2026, 3, 6, 18)) == sh(2026, 3, 9, 9)
    assert cn.next_working_start(sh(2026, 3, 10, 12, 5)) == sh(2026, 3, 10, 13, 30)
    assert cn.next_working_start(sh(2026, 3, 10, 9, 1)) == sh(2026, 3, 10, 9, 1)
    assert cn.next_working_start(sh(2026, 9, 30, 18)) == sh(2026, 10, 8, 9)


def test_national_day_2026_issue_example(cn: BusinessCalendar) -> None:
    # 2 h on 30 September, then 1–7 October are holidays, then 2 h on 8 October.
    due = cn.add_business_minutes(sh(2026, 9, 30, 16), 240)
    assert due == sh(2026, 10, 8, 11)
    assert due.astimezone(SHANGHAI).replace(tzinfo=None) == datetime(2026, 10, 8, 11)
    assert cn.business_minutes_between(sh(2026, 9, 30, 16), due) == 240


def test_chinesecalendar_data_for_october_2026_is_what_the_tests_assume() -> None:
    october = [date(2026, 10, day) for day in range(1, 12)]
    assert [d for d in october if d in chinese_calendar.holidays] == [date(2026, 10, d) for d in range(1, 8)]
    assert sorted(d for d in chinese_calendar.workdays if d.year == 2026) == [
        date(2026, 1, 4),  # Sunday
        date(2026, 2, 14),
        date(2026, 2, 28),
        date(2026, 5, 9),
        date(2026, 9, 20),  # Sunday
        date(2026, 10, 10),  # Saturday
    ]


def test_national_day_adjusted_saturday_uses_standard_hours(cn: BusinessCalendar) -> None:
    saturday = date(2026, 10, 10)
    assert saturday.weekday() == 5
    assert cn.is_working_day(saturday)
    assert cn.working_hours(saturday) == tuple(OFFICE)
    assert not cn.is_working_day(date(2026, 10, 11))  # the Sunday after stays off
    assert cn.business_minutes_between(sh(2026, 10, 10), sh(2026, 10, 11)) == 450
    # Friday 17:00 + 600: 60 on Friday, 450 on the make-up Saturday, 90 on Monday.
    assert cn.add_business_minutes(sh(2026, 10, 9, 17), 600) == sh(2026, 10, 12, 10, 30)
    assert cn.add_business_minutes(sh(2026, 10, 10, 11, 30), 60) == sh(2026, 10, 10, 14)
    # The whole golden week: 30 Sep, 8, 9 and 10 Oct are the only working days.
    assert cn.business_minutes_between(sh(2026, 9, 30), sh(2026, 10, 11)) == 4 * 450


def test_make_up_sunday_counts_with_standard_hours(cn: BusinessCalendar) -> None:
    sunday = date(2026, 9, 20)
    assert sunday.weekday() == 6
    assert cn.working_hours(sunday) == tuple(OFFICE)
    assert cn.add_business_minutes(sh(2026, 9, 19, 12), 60) == sh(2026, 9, 20, 10)


def test_mid_autumn_2026(cn: BusinessCalendar) -> None:
    # Friday 25 September is the festival; the weekend follows.
    assert cn.add_business_minutes(sh(2026, 9, 24, 17), 120) == sh(2026, 9, 28, 10)


def test_spring_festival_2026(cn: BusinessCalendar) -> None:
    # Saturday 14 February is a make-up working day, 15–23 February are the holiday.
    assert cn.add_business_minutes(sh(2026, 2, 13, 17), 120) == sh(2026, 2, 14, 10)
    assert cn.add_business_minutes(sh(2026, 2, 14, 17, 30), 60) == sh(2026, 2, 24, 9, 30)
    assert cn.business_minutes_between(sh(2026, 2, 14), sh(2026, 2, 24)) == 450
    assert all(not cn.is_working_day(date(2026, 2, day)) for day in range(15, 24))
    assert cn.working_hours(date(2026, 2, 28)) == tuple(OFFICE)  # the second make-up Saturday


def test_a_year_past_the_published_schedules_is_estimated_from_the_law(cn: BusinessCalendar) -> None:
    assert cn.source_years == (2004, 2026)
    assert cn.coverage(2026) == "statutory"
    assert cn.coverage(2031) == "estimated"
    assert cn.is_covered(date(2026, 10, 1))
    assert cn.is_covered(date(2031, 10, 1))
    # 1–3 October 2031 (Wednesday to Friday) are the law's days off; the weekend follows …
    assert date(2031, 10, 1).weekday() == 2
    assert cn.add_business_minutes(sh(2031, 9, 30, 16), 240) == sh(2031, 10, 6, 11)
    # … but the schedule's make-up days and extra days off are not known: the published schedule
    # goes in as the calendar's own overrides, which win day by day.
    golden_week = frozenset(date(2031, 10, day) for day in range(1, 8))
    overridden = dataclasses.replace(cn, holidays=golden_week, workdays=frozenset({date(2031, 10, 11)}))
    assert overridden.coverage(2031) == "estimated"
    assert overridden.add_business_minutes(sh(2031, 9, 30, 16), 240) == sh(2031, 10, 8, 11)
    assert overridden.working_hours(date(2031, 10, 11)) == tuple(OFFICE)


def test_a_year_beyond_the_estimates_falls_back_to_the_weekly_hours(cn: BusinessCalendar) -> None:
    year = ESTIMATE_UNTIL + 1
    assert cn.coverage(year) == "fallback"
    assert not cn.is_covered(date(year, 10, 1))
    # Without holiday data 1 October (a Friday in 2100) is an ordinary working day …
    assert date(year, 10, 1).weekday() == 4
    assert cn.add_business_minutes(sh(year, 9, 30, 16), 240) == sh(year, 10, 1, 11)
    # … weekends still are weekends …
    assert cn.add_business_minutes(sh(year, 10, 1, 17), 120) == sh(year, 10, 4, 10)
    # … and explicit overrides still apply.
    overridden = dataclasses.replace(cn, holidays=frozenset({date(year, 10, 1)}))
    assert overridden.coverage(year) == "fallback"
    assert overridden.add_business_minutes(sh(year, 9, 30, 16), 240) == sh(year, 10, 4, 11)


def test_custom_calendar_with_holiday_list() -> None:
    calendar = BusinessCalendar(
        id="tokyo-office",
        time_zone="Asia/Tokyo",
        weekly_hours={day: [(time(10), time(16))] for day in range(5)},
        holidays=frozenset({date(2026, 5, 4), date(2026, 5, 5), date(2026, 5, 6)}),
        workdays=frozenset({date(2026, 5, 9)}),
    )
    tokyo = ZoneInfo("Asia/Tokyo")
    assert calendar.coverage(2026) == "none"
    assert not calendar.is_covered(date(2026, 5, 4))
    assert calendar.source_years is None
    # No CN source: 1 May (Labour Day in China) is an ordinary Friday here.
    assert calendar.is_working_day(date(2026, 5, 1))
    start = datetime(2026, 5, 1, 15, tzinfo=tokyo)
    assert calendar.add_business_minutes(start, 120) == datetime(2026, 5, 7, 11, tzinfo=tokyo)
    assert calendar.working_hours(date(2026, 5, 9)) == ((time(10), time(16)),)
    assert calendar.add_business_minutes(datetime(2026, 5, 8, 15, tzinfo=tokyo), 120) == datetime(
        2026, 5, 9, 11, tzinfo=tokyo
    )


def test_explicit_overrides_win_over_statutory_days(cn: BusinessCalendar) -> None:
    calendar = dataclasses.replace(
        cn, holidays=frozenset({date(2026, 10, 10)}), workdays=frozenset({date(2026, 10, 5)})
    )
    assert not calendar.is_working_day(date(2026, 10, 10))  # make-up Saturday cancelled
    assert calendar.working_hours(date(2026, 10, 5)) == tuple(OFFICE)  # a statutory Monday worked
    assert calendar.add_business_minutes(sh(2026, 9, 30, 16), 240) == sh(2026, 10, 5, 11)


def test_standard_hours_are_the_first_working_weekday() -> None:
    calendar = BusinessCalendar(
        id="tue-sat",
        time_zone="UTC",
        weekly_hours={
            1: [(time(8), time(16))],
            2: [(time(9), time(17))],
            5: [(time(10), time(12))],
        },
        workdays=frozenset({date(2026, 3, 8)}),  # a Sunday
    )
    assert calendar.standard_hours == ((time(8), time(16)),)
    assert calendar.standard_daily_minutes == 480
    assert calendar.working_hours(date(2026, 3, 8)) == ((time(8), time(16)),)
    # A weekday with hours of its own keeps them.
    assert calendar.working_hours(date(2026, 3, 7)) == ((time(10), time(12)),)
    weekend_only = BusinessCalendar(id="weekend", time_zone="UTC", weekly_hours={6: [(time(10), time(14))]})
    assert weekend_only.standard_hours == ((time(10), time(14)),)


def test_add_working_days(cn: BusinessCalendar) -> None:
    start = sh(2026, 9, 30, 16)
    assert cn.add_working_days(start, 0) == start
    # 450 minutes: 120 on 30 Sep, then 180 + 150 on 8 Oct.
    assert cn.add_working_days(start, 1) == sh(2026, 10, 8, 16)
    # 1350 minutes: 120 + 450 (8 Oct) + 450 (9 Oct) + 330 on the make-up Saturday.
    assert cn.add_working_days(start, 3) == sh(2026, 10, 10, 16)
    assert cn.add_working_days(sh(2026, 10, 3, 10), 0) == sh(2026, 10, 8, 9)
    assert cn.add_working_days(start, 2) == cn.add_business_minutes(start, 900)
    with pytest.raises(BusinessTimeError, match="negative"):
        cn.add_working_days(start, -1)


def test_ten_working_days_iterate_per_day(cn: BusinessCalendar, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[date] = []
    original = chinese_calendar.get_holiday_detail

    def counting(day: date) -> tuple[bool, str | None]:
        calls.append(day)
        result: tuple[bool, str | None] = original(day)
        return result

    monkeypatch.setattr(chinese_calendar, "get_holiday_detail", counting)
    # 4500 minutes: 120 on 30 Sep, 9 full days (8–10, 12–16, 19 Oct), then 330 on 20 Oct.
    assert cn.add_working_days(sh(2026, 9, 30, 16), 10) == sh(2026, 10, 20, 16)
    # One look-up per calendar day from 29 Sep to 20 Oct, not one per minute.
    assert len(calls) == len(set(calls)) == 22


def test_business_minutes_between_is_consistent_with_add(cn: BusinessCalendar) -> None:
    start, stop = sh(2026, 9, 28), sh(2026, 10, 14)
    checked = 0
    while start < stop:
        for minutes in (0, 1, 29, 30, 60, 181, 450, 451, 1000, 2500):
            due = cn.add_business_minutes(start, minutes)
            assert cn.business_minutes_between(start, due) == minutes, (start, minutes)
            if minutes:
                assert cn.is_working_time(due - timedelta(microseconds=1))
                assert cn.business_minutes_between(start, due - timedelta(seconds=1)) == minutes - 1
                # Adding in two steps lands on the same instant.
                assert cn.add_business_minutes(cn.add_business_minutes(start, 1), minutes - 1) == due
            checked += 1
        if cn.is_working_time(start):
            assert (
                cn.add_business_minutes(
                    sh(2026, 9, 25, 8), cn.business_minutes_between(sh(2026, 9, 25, 8), start)
                )
                == start
            )
        start += timedelta(minutes=53)
    assert checked > 4000


def test_between_is_antisymmetric_and_accepts_any_zone(cn: BusinessCalendar) -> None:
    a, b = sh(2026, 3, 6, 17), sh(2026, 3, 9, 10)
    assert cn.business_minutes_between(b, a) == -120
    assert cn.business_minutes_between(a, a) == 0
    assert cn.business_minutes_between(a.astimezone(UTC), b.astimezone(ZoneInfo("Europe/Paris"))) == 120
    # Seconds are kept: 90.5 business minutes truncate to 90.
    assert cn.business_time_between(sh(2026, 3, 10, 10), sh(2026, 3, 10, 11, 30) + timedelta(seconds=30)) == (
        timedelta(minutes=90, seconds=30)
    )
    assert (
        cn.business_minutes_between(
            sh(2026, 3, 10, 10),
            sh(
                2026,
                3,
                10,
                11,
                30,
            )
            + timedelta(seconds=30),
        )
        == 90
    )


def test_bad_arguments_are_rejected(cn: BusinessCalendar) -> None:
    with pytest.raises(BusinessTimeError, match="negative"):
        cn.add_business_minutes(sh(2026, 3, 10, 10), -1)
    with pytest.raises(BusinessTimeError, match="timezone-aware"):
        cn.add_business_minutes(datetime(2026, 3, 10, 10), 10)
    with pytest.raises(BusinessTimeError, match="timezone-aware"):
        cn.is_working_time(datetime(2026, 3, 10, 10))
    assert issubclass(BusinessTimeError, ValueError)


def test_search_horizon_stops_endless_loops() -> None:
    closed = BusinessCalendar(
        id="closed",
        time_zone="UTC",
        weekly_hours={0: [(time(9), time(17))]},
        holidays=frozenset(date(2026, 1, 5) + timedelta(weeks=week) for week in range(4 * 53)),
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(NoWorkingTimeError, match="no working time"):
        closed.add_business_minutes(start, 1)
    with pytest.raises(NoWorkingTimeError):
        closed.next_working_start(start)
    assert closed.business_minutes_between(start, start + timedelta(days=365)) == 0


def test_absurd_amounts_are_refused(cn: BusinessCalendar) -> None:
    with pytest.raises(NoWorkingTimeError, match="horizon"):
        cn.add_business_minutes(sh(2026, 3, 10, 10), 10**8)
    # About 18 years of office hours: refused once the search passes ten years.
    with pytest.raises(NoWorkingTimeError, match="days after"):
        cn.add_business_minutes(sh(2026, 3, 10, 10), 2 * 10**6)
    assert cn.add_business_minutes(sh(2026, 3, 10, 10), 10**5) > sh(2027, 1, 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"weekly_hours": {0: [(time(12), time(9))]}}, "must start before it ends"),
        ({"weekly_hours": {0: [(time(9), time(9))]}}, "must start before it ends"),
        ({"weekly_hours": {0: [(time(9), time(12)), (time(11), time(14))]}}, "overlap"),
        ({"weekly_hours": {0: [(time(13), time(18)), (time(9), time(12))]}}, "in order"),
        ({"weekly_hours": {7: [(time(9), time(12))]}}, "not a weekday"),
        ({"weekly_hours": {0: [(time(9, 0, 30), time(12))]}}, "whole minutes"),
        ({"weekly_hours": {0: [(time(9, tzinfo=UTC), time(12))]}}, "without tzinfo"),
        ({"weekly_hours": {0: [(time(9),)]}}, "pair"),
        ({"weekly_hours": {0: [], 6: []}}, "no working intervals"),
        ({"weekly_hours": {}}, "no working intervals"),
        ({"time_zone": "Mars/Olympus_Mons"}, "unknown time zone"),
        ({"time_zone": "../etc/passwd"}, "unknown time zone"),
        ({"holiday_source": "XX"}, "unknown holiday source"),
        ({"id": ""}, "non-empty"),
        (
            {"holidays": frozenset({date(2026, 5, 9)}), "workdays": frozenset({date(2026, 5, 9)})},
            "both holidays and workdays: 2026-05-09",
        ),
    ],
)
def test_invalid_calendars_are_rejected(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidCalendarError, match=message):
        dataclasses.replace(cn_default(), **changes)  # type: ignore[arg-type]


def test_adjacent_intervals_and_midnight_end_are_valid() -> None:
    calendar = BusinessCalendar(
        id="round-the-clock",
        time_zone="Asia/Shanghai",
        weekly_hours={day: [(time(0), time(12)), (time(12), time(0))] for day in range(7)},
    )
    assert calendar.business_minutes_between(sh(2026, 10, 1), sh(2026, 10, 8)) == 7 * 1440
    assert calendar.working_hours(date(2026, 10, 1)) == ((time(0), time(12)), (time(12), time(0)))
    assert calendar.working_periods(date(2026, 10, 1)) == (
        (datetime(2026, 9, 30, 16, tzinfo=UTC), datetime(2026, 10, 1, 16, tzinfo=UTC)),
    )


def test_calendar_is_immutable_and_hashable(cn: BusinessCalendar) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        cn.time_zone = "UTC"  # type: ignore[misc]
    assert hash(cn) == hash(cn_default())
    assert cn == cn_default()
    hours = {0: [(time(9), time(17))]}
    calendar = BusinessCalendar(id="x", time_zone="UTC", weekly_hours=hours)
    hours[0].append((time(18), time(19)))  # mutating the caller's dict does not change the calendar
    assert calendar.working_hours(date(2026, 3, 9)) == ((time(9), time(17)),)


NIGHTS = [(time(0), time(2, 30))]


def _walked(calendar: BusinessCalendar, start: datetime, amount: timedelta) -> datetime:
    """`add_business_time` worked out from scratch (nothing remembered from earlier sums)."""
    calendar._sums.clear()
    return calendar.add_business_time(start, amount)


@pytest.mark.parametrize(
    "calendar",
    [
        cn_default(),
        # Across New York's daylight-saving changes, and a night shift past midnight (split periods).
        BusinessCalendar(
            id="ny", time_zone="America/New_York", weekly_hours={d: [(time(9), time(17))] for d in range(5)}
        ),
        BusinessCalendar(id="night", time_zone="Europe/Berlin", weekly_hours={d: NIGHTS for d in range(7)}),
    ],
    ids=["cn-default", "new-york", "berlin-nights"],
)
def test_sums_from_neighbouring_starts_equal_the_walk(calendar: BusinessCalendar) -> None:
    """Starts a few milliseconds to hours apart (tickets arriving together) are answered from the
    sum remembered for a neighbour: always what walking through the periods gives."""
    rng = random.Random(20261123)
    reference = dataclasses.replace(calendar)  # its own memory, cleared before every sum
    standard = calendar.standard_day
    amounts = [timedelta(0), timedelta(minutes=1), timedelta(minutes=192), timedelta(minutes=240)]
    amounts += [3 * standard, 5 * standard, timedelta(hours=3, minutes=17, seconds=5)]
    checked = 0
    for _ in range(120):
        instant = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(2 * 366 * 24 * 60))
        for _ in range(12):
            instant += timedelta(milliseconds=rng.choice([1, 7, 250, 60_000, 1_800_000, 7_200_000]))
            for amount in amounts:
                assert calendar.add_business_time(instant, amount) == _walked(reference, instant, amount), (
                    instant,
                    amount,
                )
                checked += 1
    assert checked == 120 * 12 * len(amounts)


def test_a_burst_of_starts_is_summed_without_walking_again(
    cn: BusinessCalendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    walks: list[datetime] = []
    walk = BusinessCalendar._periods_from

    def counting(self: BusinessCalendar, instant: datetime) -> Iterator[tuple[datetime, datetime]]:
        walks.append(instant)
        return walk(self, instant)

    monkeypatch.setattr(BusinessCalendar, "_periods_from", counting)
    first = sh(2026, 11, 23, 10)
    due = [cn.add_business_time(first + timedelta(milliseconds=i), timedelta(minutes=240)) for i in range(50)]
    assert due == [sh(2026, 11, 23, 15, 30) + timedelta(milliseconds=i) for i in range(50)]
    assert walks == [first.astimezone(UTC)]
    # Overnight (before the office opens) every start counts from 09:00: the same due time.
    early = [sh(2026, 11, 24, 3) + timedelta(minutes=i) for i in range(9)]
    night = [cn.add_business_time(start, timedelta(minutes=240)) for start in early]
    assert night == [sh(2026, 11, 24, 14, 30)] * 9
    assert len(walks) == 2
