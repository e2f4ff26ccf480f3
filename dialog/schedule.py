"""The business's calendar: opening hours, the slot grid, and the nearest bookable slot.

Pure functions of `DialogSettings` and the times passed in. The store uses them to search for a
free slot; the dialog uses them to validate what the caller asked for and to speak the hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cached_property
from typing import Collection, Iterator
from zoneinfo import ZoneInfo

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# How far either side of the asked-for time `nearest_slot` looks: two weeks covers a fully
# booked week and a holiday; further than that, asking the caller for another day is better.
SEARCH_DAYS = 14


@dataclass(frozen=True)
class DialogSettings:
    timezone: str = "America/New_York"  # the business's; "tomorrow at 3" is read in it
    open_hour: int = 9
    close_hour: int = 17  # the last slot ends here (starts at 16:30 with 30-minute slots)
    open_weekdays: tuple = (0, 1, 2, 3, 4)  # Monday = 0
    slot_minutes: int = 30  # appointments start on this grid, counted from open_hour
    max_retries: int = 2  # re-asks after a misunderstanding before a polite handoff
    business_name: str = "the clinic"
    transfer_number: str = ""  # E.164; set = hand off by transferring instead of hanging up

    def __post_init__(self) -> None:
        if not (0 <= self.open_hour < self.close_hour <= 24):
            raise ValueError(f"opening hours {self.open_hour}-{self.close_hour} are not a day's range")
        if not (1 <= self.slot_minutes <= (self.close_hour - self.open_hour) * 60):
            raise ValueError(f"slot_minutes={self.slot_minutes} does not fit the opening hours")
        if not self.open_weekdays or any(d not in range(7) for d in self.open_weekdays):
            raise ValueError(f"open_weekdays={self.open_weekdays!r} must be weekday numbers 0-6")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        ZoneInfo(self.timezone)  # raises for an unknown zone

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def slot_start(day: date, at: time, settings: DialogSettings) -> datetime:
    return datetime.combine(day, at, tzinfo=settings.tz)


def is_open_day(day: date, settings: DialogSettings) -> bool:
    return day.weekday() in settings.open_weekdays


def _minutes(start: datetime) -> int:
    return start.hour * 60 + start.minute


def within_hours(start: datetime, settings: DialogSettings) -> bool:
    """An appointment starting at `start` fits in an open day's hours."""
    local = start.astimezone(settings.tz)
    m = _minutes(local)
    return (is_open_day(local.date(), settings) and settings.open_hour * 60 <= m
            and m + settings.slot_minutes <= settings.close_hour * 60)


def on_grid(start: datetime, settings: DialogSettings) -> bool:
    local = start.astimezone(settings.tz)
    return local.second == 0 and (_minutes(local) - settings.open_hour * 60) % settings.slot_minutes == 0


def slots_on(day: date, settings: DialogSettings) -> list[datetime]:
    """Every bookable start on `day` (none on a closed day)."""
    if not is_open_day(day, settings):
        return []
    first = settings.open_hour * 60
    last = settings.close_hour * 60 - settings.slot_minutes
    return [slot_start(day, time(m // 60, m % 60), settings)
            for m in range(first, last + 1, settings.slot_minutes)]


def candidates(start: datetime, settings: DialogSettings, now: datetime | None = None,
               days: int = SEARCH_DAYS) -> Iterator[datetime]:
    """Bookable starts within `days` of `start`, nearest first; on a tie the later one first
    ("3 pm is taken; 3:30 is free" reads better than offering 2:30). Past ones (<= now) skipped."""
    local = start.astimezone(settings.tz)
    pool = [s for offset in range(-days, days + 1)
            for s in slots_on(local.date() + timedelta(days=offset), settings)
            if now is None or s > now]
    pool.sort(key=lambda s: (abs((s - start).total_seconds()), s < start))
    return iter(pool)


def nearest_slot(start: datetime, settings: DialogSettings, taken: Collection[datetime] = (),
                 now: datetime | None = None, days: int = SEARCH_DAYS) -> datetime | None:
    """The bookable start nearest `start` that is not in `taken` (which may be `start` itself)."""
    taken_ts = {int(t.timestamp()) for t in taken}
    for s in candidates(start, settings, now, days):
        if int(s.timestamp()) not in taken_ts:
            return s
    return None


# ---------------------------------------------------------------- speaking it


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def say_date(day: date, today: date | None = None) -> str:
    """'Tuesday, December 8th' (with the year when it is far enough away to be in doubt)."""
    text = f"{WEEKDAY_NAMES[day.weekday()]}, {day.strftime('%B')} {_ordinal(day.day)}"
    if today is not None and (day - today).days > 300:
        text += f", {day.year}"
    return text


def say_time(hour: int, minute: int) -> str:
    """'3 pm', '3:30 pm', 'noon', 'midnight'."""
    if (hour, minute) == (12, 0):
        return "noon"
    if (hour, minute) == (0, 0):
        return "midnight"
    h12 = hour % 12 or 12
    half = "am" if hour < 12 else "pm"
    return f"{h12} {half}" if minute == 0 else f"{h12}:{minute:02d} {half}"


def say_when(start: datetime, today: date | None = None) -> str:
    return f"{say_date(start.date(), today)} at {say_time(start.hour, start.minute)}"


def say_hours(settings: DialogSettings) -> str:
    """'9 am to 5 pm'"""
    return f"{say_time(settings.open_hour % 24, 0)} to {say_time(settings.close_hour % 24, 0)}"


def say_days(settings: DialogSettings) -> str:
    """'Monday to Friday', or a list for a broken week ('Monday, Wednesday and Friday')."""
    days = sorted(set(settings.open_weekdays))
    names = [WEEKDAY_NAMES[d] for d in days]
    if len(days) > 2 and days == list(range(days[0], days[-1] + 1)):
        return f"{names[0]} to {names[-1]}"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
