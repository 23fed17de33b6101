"""Built-in statutory holiday sources for business calendars (pure: data comes from installed packages).

A source answers, for one date, whether it is a statutory holiday, a make-up working day (調休) or
an ordinary day — or that it has no data for that date, in which case the calendar falls back to
its weekly hours and explicit overrides.
"""

from __future__ import annotations

import functools
from datetime import date
from typing import Literal, Protocol

import chinese_calendar

HolidaySourceName = Literal["CN"]
SourceDay = Literal["holiday", "workday", "ordinary"]


class HolidaySource(Protocol):
    name: str

    def classify(self, day: date) -> SourceDay | None:
        """What the statutory calendar says about ``day``; ``None`` when it has no data for it."""
        ...

    def years(self) -> tuple[int, int]:
        """First and last year with statutory data."""
        ...


class ChineseStatutoryHolidays:
    """``CN``: statutory holidays and 調休 make-up working days from ``chinesecalendar``."""

    name = "CN"

    def classify(self, day: date) -> SourceDay | None:
        first, last = self.years()
        if not first <= day.year <= last:  # outside the library's data: the caller falls back
            return None
        on_holiday, holiday_name = chinese_calendar.get_holiday_detail(day)
        if holiday_name is None:  # an ordinary weekday or weekend
            return "ordinary"
        return "holiday" if on_holiday else "workday"

    @functools.cache  # noqa: B019 (one instance for the process; the data never changes)
    def years(self) -> tuple[int, int]:
        known: list[date] = [*chinese_calendar.holidays, *chinese_calendar.workdays]
        return min(known).year, max(known).year


SOURCES: dict[str, HolidaySource] = {"CN": ChineseStatutoryHolidays()}
