"""Slot extraction, table-driven: phrasings as speech-to-text writes them, with a fixed `now`."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from dialog.slots import TimeOfDay, extract, extract_date, extract_time, normalize

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 18, 10, 0, tzinfo=NY)  # a Wednesday
YEAR_END = datetime(2026, 12, 30, 10, 0, tzinfo=NY)  # a Wednesday, two days before New Year


def d(text: str) -> date:
    return date.fromisoformat(text)


DATE_CASES: list[tuple[str, date | None]] = [
    # relative days
    ("today", d("2026-11-18")),
    ("Today.", d("2026-11-18")),
    ("tomorrow", d("2026-11-19")),
    ("Tomorrow, please.", d("2026-11-19")),
    ("the day after tomorrow", d("2026-11-20")),
    ("day after tomorrow", d("2026-11-20")),
    ("yesterday", d("2026-11-17")),  # a date; the dialog rejects it as past
    ("tonight", d("2026-11-18")),
    ("this afternoon", d("2026-11-18")),
    # weekdays: the next one, never today
    ("Monday", d("2026-11-23")),
    ("Tuesday", d("2026-11-24")),
    ("on Wednesday", d("2026-11-25")),
    ("Thursday", d("2026-11-19")),
    ("friday", d("2026-11-20")),
    ("Saturday", d("2026-11-21")),
    ("Sunday", d("2026-11-22")),
    ("Mondays are best", d("2026-11-23")),
    ("this Tuesday", d("2026-11-24")),
    ("this Wednesday", d("2026-11-18")),
    ("this Friday", d("2026-11-20")),
    ("this coming Friday", d("2026-11-20")),
    ("coming Monday", d("2026-11-23")),
    ("Thursday this week", d("2026-11-19")),
    # "next X": X of next calendar week (Sunday-start)
    ("next Monday", d("2026-11-23")),
    ("next Tuesday", d("2026-11-24")),
    ("next Wednesday", d("2026-11-25")),
    ("next Thursday", d("2026-11-26")),
    ("next Friday", d("2026-11-27")),
    ("Next Tuesday at 3.", d("2026-11-24")),
    ("Tuesday next week", d("2026-11-24")),
    ("Friday next week", d("2026-11-27")),
    ("next week on Thursday", d("2026-11-26")),
    ("next week Friday", d("2026-11-27")),
    ("the following Monday", d("2026-11-23")),
    ("Tuesday after next", d("2026-12-01")),
    ("Friday after next", d("2026-11-27")),
    # month and day
    ("the fifth of December", d("2026-12-05")),
    ("the 5th of December", d("2026-12-05")),
    ("December 5th", d("2026-12-05")),
    ("December fifth", d("2026-12-05")),
    ("December the fifth", d("2026-12-05")),
    ("Dec 5", d("2026-12-05")),
    ("Dec. 5th", d("2026-12-05")),
    ("5th December", d("2026-12-05")),
    ("5 December", d("2026-12-05")),
    ("fifth of december", d("2026-12-05")),
    ("December 5th, 2026", d("2026-12-05")),
    ("December 5, 2027", d("2027-12-05")),
    ("December 5th twenty twenty six", d("2026-12-05")),
    ("the twenty-fifth of December", d("2026-12-25")),
    ("December thirty-first", d("2026-12-31")),
    ("the second of January", d("2027-01-02")),
    ("January 2nd", d("2027-01-02")),
    ("Jan 15", d("2027-01-15")),
    ("November 17th", d("2027-11-17")),  # passed yesterday: next year
    ("November 18th", d("2026-11-18")),
    ("November 19", d("2026-11-19")),
    ("March 3rd", d("2027-03-03")),
    ("May 5th", d("2027-05-05")),
    ("the 3rd of May", d("2027-05-03")),
    ("February 28th", d("2027-02-28")),
    ("Feb 29 2028", d("2028-02-29")),
    ("Tuesday, December 8th", d("2026-12-08")),
    ("December 8th, a Tuesday", d("2026-12-08")),
    # numeric (US month/day)
    ("12/5", d("2026-12-05")),
    ("12/05", d("2026-12-05")),
    ("12/05/2026", d("2026-12-05")),
    ("12/5/26", d("2026-12-05")),
    ("12-05-2026", d("2026-12-05")),
    ("2026-12-05", d("2026-12-05")),
    ("1/4", d("2027-01-04")),
    ("11/20", d("2026-11-20")),
    # the Nth
    ("the 5th", d("2026-12-05")),
    ("on the fifth", d("2026-12-05")),
    ("the 20th", d("2026-11-20")),
    ("the eighteenth", d("2026-11-18")),
    ("the 30th", d("2026-11-30")),
    ("the 31st", d("2026-12-31")),  # November has no 31st
    ("the thirty-first", d("2026-12-31")),
    ("the twenty-fifth", d("2026-11-25")),
    ("the first", d("2026-12-01")),
    ("the 1st", d("2026-12-01")),
    ("fifth", d("2026-12-05")),
    ("Tuesday the 8th", d("2026-12-08")),
    ("Friday the 13th", d("2027-08-13")),
    # offsets
    ("in two weeks", d("2026-12-02")),
    ("in 2 weeks", d("2026-12-02")),
    ("in a week", d("2026-11-25")),
    ("in one week", d("2026-11-25")),
    ("in 3 days", d("2026-11-21")),
    ("in three days", d("2026-11-21")),
    ("in a couple of days", d("2026-11-20")),
    ("in a fortnight", d("2026-12-02")),
    ("in 10 days", d("2026-11-28")),
    ("a week from today", d("2026-11-25")),
    ("a week from tomorrow", d("2026-11-26")),
    ("two weeks from today", d("2026-12-02")),
    ("3 days from now", d("2026-11-21")),
    ("a week from Tuesday", d("2026-12-01")),
    ("a week from next Friday", d("2026-12-04")),
    ("a week today", d("2026-11-25")),
    # self-corrections: the last one wins
    ("Tuesday, no, Wednesday", d("2026-11-25")),
    ("not Monday, Thursday", d("2026-11-19")),
    ("tomorrow, I mean the day after tomorrow", d("2026-11-20")),
    # rejected
    ("next week", None),
    ("sometime next week", None),
    ("this week", None),
    ("the weekend", None),
    ("next month", None),
    ("the 32nd", None),
    ("the 0th", None),
    ("13/45", None),
    ("0/12", None),
    ("February 30th", None),
    ("April 31st", None),
    ("February 29th", None),  # 2027 is not a leap year
    ("the second week of December", None),
    ("the first available", None),
    ("I have 2 kids", None),
    ("give me a second", None),
    ("3 pm", None),
    ("at 3", None),
    ("hello", None),
    ("my number is 555 1234", None),
    ("", None),
]

YEAR_END_CASES: list[tuple[str, date | None]] = [
    ("tomorrow", d("2026-12-31")),
    ("the day after tomorrow", d("2027-01-01")),
    ("Friday", d("2027-01-01")),
    ("Tuesday", d("2027-01-05")),
    ("next Tuesday", d("2027-01-05")),
    ("January 5th", d("2027-01-05")),
    ("Jan 2", d("2027-01-02")),
    ("the 2nd", d("2027-01-02")),
    ("the 31st", d("2026-12-31")),
    ("the 30th", d("2026-12-30")),
    ("December 25th", d("2027-12-25")),
    ("12/31", d("2026-12-31")),
    ("1/4", d("2027-01-04")),
    ("12/29/2026", d("2026-12-29")),  # explicit year: taken as said, even when past
    ("in 2 weeks", d("2027-01-13")),
    ("a week from today", d("2027-01-06")),
]


def t(hhmm: str, ambiguous: bool = False) -> TimeOfDay:
    return TimeOfDay.from_hhmm(hhmm, ambiguous)


TIME_CASES: list[tuple[str, TimeOfDay | None]] = [
    ("3 pm", t("15:00")),
    ("3pm", t("15:00")),
    ("3 p.m.", t("15:00")),
    ("3 P.M.", t("15:00")),
    ("3:30 p.m.", t("15:30")),
    ("3:30pm", t("15:30")),
    ("3.30pm", t("15:30")),
    ("three thirty pm", t("15:30")),
    ("three thirty", t("15:30", True)),
    ("3:30", t("15:30", True)),
    ("15:00", t("15:00")),
    ("15:30", t("15:30")),
    ("09:00", t("09:00")),
    ("9:00", t("09:00", True)),
    ("half past two", t("14:30", True)),
    ("half past 2", t("14:30", True)),
    ("quarter past ten", t("10:15", True)),
    ("a quarter past ten", t("10:15", True)),
    ("quarter after 3", t("15:15", True)),
    ("quarter to four", t("15:45", True)),
    ("a quarter to 4", t("15:45", True)),
    ("quarter of four", t("15:45", True)),
    ("twenty past three", t("15:20", True)),
    ("10 past 3", t("15:10", True)),
    ("five to four", t("15:55", True)),
    ("half past two in the afternoon", t("14:30")),
    ("quarter to 4 in the afternoon", t("15:45")),
    ("3:30 in the afternoon", t("15:30")),
    ("three thirty in the afternoon", t("15:30")),
    ("quarter to four pm", t("15:45")),
    ("noon", t("12:00")),
    ("at noon", t("12:00")),
    ("12 noon", t("12:00")),
    ("midday", t("12:00")),
    ("midnight", t("00:00")),
    ("10 in the morning", t("10:00")),
    ("ten in the morning", t("10:00")),
    ("4 in the afternoon", t("16:00")),
    ("four in the afternoon", t("16:00")),
    ("7 in the evening", t("19:00")),
    ("at 3", t("15:00", True)),
    ("at three", t("15:00", True)),
    ("at 9", t("09:00", True)),
    ("at 11", t("11:00", True)),
    ("at 12", t("12:00", True)),
    ("at 1", t("13:00", True)),
    ("around 2", t("14:00", True)),
    ("about 10", t("10:00", True)),
    ("3 o'clock", t("15:00", True)),
    ("three o'clock", t("15:00", True)),
    ("10 o'clock in the morning", t("10:00")),
    ("ten am", t("10:00")),
    ("10am", t("10:00")),
    ("ten a.m.", t("10:00")),
    ("nine-thirty", t("09:30", True)),
    ("nine thirty", t("09:30", True)),
    ("nine thirty am", t("09:30")),
    ("eleven fifteen", t("11:15", True)),
    ("two forty-five", t("14:45", True)),
    ("two forty five pm", t("14:45")),
    ("eleven oh five", t("11:05", True)),
    ("12 am", t("00:00")),
    ("12 pm", t("12:00")),
    ("12:30 pm", t("12:30")),
    ("twelve thirty", t("12:30", True)),
    ("at 2 30", t("14:30", True)),
    ("330 pm", t("15:30")),
    ("1030 am", t("10:30")),
    ("fifteen hundred", t("15:00")),
    ("fifteen hundred hours", t("15:00")),
    ("at 15", t("15:00")),
    ("3ish", t("15:00", True)),
    ("at three ish", t("15:00", True)),
    ("make it 4", t("16:00", True)),
    ("change the time to 5", t("17:00", True)),
    ("no, 4 instead", t("16:00", True)),
    ("change it from 3 to 4", t("16:00", True)),
    ("3", t("15:00", True)),
    ("Three.", t("15:00", True)),
    ("um, four please", t("16:00", True)),
    ("Is 11 available?", t("11:00", True)),
    ("How's 2?", t("14:00", True)),
    ("let's do 3", t("15:00", True)),
    ("How about Thursday at two?", t("14:00", True)),
    ("Can I do 2:30?", t("14:30", True)),
    ("I'd like the 10 o'clock", t("10:00", True)),
    ("on the 24th at three-thirty", t("15:30", True)),
    ("Next Tuesday at 3.", t("15:00", True)),
    ("tomorrow morning at 10", t("10:00")),
    ("tomorrow afternoon at 2", t("14:00")),
    ("this afternoon at 3", t("15:00")),
    ("tonight at 7", t("19:00")),
    ("at 5 this evening", t("17:00")),
    ("December 5th at 3 pm", t("15:00")),
    ("the 5th at 10", t("10:00", True)),
    ("Tuesday at 3 o'clock", t("15:00", True)),
    ("12/5 at 4:30", t("16:30", True)),
    # rejected
    ("25:00", None),
    ("24:30", None),
    ("3:75", None),
    ("13 pm", None),
    ("0 am", None),
    ("at 25", None),
    ("I have 2 kids", None),
    ("I need 2 appointments", None),
    ("for 2 people", None),
    ("in 5 minutes", None),
    ("I'm 35 years old", None),
    ("call me at 555 1234", None),
    ("December 5th", None),
    ("the 5th", None),
    ("12/5", None),
    ("in 2 weeks", None),
    ("thirteen", None),
    ("hello", None),
    ("", None),
    ("morning", None),
    ("in the afternoon", None),
]


@pytest.mark.parametrize(("text", "expected"), DATE_CASES, ids=[c[0] or "<empty>" for c in DATE_CASES])
def test_extract_date(text: str, expected: date | None) -> None:
    assert extract_date(text, NOW) == expected


@pytest.mark.parametrize(("text", "expected"), YEAR_END_CASES, ids=[c[0] for c in YEAR_END_CASES])
def test_extract_date_around_year_end(text: str, expected: date | None) -> None:
    assert extract_date(text, YEAR_END) == expected


@pytest.mark.parametrize(("text", "expected"), TIME_CASES, ids=[c[0] or "<empty>" for c in TIME_CASES])
def test_extract_time(text: str, expected: TimeOfDay | None) -> None:
    assert extract_time(text) == expected


def test_there_are_enough_cases() -> None:
    assert len(DATE_CASES) + len(YEAR_END_CASES) + len(TIME_CASES) >= 150


def test_leap_day_rolls_to_the_next_leap_year() -> None:
    assert extract_date("February 29th", datetime(2027, 12, 30, 9, 0, tzinfo=NY)) == d("2028-02-29")


@pytest.mark.parametrize(("text", "expected"), [
    ("next Tuesday at 3", (d("2026-11-24"), t("15:00", True))),
    ("December 5th at 10 in the morning", (d("2026-12-05"), t("10:00"))),
    ("tomorrow at half past two", (d("2026-11-19"), t("14:30", True))),
    ("the fifth at quarter to four", (d("2026-12-05"), t("15:45", True))),
    ("12/8 3:30 pm", (d("2026-12-08"), t("15:30"))),
    ("Thursday three thirty", (d("2026-11-19"), t("15:30", True))),
    ("on Friday, 2", (d("2026-11-20"), t("14:00", True))),
])
def test_extract_both(text: str, expected: tuple[date, TimeOfDay]) -> None:
    slots = extract(text, NOW)
    assert (slots.date, slots.time) == expected
    assert not (slots.vague_date or slots.invalid_date or slots.invalid_time)


@pytest.mark.parametrize(("text", "flag"), [
    ("next week", "vague_date"),
    ("sometime next week", "vague_date"),
    ("whenever", "vague_date"),
    ("the 32nd", "invalid_date"),
    ("February 30th", "invalid_date"),
    ("13/45", "invalid_date"),
    ("25:00", "invalid_time"),
    ("13 pm", "invalid_time"),
    ("at 3:75", "invalid_time"),
])
def test_flags(text: str, flag: str) -> None:
    slots = extract(text, NOW)
    assert slots.date is None and slots.time is None
    assert getattr(slots, flag)
    assert [f for f in ("vague_date", "invalid_date", "invalid_time") if getattr(slots, f)] == [flag]


def test_a_named_day_is_not_vague() -> None:
    assert not extract("next week on Thursday", NOW).vague_date


@pytest.mark.parametrize(("text", "expected"), [
    ("Three thirty P.M.!", "3 30 pm"),
    ("twenty-fifth", "25th"),
    ("nine-thirty", "9 30"),
    ("3 o\u2019clock", "3 oclock"),
    ("12/05/2026.", "12/05/2026"),
    ("that's - right", "that's right"),
])
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_time_of_day_validates() -> None:
    with pytest.raises(ValueError):
        TimeOfDay(24, 0)
    assert t("15:00").flipped() == t("03:00")
