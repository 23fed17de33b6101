"""Built-in statutory holiday sources for business calendars (pure: data comes from installed packages).

A source answers, for one date, whether it is a statutory holiday, a make-up working day (調休) or
an ordinary day — or that it has no data for that date, in which case the calendar falls back to
its weekly hours and explicit overrides.
"""

from __future__ import annotations

import functools
from datetime import date, timedelta
from typing import Literal, Protocol

import chinese_calendar
from lunar_python import Lunar

HolidaySourceName = Literal["CN"]
SourceDay = Literal["holiday", "workday", "ordinary"]

# Years after the published schedules for which the law's own days are estimated. The lunar
# calendar is exact this far; the law may change before then (it last did for 2025).
ESTIMATE_UNTIL = 2099


class HolidaySource(Protocol):
    name: str

    def classify(self, day: date) -> SourceDay | None:
        """What the statutory calendar says about ``day``; ``None`` when it has no data for it."""
        ...

    def years(self) -> tuple[int, int]:
        """First and last year with the published statutory schedule."""
        ...

    def estimates(self, year: int) -> bool:
        """Whether ``classify`` answers for ``year`` from the law alone, its schedule not yet known."""
        ...


class ChineseStatutoryHolidays:
    """``CN``: statutory holidays and 調休 make-up working days from ``chinesecalendar``.

    The State Council publishes each year's schedule late in the year before, and the library
    follows with a release. Until then the year's days off are estimated from the law (全国年节及
    纪念日放假办法, as amended for 2025): its thirteen days fall on known dates of the solar and
    lunar calendars. What the law does not fix cannot be estimated: the make-up working days and
    the days off that the schedule adds around a holiday, or moves from a weekend. An estimated
    year therefore has fewer days off than its schedule will; a calendar's own holidays and
    workdays (the schedule, once published) override the estimate day by day.
    """

    name = "CN"

    def classify(self, day: date) -> SourceDay | None:
        first, last = self.years()
        if first <= day.year <= last:
            on_holiday, holiday_name = chinese_calendar.get_holiday_detail(day)
            if holiday_name is None:  # an ordinary weekday or weekend
                return "ordinary"
            return "holiday" if on_holiday else "workday"
        if not self.estimates(day.year):  # before the library's data, or too far ahead: the caller falls back
            return None
        return "holiday" if day in statutory_days_off(day.year) else "ordinary"

    def estimates(self, year: int) -> bool:
        return self.years()[1] < year <= ESTIMATE_UNTIL

    @functools.cache  # noqa: B019 (one instance for the process; the data never changes)
    def years(self) -> tuple[int, int]:
        known: list[date] = [*chinese_calendar.holidays, *chinese_calendar.workdays]
        return min(known).year, max(known).year


@functools.lru_cache(maxsize=16)
def statutory_days_off(year: int) -> frozenset[date]:
    """The days the law itself gives off in ``year`` (since 2025): New Year's Day; the Spring
    Festival's eve and first three days; Qingming; 1–2 May; the Dragon Boat Festival; the
    Mid-Autumn Festival; 1–3 October."""
    new_year = Lunar.fromYmd(year, 1, 1).getSolar()
    spring = date(new_year.getYear(), new_year.getMonth(), new_year.getDay())
    qingming = Lunar.fromYmd(year, 1, 1).getJieQiTable()["清明"]
    lunar_days = [Lunar.fromYmd(year, month, day).getSolar() for month, day in ((5, 5), (8, 15))]
    return frozenset(
        {
            date(year, 1, 1),
            *(spring + timedelta(days=offset) for offset in (-1, 0, 1, 2)),
            date(qingming.getYear(), qingming.getMonth(), qingming.getDay()),
            date(year, 5, 1),
            date(year, 5, 2),
            *(date(d.getYear(), d.getMonth(), d.getDay()) for d in lunar_days),
            date(year, 10, 1),
            date(year, 10, 2),
            date(year, 10, 3),
        }
    )


SOURCES: dict[str, HolidaySource] = {"CN": ChineseStatutoryHolidays()}
