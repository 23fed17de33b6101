"""China's days off in the years after the published schedules: estimated from the law.

The State Council publishes a year's schedule late in the year before, and ``chinesecalendar``
follows with a release; until then a calendar would count Spring Festival as working time, and
every SLA clock across it would breach. The law's own thirteen days fall on known dates.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest

from routing_service.domain.business_time import cn_default
from routing_service.domain.holidays import ESTIMATE_UNTIL, SOURCES, statutory_days_off

CN = SOURCES["CN"]
SHANGHAI = ZoneInfo("Asia/Shanghai")
FIRST_PUBLISHED, LAST_PUBLISHED = CN.years()


def sh(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=SHANGHAI)


@pytest.mark.parametrize("year", range(2025, LAST_PUBLISHED + 1))
def test_the_estimate_is_a_day_off_in_every_published_schedule_under_the_current_law(year: int) -> None:
    # The law as amended for 2025 (the eve of Spring Festival and 2 May became days off).
    days = statutory_days_off(year)
    assert len(days) == 13
    assert [d for d in sorted(days) if not chinese_calendar.is_holiday(d)] == []


def test_published_years_still_come_from_the_schedule() -> None:
    # 4 January 2026 is a Sunday the schedule made a working day: no estimate knows that.
    assert CN.classify(date(2026, 1, 4)) == "workday"
    assert not CN.estimates(LAST_PUBLISHED)


def test_the_first_year_past_the_schedules_is_estimated() -> None:
    assert LAST_PUBLISHED == 2026, "chinesecalendar now has 2027: move these cases to the first year past it"
    assert CN.estimates(2027)
    days_off = {
        date(2027, 1, 1),  # New Year's Day, a Friday
        date(2027, 2, 5),  # the eve of Spring Festival (lunar 12/30)
        date(2027, 2, 6),  # lunar 1/1 …
        date(2027, 2, 7),
        date(2027, 2, 8),  # … to 1/3
        date(2027, 4, 5),  # Qingming, the solar term
        date(2027, 5, 1),
        date(2027, 5, 2),
        date(2027, 6, 9),  # Dragon Boat (lunar 5/5)
        date(2027, 9, 15),  # Mid-Autumn (lunar 8/15)
        date(2027, 10, 1),
        date(2027, 10, 2),
        date(2027, 10, 3),
    }
    assert statutory_days_off(2027) == days_off
    assert all(CN.classify(day) == "holiday" for day in days_off)
    assert CN.classify(date(2027, 1, 4)) == "ordinary"  # a Monday
    assert CN.classify(date(2027, 2, 13)) == "ordinary"  # a Saturday: no make-up day is guessed


def test_outside_the_estimated_years_the_source_has_no_answer() -> None:
    assert CN.classify(date(FIRST_PUBLISHED - 1, 10, 1)) is None
    assert CN.classify(date(ESTIMATE_UNTIL + 1, 10, 1)) is None
    assert CN.classify(date(ESTIMATE_UNTIL, 10, 1)) == "holiday"


def test_an_sla_across_new_year_2027_skips_the_holiday() -> None:
    # Thursday 31 December 17:00 + 2 business hours: Friday 1 January is New Year's Day.
    cn = cn_default()
    assert cn.add_business_minutes(sh(2026, 12, 31, 17), 120) == sh(2027, 1, 4, 10)


def test_an_sla_across_spring_festival_2027_skips_it() -> None:
    # Thursday 4 February 17:00 + 2 business hours: the eve (Friday) to the third day (Monday)
    # are off; Tuesday 9 February 10:00.
    cn = cn_default()
    assert cn.add_business_minutes(sh(2027, 2, 4, 17), 120) == sh(2027, 2, 9, 10)
    assert cn.add_working_days(sh(2027, 2, 4, 17), 1) == sh(2027, 2, 9, 17)
